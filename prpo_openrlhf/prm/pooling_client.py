"""Client of a PRM served by vLLM's own server (``python -m prpo_openrlhf.prm.vllm_serve``).

    client = VLLMPoolingClient("http://prm-host:8000", tokenizer="Qwen/Qwen2.5-Math-PRM-7B")
    scores, stats = client.score_with_stats(problems, segments)
    future = client.score_async(problems, segments)

Each conversation is rendered and cut to token ids here by the same
:class:`~prpo_openrlhf.prm.inputs.PRMInputBuilder` that PRMScorer uses (chat template, step
tags, tags stripped from the text, over-long policy), and the ids are sent to vLLM's
``/pooling`` endpoint with ``task="token_classify"``. The server's step pooler returns, per
input, the class probabilities at each step tag; the positive class is the score. So a
segment gets the same score as from PRMScorer on the same checkpoint, and segments past
``max_length`` get ``overlong_fill``, counted in the stats. Deadlines, retries and the
rule that a POST with an unknown outcome is never sent again are PRMClient's.
"""
from __future__ import annotations

import math
import time

from .backends import ForwardStats
from .client import PRMClient, PRMClientError
from .inputs import DEFAULT_STEP_TAG, DEFAULT_SYSTEM_PROMPT, PRMInputBuilder, validate_batch
from .scorer import PRMStats, batch_stats


class VLLMPoolingClient(PRMClient):
    """Options: tokenizer (the PRM's; default: the model id the server reports, which must then
    be loadable here), system_prompt, step_tag, max_length (default: the server's
    max_model_len, which it may not exceed), overlong_fill (0.5); the rest are PRMClient's."""

    def __init__(self, url: str, *, tokenizer: str | None = None,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, step_tag: str = DEFAULT_STEP_TAG,
                 max_length: int | None = None, overlong_fill: float = 0.5, **client_kwargs):
        super().__init__(url, **client_kwargs)
        models = self._request("GET", "/v1/models")
        try:
            card = models["data"][0]
            self.model, served_len = str(card["id"]), int(card["max_model_len"])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise PRMClientError(f"{self.url}/v1/models does not describe a served model "
                                 f"({type(err).__name__}: {err}); is this a vLLM server?") from err
        if max_length is not None and max_length > served_len:
            raise ValueError(f"max_length={max_length} exceeds the server's max_model_len={served_len}")
        if not 0.0 <= overlong_fill <= 1.0:
            raise ValueError(f"overlong_fill must lie in [0, 1], got {overlong_fill}")
        from transformers import AutoTokenizer

        self.inputs = PRMInputBuilder(AutoTokenizer.from_pretrained(tokenizer or self.model),
                                      max_length=max_length or served_len,
                                      system_prompt=system_prompt, step_tag=step_tag)
        self.overlong_fill = float(overlong_fill)

    def request_body(self, encoded) -> dict:
        """The /pooling request for the responses with at least one tag within max_length."""
        return {"model": self.model, "task": "token_classify",
                "input": [e.ids for e in encoded if e.n_scored]}

    def score_with_stats(self, problems: list[str], segments: list[list[str]],
                         deadline: float | None = None) -> tuple[list[list[float]], PRMStats]:
        validate_batch(problems, segments)
        start = time.perf_counter()
        encoded = [self.inputs.encode(p, list(s)) for p, s in zip(problems, segments)]
        body = self.request_body(encoded)
        probs = iter(self._positive_probs(self._request("POST", "/pooling", body, deadline),
                                          [e for e in encoded if e.n_scored])
                     if body["input"] else [])
        scores = [(next(probs) if e.n_scored else [])
                  + [self.overlong_fill] * (e.n_segments - e.n_scored) for e in encoded]
        tokens = sum(len(ids) for ids in body["input"])
        fwd = ForwardStats(tokens=tokens, padded_tokens=tokens, batches=int(bool(body["input"])))
        stats = batch_stats(encoded, fwd, time.perf_counter() - start, self.inputs.max_length,
                            self.overlong_fill, self.inputs.step_tag)
        return scores, stats

    def _positive_probs(self, out, encoded) -> list[list[float]]:
        """Per input, P(positive) at each tag, or PRMClientError naming what is wrong."""
        where = f"vLLM server {self.url}/pooling"
        data = out.get("data") if isinstance(out, dict) else None
        if not isinstance(data, list) or len(data) != len(encoded):
            raise PRMClientError(f"{where}: expected 'data' with {len(encoded)} items, got "
                                 f"{str(out)[:200]}")
        result = []
        for k, (item, enc) in enumerate(zip(sorted(data, key=lambda d: d.get("index", 0)), encoded)):
            rows = item.get("data") if isinstance(item, dict) else None
            if not isinstance(rows, list) or len(rows) != enc.n_scored:
                raise PRMClientError(f"{where}: input {k}: {str(rows)[:80]} is not {enc.n_scored} "
                                     "per-tag probability pairs (is the server's pooler the "
                                     "step pooler on this step tag?)")
            for j, row in enumerate(rows):
                ok = isinstance(row, list) and len(row) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and 0.0 <= v <= 1.0 for v in row)
                if not ok:
                    raise PRMClientError(f"{where}: input {k}, tag {j}: {str(row)[:60]} is not two "
                                         "probabilities in [0, 1]")
            result.append([float(row[1]) for row in rows])
        return result

    def info(self) -> dict:
        return {"model": self.model, "api": "vllm", "max_length": self.inputs.max_length,
                "step_tag": self.inputs.step_tag}


def connect(url: str, api: str = "auto", *, token: str | None = None, timeout_s: float = 600.0,
            **vllm_kwargs) -> PRMClient:
    """A client for the PRM service at ``url``: ``prpo`` (prpo-serve-prm), ``vllm`` (vLLM's
    server) or ``auto`` (vLLM's server answers ``GET /v1/models``, prpo-serve-prm answers 404)."""
    if api not in ("auto", "prpo", "vllm"):
        raise ValueError(f"unknown PRM service API {api!r}; choose auto, prpo or vllm")
    if api == "auto":
        try:
            PRMClient(url, token=token, timeout_s=timeout_s)._request("GET", "/v1/models")
            api = "vllm"
        except PRMClientError as err:
            if err.status != 404:
                raise
            api = "prpo"
    if api == "prpo":
        return PRMClient(url, token=token, timeout_s=timeout_s)
    return VLLMPoolingClient(url, token=token, timeout_s=timeout_s, **vllm_kwargs)
