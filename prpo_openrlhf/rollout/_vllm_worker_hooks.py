"""Worker-side hooks of the entropy plugin: compute H_t where vLLM 0.29.0 samples token t.

Two model runners, one computation (:func:`prpo_openrlhf.rollout.entropy.token_entropy`):

V1 runner (``vllm/v1/worker/gpu_model_runner.py``; the CPU runner subclasses it):
- ``InputBatch.add_request`` / ``remove_request`` keep the set of opted-in request ids.
- ``GPUModelRunner._sample`` marks the opted-in rows for this step; ``Sampler.sample``
  (``vllm/v1/sample/sampler.py``) computes their entropy on entry, i.e. from the logits after
  allowed-token / bad-words / min-tokens / logit-bias masks, penalties and non-argmax-invariant
  logits processors, divided by the request's temperature, before min-p / top-k / top-p.
- ``GPUModelRunner.sample_tokens`` / ``AsyncGPUModelRunnerOutput.get_output`` put the values
  on the ``ModelRunnerOutput`` as ``prpo_token_entropies = {req_id: [H]}``.

V2 runner (``vllm/v1/worker/gpu/``; the default on CUDA; NOT executed in this project's CPU
tests, see docs/entropy.md):
- ``gpu.sample.sampler.Sampler.add_request`` keeps a per-slot opt-in flag.
- ``Sampler.__call__`` marks the rows; ``SamplingStates.apply_temperature`` computes their
  entropy right after temperature (after logit bias, penalties, bad words, thinking budget;
  before min-p, top-k / top-p). When no request of the batch needs logits processing, the raw
  logits are the sampling distribution (temperature 0 or 1) and are used directly.
- ``AsyncOutput.get_output`` (``gpu/async_utils.py``) puts the values on the ModelRunnerOutput.

Greedy requests (temperature 0) get the entropy at temperature 1, as vLLM leaves their logits
unscaled. The device-to-host copy is queued on the current stream right after the entropy is
computed, so it is complete once vLLM's own output copy (which waits on that stream) is.
"""
from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np
import torch

from prpo_openrlhf.rollout.entropy import token_entropy

logger = logging.getLogger("vllm.prpo_entropy")

RUNNER_OUTPUT_ATTR = "prpo_token_entropies"  # ModelRunnerOutput: {req_id: [float, ...]}
_STEP_ATTR = "_prpo_step_entropies"  # runner / async output / SamplerOutput: StepEntropies
_BATCH_REQS_ATTR = "_prpo_entropy_req_ids"  # V1 InputBatch: set of opted-in req ids
_SLOT_FLAGS_ATTR = "_prpo_entropy_slots"  # V2 Sampler: bool per request-state slot
_SAMPLING_EPS = 1e-5  # vLLM's threshold below which a temperature means greedy

_tls = threading.local()
_warned: set = set()


