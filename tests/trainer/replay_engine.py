"""Stand-in for OpenRLHF's vLLM ``RolloutRayActor`` that replays recorded responses (tests only).

Upstream's ``SamplesGenerator._generate_vllm`` calls two methods of its rollout actors:
``get_num_unfinished_requests`` and ``generate_responses`` (one call per prompt, returning that
prompt's n response dicts). This actor answers both with responses recorded from real vLLM CPU
rollouts, so upstream's own generate loop runs unchanged in a fast test. A prompt in ``hold``
is answered only after ``release()`` (or a 30 s timeout): the test releases it from the PRM's
first submission, so the held group can only arrive if an earlier group was scored first.
"""
import copy
import logging
import threading

import ray


@ray.remote(num_cpus=0, max_concurrency=8)  # threaded: a held call must not block the others
class ReplayRolloutEngine:
    def __init__(self):
        logging.getLogger(__name__).warning(
            "ReplayRolloutEngine: test stand-in for OpenRLHF's RolloutRayActor; it replays vLLM CPU "
            "responses recorded by the test fixture instead of starting a second engine")
        self.load({})

    def load(self, responses_by_prompt: dict, hold=()) -> None:
        """What to replay from now on; one actor serves several tests (its start-up is the cost)."""
        self.responses = responses_by_prompt
        self.hold = set(hold)
        self.released = threading.Event()
        self.held = {}  # prompt -> whether release() came before the timeout

    def get_num_unfinished_requests(self) -> int:
        return 0

    def release(self) -> None:
        self.released.set()

    def held_calls(self) -> dict:
        return dict(self.held)

    def generate_responses(self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1,
                           images=None):
        if prompt in self.hold:
            self.held[prompt] = self.released.wait(timeout=30)
        return copy.deepcopy(self.responses[prompt][:num_samples])
