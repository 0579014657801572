"""The V2-runner hooks, driven through a CPU replica of vLLM 0.29.0's V2 sampling call chain.

The V2 model runner needs CUDA (pinned memory, Triton kernels), so it cannot run here. The
replica below copies the control flow the hooks depend on from ``vllm/v1/worker/gpu/sample/
sampler.py`` and ``states.py`` (``__call__`` -> ``sample`` -> ``apply_sampling_params``, which
returns the logits untouched when no request needs processing, else copies them to fp32 and
divides by the temperature, leaving 0 and 1 alone, before min-p / top-k / top-p) and uses
vLLM's real V2 ``SamplerOutput`` and ``ModelRunnerOutput``. The hooks are the project's real
factories, applied to the replica's methods; vLLM itself is not touched.
"""
from types import SimpleNamespace as NS

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.worker.gpu.sample.output import SamplerOutput

from prpo_openrlhf.rollout import _vllm_worker_hooks as hooks
from tests.rollout.reference import reference_entropy


class StatesReplica:
    def __init__(self, max_num_reqs):
        self.max_num_reqs = max_num_reqs
        self.temperature = np.zeros(max_num_reqs, dtype=np.float32)

    def apply_temperature(self, logits, expanded_idx_mapping, idx_mapping_np):
        temp = self.temperature[idx_mapping_np]
        if np.all((temp == 0.0) | (temp == 1.0)):
            return
        temp = torch.from_numpy(np.where(temp == 0.0, 1.0, temp))
        logits.div_(temp[:, None])


class SamplerReplica:
    def __init__(self, max_num_reqs=8):
        self.sampling_states = StatesReplica(max_num_reqs)
        self.needs_logits_processing = np.zeros(max_num_reqs, dtype=bool)

    def add_request(self, req_idx, prompt_len, sampling_params):
        t = sampling_params.temperature
        self.sampling_states.temperature[req_idx] = t
        self.needs_logits_processing[req_idx] = t not in (0.0, 1.0)

    def __call__(self, logits, input_batch):
        idx = input_batch.idx_mapping_np
        processed = logits
        if np.any(self.needs_logits_processing[idx]):
            processed = torch.empty_like(logits, dtype=torch.float32).copy_(logits)
            self.sampling_states.apply_temperature(processed, None, idx)
            processed[processed < processed.amax(-1, keepdim=True) - 2.0] = float("-inf")  # "top-k"
        sampled = processed.argmax(-1)
        return SamplerOutput(sampled_token_ids=sampled.view(-1, 1), logprobs_tensors=None,
                             num_nans=None, num_sampled=torch.ones_like(sampled))


class AsyncOutputReplica:
    def __init__(self, model_runner_output, sampler_output):
        self.model_runner_output = model_runner_output
        self.sampler_output = sampler_output

    def get_output(self):
        return self.model_runner_output


def hooked_classes():
    class Sampler(SamplerReplica):
        add_request = hooks.v2_add_request(SamplerReplica.add_request)
        __call__ = hooks.v2_sampler_call(SamplerReplica.__call__)

    class States(StatesReplica):
        apply_temperature = hooks.v2_apply_temperature(StatesReplica.apply_temperature)

    class AsyncOutput(AsyncOutputReplica):
        get_output = hooks.v2_get_output(AsyncOutputReplica.get_output)

    return Sampler, States, AsyncOutput


def run_step(requests, logits):
    """requests: list of (slot, temperature, opt_in) in batch order."""
    Sampler, States, AsyncOutput = hooked_classes()
    sampler = Sampler()
    sampler.sampling_states = States(8)
    for slot, temperature, opt_in in requests:
        extra = {"return_entropy": True} if opt_in else None
        sampler.add_request(slot, 3, SamplingParams(temperature=temperature, extra_args=extra))
    batch = NS(idx_mapping_np=np.array([slot for slot, _, _ in requests]))
    sampler_output = sampler(logits, batch)
    req_ids = [f"r{slot}" for slot, _, _ in requests]
    mro = ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: i for i, r in enumerate(req_ids)})
    return AsyncOutput(mro, sampler_output).get_output()


def logits_for(n, vocab=64, seed=0):
    return torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_opted_in_rows_get_the_entropy_after_temperature_before_truncation():
    logits = logits_for(4)
    out = run_step([(5, 0.5, True), (1, 0.8, False), (2, 0.0, True), (7, 1.3, True)], logits)
    got = getattr(out, hooks.RUNNER_OUTPUT_ATTR)
    assert set(got) == {"r5", "r2", "r7"}
    for row, (rid, temperature) in enumerate([("r5", 0.5), (None, None), ("r2", 1.0), ("r7", 1.3)]):
        if rid is not None:
            ref = reference_entropy(logits[row: row + 1] / temperature).item()
            assert abs(got[rid][0] - ref) < 2e-5, (rid, got[rid][0], ref)


def test_without_logits_processing_the_raw_logits_are_used():
    logits = logits_for(2, seed=1)
    out = run_step([(0, 1.0, True), (3, 0.0, True)], logits)  # temperature 1 and greedy only
    got = getattr(out, hooks.RUNNER_OUTPUT_ATTR)
    for row, rid in enumerate(["r0", "r3"]):
        assert abs(got[rid][0] - reference_entropy(logits[row: row + 1]).item()) < 2e-5


def test_nobody_asks_nothing_attached():
    out = run_step([(0, 0.7, False), (1, 1.0, False)], logits_for(2))
    assert not hasattr(out, hooks.RUNNER_OUTPUT_ATTR)


def test_expanded_logits_are_left_alone():
    """More logit rows than requests only happens with speculative decoding (refused upstream)."""
    Sampler, States, _ = hooked_classes()
    sampler = Sampler()
    sampler.sampling_states = States(8)
    sampler.add_request(0, 3, SamplingParams(temperature=0.7, extra_args={"return_entropy": True}))
    output = sampler(logits_for(3), NS(idx_mapping_np=np.array([0])))
    assert hooks._STEP_ATTR not in output.__dict__