def _warn_once(key: str, msg: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.error(msg, *args)


class _Pending:
    """Rows whose entropy the sampler hook must compute in this step (None = all rows)."""

    __slots__ = ("rows", "result")

    def __init__(self, rows: torch.Tensor | None):
        self.rows = rows
        self.result: torch.Tensor | None = None


@contextlib.contextmanager
def _pending(rows: torch.Tensor | None):
    p = _Pending(rows)
    _tls.pending = p
    try:
        yield p
    finally:
        _tls.pending = None


def _current() -> _Pending | None:
    return getattr(_tls, "pending", None)


def _sync_allowed():
    """vLLM's opt-in GPU-sync checker (VLLM_GPU_SYNC_CHECK) must not flag our small copies."""
    try:
        from vllm.utils.gpu_sync_debug import gpu_sync_allowed
    except Exception:
        return contextlib.nullcontext()
    return gpu_sync_allowed()


class StepEntropies:
    """One step's entropies for some batch rows, on their way to the host."""

    def __init__(self, rows: list[int], values: torch.Tensor, req_ids: list[str] | None = None):
        self.rows = rows
        self.req_ids = req_ids
        self._device_values = values  # kept alive until the copy has completed
        self._event = None
        if values.device.type == "cuda":
            self._host = values.to("cpu", non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = values.to("cpu")

    def by_request(self, batch_req_ids) -> dict[str, list[float]]:
        with _sync_allowed():
            if self._event is not None:
                self._event.synchronize()
            values = self._host.tolist()
        ids = self.req_ids if self.req_ids is not None else [batch_req_ids[r] for r in self.rows]
        return {rid: [v] for rid, v in zip(ids, values)}


def _rows_tensor(rows, num_rows: int, device) -> torch.Tensor | None:
    if len(rows) == num_rows:
        return None
    with _sync_allowed():
        return torch.as_tensor(np.asarray(rows, dtype=np.int64)).to(device, non_blocking=True)


# ── V1 runner ──────────────────────────────────────────────────────────────────────────────

def v1_add_request(original):
    def add_request(self, request, *args, **kwargs):
        index = original(self, request, *args, **kwargs)
        from prpo_openrlhf.rollout.entropy_request import wants_entropy

        if wants_entropy(getattr(request, "sampling_params", None)):
            self.__dict__.setdefault(_BATCH_REQS_ATTR, set()).add(request.req_id)
        return index
    return add_request


def v1_remove_request(original):
    def remove_request(self, req_id, *args, **kwargs):
        wanted = self.__dict__.get(_BATCH_REQS_ATTR)
        if wanted:
            wanted.discard(req_id)
        return original(self, req_id, *args, **kwargs)
    return remove_request


def v1_runner_sample(original):
    def _sample(self, logits, spec_decode_metadata, *args, **kwargs):
        batch = self.input_batch
        wanted = batch.__dict__.get(_BATCH_REQS_ATTR)
        if not wanted or spec_decode_metadata is not None or logits is None:
            return original(self, logits, spec_decode_metadata, *args, **kwargs)
        index = batch.req_id_to_index
        rows = sorted(index[r] for r in wanted if r in index)
        if not rows:
            return original(self, logits, spec_decode_metadata, *args, **kwargs)
        req_ids = batch.req_ids
        with _pending(_rows_tensor(rows, logits.shape[0], logits.device)) as p:
            out = original(self, logits, spec_decode_metadata, *args, **kwargs)
        if p.result is None:
            _warn_once("v1", "prpo entropy: the V1 sampler hook was not reached; no entropies")
            return out
        self.__dict__[_STEP_ATTR] = StepEntropies(rows, p.result, [req_ids[r] for r in rows])
        return out
    return _sample


def v1_sampler_sample(original):
    def sample(self, logits, sampling_metadata, *args, **kwargs):
        p = _current()
        if p is not None and p.result is None:
            temperature = sampling_metadata.temperature  # None when every request is greedy
            if temperature is not None:
                temperature = torch.where(temperature < _SAMPLING_EPS, 1.0, temperature)
            if p.rows is not None:
                logits_rows = logits[p.rows]
                temperature = None if temperature is None else temperature[p.rows]
            else:
                logits_rows = logits
            p.result = token_entropy(logits_rows, temperature)
        return original(self, logits, sampling_metadata, *args, **kwargs)
    return sample


def _attach(output, step: StepEntropies) -> None:
    from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, AsyncModelRunnerOutput, ModelRunnerOutput

    if isinstance(output, ModelRunnerOutput) and output is not EMPTY_MODEL_RUNNER_OUTPUT:
        setattr(output, RUNNER_OUTPUT_ATTR, step.by_request(output.req_ids))
    elif isinstance(output, AsyncModelRunnerOutput):
        output.__dict__[_STEP_ATTR] = step


def v1_sample_tokens(original):
    def sample_tokens(self, *args, **kwargs):
        self.__dict__.pop(_STEP_ATTR, None)  # left over by a step that raised
        output = original(self, *args, **kwargs)
        step = self.__dict__.pop(_STEP_ATTR, None)
        if step is not None:
            _attach(output, step)
        return output
    return sample_tokens


def async_get_output(original):
    """V1 ``AsyncGPUModelRunnerOutput.get_output``: the step was parked on the wrapper."""
    def get_output(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        step = self.__dict__.pop(_STEP_ATTR, None)
        if step is not None:
            setattr(output, RUNNER_OUTPUT_ATTR, step.by_request(output.req_ids))
        return output
    return get_output


# ── V2 runner ──────────────────────────────────────────────────────────────────────────────

def v2_add_request(original):
    def add_request(self, req_idx, prompt_len, sampling_params, *args, **kwargs):
        original(self, req_idx, prompt_len, sampling_params, *args, **kwargs)
        from prpo_openrlhf.rollout.entropy_request import wants_entropy

        want = wants_entropy(sampling_params)
        flags = self.__dict__.get(_SLOT_FLAGS_ATTR)
        if flags is None:
            if not want:
                return
            flags = np.zeros(self.sampling_states.max_num_reqs, dtype=bool)
            self.__dict__[_SLOT_FLAGS_ATTR] = flags
        flags[req_idx] = want
    return add_request


def v2_sampler_call(original):
    def __call__(self, logits, input_batch, *args, **kwargs):
        flags = self.__dict__.get(_SLOT_FLAGS_ATTR)
        if flags is None:
            return original(self, logits, input_batch, *args, **kwargs)
        idx = input_batch.idx_mapping_np
        selected = flags[idx]
        # Expanded logits (more than one row per request) only come with speculative
        # decoding, which the frontend refuses for return_entropy requests.
        if not selected.any() or logits.shape[0] != idx.shape[0]:
            return original(self, logits, input_batch, *args, **kwargs)
        rows = np.flatnonzero(selected)
        rows_t = _rows_tensor(rows, logits.shape[0], logits.device)
        if not np.any(self.needs_logits_processing[idx]):
            # Nothing rescales or masks these logits: they are the sampling distribution.
            result = token_entropy(logits if rows_t is None else logits[rows_t])
            out = original(self, logits, input_batch, *args, **kwargs)
        else:
            with _pending(rows_t) as p:
                out = original(self, logits, input_batch, *args, **kwargs)
            result = p.result
        if result is None:
            _warn_once("v2", "prpo entropy: the V2 temperature hook was not reached; no entropies")
            return out
        out.__dict__[_STEP_ATTR] = StepEntropies(rows.tolist(), result)
        return out
    return __call__


def v2_apply_temperature(original):
    def apply_temperature(self, logits, *args, **kwargs):
        result = original(self, logits, *args, **kwargs)  # in place
        p = _current()
        if p is not None and p.result is None:
            p.result = token_entropy(logits if p.rows is None else logits[p.rows])
        return result
    return apply_temperature


def v2_get_output(original):
    def get_output(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        step = self.sampler_output.__dict__.pop(_STEP_ATTR, None)
        if step is not None:
            setattr(output, RUNNER_OUTPUT_ATTR, step.by_request(output.req_ids))
        return output
    return get_output


def targets():
    """(module, class, method, wrapper factory) for every worker-side hook."""
    return [
        ("vllm.v1.worker.gpu_input_batch", "InputBatch", "add_request", v1_add_request),
        ("vllm.v1.worker.gpu_input_batch", "InputBatch", "remove_request", v1_remove_request),
        ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_sample", v1_runner_sample),
        ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "sample_tokens", v1_sample_tokens),
        ("vllm.v1.worker.gpu_model_runner", "AsyncGPUModelRunnerOutput", "get_output",
         async_get_output),
        ("vllm.v1.sample.sampler", "Sampler", "sample", v1_sampler_sample),
        ("vllm.v1.worker.gpu.sample.sampler", "Sampler", "add_request", v2_add_request),
        ("vllm.v1.worker.gpu.sample.sampler", "Sampler", "__call__", v2_sampler_call),
        ("vllm.v1.worker.gpu.sample.states", "SamplingStates", "apply_temperature",
         v2_apply_temperature),
        ("vllm.v1.worker.gpu.async_utils", "AsyncOutput", "get_output", v2_get_output),
    ]
