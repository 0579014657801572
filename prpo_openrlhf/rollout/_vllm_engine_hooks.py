"""Engine-side hooks of the entropy plugin: carry the worker's entropies to CompletionOutput.

The route follows vLLM 0.29's ``return_sampling_mask`` (ModelRunnerOutput -> scheduler ->
EngineCoreOutput -> OutputProcessor -> CompletionOutput):

- ``Scheduler.update_from_output`` (engine core): each EngineCoreOutput gets the entropies of
  its ``new_token_ids`` (trimmed exactly as the scheduler trims the tokens at a stop). A plugin
  cannot add a field to the msgspec ``EngineCoreOutput``, so the values ride in its
  ``kv_transfer_params`` dict under ``prpo_token_entropies``; the frontend removes the key
  before anything else reads the dict (patches/ adds a real ``new_token_entropies`` field).
- ``OutputProcessor.add_request`` / ``process_outputs`` (frontend): opted-in requests
  accumulate their values on their RequestState.
- ``RequestState._new_completion_output``: ``CompletionOutput.token_entropies`` aligned with
  ``token_ids``: the delta's values in DELTA mode; otherwise the request's list itself when
  ``token_ids`` is the request's live list (it keeps growing while a CUMULATIVE request
  streams, like vLLM's ``token_ids`` and ``logprobs``), else a copy.
- ``InputProcessor._validate_params``: refuses ``return_entropy`` where it cannot be honoured
  (speculative decoding, batch-sharded sampling) with a ValueError to the caller.
"""
from __future__ import annotations

import logging

logger = logging.getLogger("vllm.prpo_entropy")

CARRIER_KEY = "prpo_token_entropies"  # key inside EngineCoreOutput.kv_transfer_params
_STATE_ATTR = "_prpo_token_entropies"  # RequestState: list of floats (opted-in requests only)
_ACTIVE_ATTR = "_prpo_entropy_requests"  # OutputProcessor: ids of live opted-in requests
_warned: set = set()


def _runner_attr() -> str:
    from prpo_openrlhf.rollout._vllm_worker_hooks import RUNNER_OUTPUT_ATTR

    return RUNNER_OUTPUT_ATTR


def attach_to_engine_core_output(output, values: list) -> None:
    params = output.kv_transfer_params
    output.kv_transfer_params = {**params, CARRIER_KEY: values} if params else {CARRIER_KEY: values}


def pop_from_engine_core_output(output):
    params = output.kv_transfer_params
    if not params or CARRIER_KEY not in params:
        return None
    rest = {k: v for k, v in params.items() if k != CARRIER_KEY}
    output.kv_transfer_params = rest or None
    return params[CARRIER_KEY]


def scheduler_update_from_output(original):
    attr = _runner_attr()

    def update_from_output(self, scheduler_output, model_runner_output, *args, **kwargs):
        outputs = original(self, scheduler_output, model_runner_output, *args, **kwargs)
        entropies = getattr(model_runner_output, attr, None)
        if entropies:
            for engine_outputs in outputs.values():
                for out in engine_outputs.outputs:
                    values = entropies.get(out.request_id)
                    if values is not None and out.new_token_ids:
                        attach_to_engine_core_output(out, values[: len(out.new_token_ids)])
        return outputs
    return update_from_output


def output_processor_add_request(original):
    def add_request(self, request, *args, **kwargs):
        result = original(self, request, *args, **kwargs)
        from prpo_openrlhf.rollout.entropy_request import wants_entropy

        if wants_entropy(getattr(request, "sampling_params", None)):
            state = self.request_states.get(request.request_id)
            if state is not None and _STATE_ATTR not in state.__dict__:
                state.__dict__[_STATE_ATTR] = []
                self.__dict__.setdefault(_ACTIVE_ATTR, set()).add(request.request_id)
        return result
    return add_request


def output_processor_process_outputs(original):
    def process_outputs(self, engine_core_outputs, *args, **kwargs):
        active = self.__dict__.get(_ACTIVE_ATTR)
        if not active:  # no opted-in request alive in this frontend: nothing to do
            return original(self, engine_core_outputs, *args, **kwargs)
        states = self.request_states
        for out in engine_core_outputs:
            values = pop_from_engine_core_output(out)
            if values is not None:
                state = states.get(out.request_id)
                buffer = None if state is None else state.__dict__.get(_STATE_ATTR)
                if buffer is not None:
                    buffer.extend(values)
        result = original(self, engine_core_outputs, *args, **kwargs)
        for rid in [r for r in active if r not in states]:
            active.discard(rid)
        return result
    return process_outputs


def request_state_new_completion_output(original):
    def _new_completion_output(self, token_ids, *args, **kwargs):
        output = original(self, token_ids, *args, **kwargs)
        buffer = self.__dict__.get(_STATE_ATTR)
        if buffer is None:
            return output
        from vllm.sampling_params import RequestOutputKind

        total = self.detokenizer.num_output_tokens()
        n = len(output.token_ids)
        if len(buffer) != total:
            if "mismatch" not in _warned:
                _warned.add("mismatch")
                logger.error(
                    "prpo entropy: request %s has %d entropies for %d tokens; token_entropies=None "
                    "(is the plugin active in the engine core and worker processes?)",
                    self.request_id, len(buffer), total)
            output.token_entropies = None
        elif self.output_kind == RequestOutputKind.DELTA:
            output.token_entropies = buffer[total - n:]
        elif output.token_ids is getattr(self.detokenizer, "token_ids", None):
            # token_ids is the request's live list (so are logprobs): share ours the same way
            output.token_entropies = buffer
        else:
            output.token_entropies = buffer[:n]
        return output
    return _new_completion_output


def unsupported_reason(vllm_config) -> str | None:
    """Why this engine cannot return entropies, or None."""
    if getattr(vllm_config, "speculative_config", None) is not None:
        return "not supported with speculative decoding"
    parallel = getattr(vllm_config, "parallel_config", None)
    if parallel is not None and getattr(parallel, "enable_batch_sharded_sampling", False):
        return "not supported with batch-sharded sampling"
    return None


def input_processor_validate_params(original):
    def _validate_params(self, params, *args, **kwargs):
        original(self, params, *args, **kwargs)
        from vllm.sampling_params import SamplingParams

        from prpo_openrlhf.rollout.entropy_request import REQUEST_KEY, wants_entropy

        if isinstance(params, SamplingParams) and wants_entropy(params):
            reason = unsupported_reason(self.vllm_config)
            if reason:
                raise ValueError(f"SamplingParams.extra_args[{REQUEST_KEY!r}]: {reason}")
    return _validate_params


def targets():
    """(module, class, method, wrapper factory) for every engine-side hook."""
    return [
        ("vllm.v1.core.sched.scheduler", "Scheduler", "update_from_output",
         scheduler_update_from_output),
        ("vllm.v1.engine.output_processor", "OutputProcessor", "add_request",
         output_processor_add_request),
        ("vllm.v1.engine.output_processor", "OutputProcessor", "process_outputs",
         output_processor_process_outputs),
        ("vllm.v1.engine.output_processor", "RequestState", "_new_completion_output",
         request_state_new_completion_output),
        ("vllm.v1.engine.input_processor", "InputProcessor", "_validate_params",
         input_processor_validate_params),
    ]
