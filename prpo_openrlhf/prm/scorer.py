"""PRMScorer: one score in [0, 1] per segment, one forward pass per response (PRPO_SPEC §3).

    scorer = PRMScorer("Qwen/Qwen2.5-Math-PRM-7B", backend="hf", dtype="bf16")
    scores = scorer.score(problems, segments)      # list[list[float]], one per segment
    scores, stats = scorer.score_with_stats(problems, segments)

The score of a segment is ``softmax(logits)[1]`` at the step tag that follows it, read from one
causal forward over ``prompt + seg_1 <tag> ... seg_n <tag>``. Over-long policy: segments whose
tag lies past ``max_length`` (the PRM's position limit by default, 4096 for Qwen2.5-Math-PRM-7B)
get ``overlong_fill`` (0.5, PRPO's prior mean: no process signal); they are counted in the
stats and logged, never silently dropped. Non-finite scores raise :class:`PRMScoreError`.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from .backends import AsyncVLLMBackend, ForwardStats, HFBackend, VLLMBackend
from .inputs import DEFAULT_STEP_TAG, DEFAULT_SYSTEM_PROMPT, PRMInputBuilder, validate_batch

logger = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")
class PRMScoreError(RuntimeError):
    """The PRM produced scores that cannot be used (NaN or inf)."""


@dataclass
class PRMStats:
    """What one ``score`` call did. ``filled_segments`` got ``overlong_fill``, not a PRM score."""

    responses: int = 0
    segments: int = 0
    scored_segments: int = 0
    filled_segments: int = 0
    truncated_responses: int = 0
    truncated_indices: list[int] = field(default_factory=list)
    stripped_tags: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    seconds: float = 0.0
    retries: int = 0  # shards sent again after their PRM actor died (PRMActorGroup)
    # responses in the largest forward this call was part of (coalesce.py); with the async
    # engine, the most responses in vLLM's engine at once during the call (what it batched from)
    forward_responses: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PRMStats":
        """Stats sent by a PRM actor or service. Keys this version does not know (a newer
        service's) are left out with a warning, once per set of keys, instead of failing the
        call: the scores are what the step needs. A non-dict raises TypeError."""
        if not isinstance(d, dict):
            raise TypeError(f"stats must be an object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = tuple(sorted(set(d) - known))
        if unknown:
            _warn_unknown_stats(unknown)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def merge(cls, parts: list["PRMStats"], offsets: list[int]) -> "PRMStats":
        """Sum stats of consecutive shards; ``offsets[k]`` is shard k's first response index."""
        total = cls()
        for part, off in zip(parts, offsets):
            for name in ("responses", "segments", "scored_segments", "filled_segments",
                         "truncated_responses", "stripped_tags", "tokens", "padded_tokens",
                         "batches", "retries"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.truncated_indices += [off + i for i in part.truncated_indices]
            total.seconds = max(total.seconds, part.seconds)  # shards run in parallel
            total.forward_responses = max(total.forward_responses, part.forward_responses)
        return total


@functools.lru_cache(maxsize=None)
def _warn_unknown_stats(keys: tuple[str, ...]) -> None:
    logger.warning("PRM stats: ignoring fields this version does not know: %s (a newer PRM service?)",
                   ", ".join(keys))


@dataclass
class PreparedBatch:
    """A checked, tokenized batch waiting for the model (see :meth:`PRMScorer.prepare`)."""

    encoded: list  # EncodedResponse per response
    seconds: float  # spent tokenizing


def batch_stats(encoded, fwd: ForwardStats, seconds: float, max_length: int, fill: float,
                step_tag: str) -> PRMStats:
    """PRMStats of one scored batch; logs over-long responses and stripped tags."""
    truncated = [i for i, e in enumerate(encoded) if e.truncated]
    stats = PRMStats(
        responses=len(encoded), segments=sum(e.n_segments for e in encoded),
        scored_segments=sum(e.n_scored for e in encoded),
        truncated_responses=len(truncated), truncated_indices=truncated,
        stripped_tags=sum(e.stripped_tags for e in encoded), tokens=fwd.tokens,
        padded_tokens=fwd.padded_tokens, batches=fwd.batches, seconds=seconds)
    stats.filled_segments = stats.segments - stats.scored_segments
    if truncated:
        longest = max(encoded[i].full_length for i in truncated)
        logger.warning("PRM: %d of %d responses exceed max_length=%d tokens (longest %d); "
                       "%d segments past the limit get the fill score %.3f",
                       len(truncated), len(encoded), max_length, longest,
                       stats.filled_segments, fill)
    if stats.stripped_tags:
        logger.warning("PRM: removed %d step tags %r found inside problem/segment text",
                       stats.stripped_tags, step_tag)
    return stats


def _position_limit(config) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        raise ValueError("the PRM config has no max_position_embeddings; pass max_length")
    return int(limit)


class PRMScorer:
    """Score reasoning segments with a Qwen2.5-Math-PRM-style process reward model.

    Options (keyword-only):
      system_prompt       system turn (default: the model card's "Please reason step by step...").
      step_tag            tag token appended to every segment (default ``<extra_0>``); its id is
                          taken from the tokenizer, which must have it as one token.
      max_length          tokens per input, at most the PRM's position limit (the default).
      overlong_fill       score given to segments whose tag does not fit (default 0.5).
      dtype               "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16".
      tokenizer           tokenizer path if it differs from the model's.
      hf backend:   device ("cuda" if available else "cpu"), max_tokens_per_batch (16384 padded
                    tokens per forward), max_batch_size (256), attn_implementation ("sdpa").
      vllm backend: engine_kwargs (passed to ``vllm.LLM``: tensor_parallel_size,
                    gpu_memory_utilization, ...); async_engine (False: ``vllm.LLM``; True: vLLM's
                    async engine, scored through :meth:`score_prepared_async` only, which batches
                    the sequences of concurrent calls together: the async PRM actor).
    """

    def __init__(self, model_name_or_path: str, backend: str = "hf", *,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, step_tag: str = DEFAULT_STEP_TAG,
                 max_length: int | None = None, overlong_fill: float = 0.5,
                 dtype: str | torch.dtype = "auto", tokenizer: str | None = None,
                 device: str | None = None, max_tokens_per_batch: int = 16384,
                 max_batch_size: int = 256, attn_implementation: str = "sdpa",
                 engine_kwargs: dict | None = None, async_engine: bool = False):
        from transformers import AutoTokenizer, Qwen2Config

        if backend not in BACKENDS:
            raise ValueError(f"unknown PRM backend {backend!r}; choose one of {BACKENDS}")
        if async_engine and backend != "vllm":
            raise ValueError(f"async_engine needs the vllm backend, not {backend!r}")
        if not 0.0 <= overlong_fill <= 1.0:
            raise ValueError(f"overlong_fill must lie in [0, 1], got {overlong_fill}")
        self.model_name_or_path = str(model_name_or_path)
        self.backend_name = backend
        self.overlong_fill = float(overlong_fill)
        # Qwen2Config directly: the checkpoints' config.json carries an auto_map to remote code
        # that AutoConfig might try to honour; the architecture is plain Qwen2 + a head.
        config = Qwen2Config.from_pretrained(self.model_name_or_path)
        self.position_limit = _position_limit(config)
        if engine_kwargs and engine_kwargs.get("max_model_len") and max_length is None:
            max_length = int(engine_kwargs["max_model_len"])
        self.max_length = self.position_limit if max_length is None else int(max_length)
        if self.max_length > self.position_limit:
            raise ValueError(f"max_length={self.max_length} exceeds the PRM's position limit "
                             f"max_position_embeddings={self.position_limit}")
        tok = AutoTokenizer.from_pretrained(tokenizer or self.model_name_or_path)
        self.inputs = PRMInputBuilder(tok, max_length=self.max_length,
                                      system_prompt=system_prompt, step_tag=step_tag)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if backend == "hf":
            from .model import load_prm

            model = load_prm(self.model_name_or_path, dtype=dtype, device=self.device,
                             attn_implementation=attn_implementation)
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
            self.backend = HFBackend(model, tag_id=self.inputs.tag_id, pad_id=pad_id,
                                     max_tokens_per_batch=max_tokens_per_batch,
                                     max_batch_size=max_batch_size)
        else:
            from .model import resolve_dtype

            vdtype = str(resolve_dtype(dtype, self.device)).replace("torch.", "")
            engine = AsyncVLLMBackend if async_engine else VLLMBackend
            self.backend = engine(self.model_name_or_path, tag_id=self.inputs.tag_id,
                                  max_length=self.max_length, dtype=vdtype,
                                  tokenizer=tokenizer, engine_kwargs=engine_kwargs)
        self.last_stats: PRMStats | None = None

    @property
    def tag_id(self) -> int:
        return self.inputs.tag_id

    def score(self, problems: list[str], segments: list[list[str]]) -> list[list[float]]:
        """One score in [0, 1] per segment; see :meth:`score_with_stats` for the counters."""
        return self.score_with_stats(problems, segments)[0]

    def score_with_stats(self, problems: list[str], segments: list[list[str]]
                         ) -> tuple[list[list[float]], PRMStats]:
        return self.score_prepared(self.prepare(problems, segments))

    def prepare(self, problems: list[str], segments: list[list[str]]) -> "PreparedBatch":
        """Check and tokenize a batch (no model call): the part a service runs outside its lock."""
        validate_batch(problems, segments)
        start = time.perf_counter()
        encoded = [self.inputs.encode(p, list(s)) for p, s in zip(problems, segments)]
        return PreparedBatch(encoded, time.perf_counter() - start)

    def score_prepared(self, batch: "PreparedBatch") -> tuple[list[list[float]], PRMStats]:
        start, fwd = time.perf_counter(), ForwardStats()
        todo = [i for i, e in enumerate(batch.encoded) if e.n_scored > 0]
        probs = self.backend.positive_probs([batch.encoded[i].ids for i in todo], stats=fwd) if todo else []
        return self._scores(batch, todo, probs, fwd, start)

    async def score_prepared_async(self, batch: "PreparedBatch") -> tuple[list[list[float]], PRMStats]:
        """:meth:`score_prepared` on the async vLLM engine (``async_engine=True``): concurrent
        calls' sequences share the engine's batches."""
        start, fwd = time.perf_counter(), ForwardStats()
        todo = [i for i, e in enumerate(batch.encoded) if e.n_scored > 0]
        probs = await self.backend.positive_probs_async([batch.encoded[i].ids for i in todo], stats=fwd) \
            if todo else []
        return self._scores(batch, todo, probs, fwd, start)

    def _scores(self, batch: "PreparedBatch", todo: list[int], probs: list[torch.Tensor], fwd: ForwardStats,
                start: float) -> tuple[list[list[float]], PRMStats]:
        """Per response, its tags' probabilities then the fill for segments past max_length;
        a count that does not match the tags, or a non-finite score, raises PRMScoreError."""
        encoded = batch.encoded
        by_index = dict(zip(todo, probs))
        scores = []
        for i, enc in enumerate(encoded):
            got = by_index.get(i, torch.empty(0))
            if got.numel() != enc.n_scored:
                raise PRMScoreError(f"response {i}: {got.numel()} scores for {enc.n_scored} "
                                    "step tags")
            if not torch.isfinite(got).all():
                raise PRMScoreError(
                    f"PRM {self.model_name_or_path!r} ({self.backend_name}) produced non-finite "
                    f"scores {got.tolist()} for response {i}; check the checkpoint and dtype")
            scores.append(got.tolist() + [self.overlong_fill] * (enc.n_segments - enc.n_scored))
        stats = batch_stats(encoded, fwd, batch.seconds + time.perf_counter() - start,
                            self.max_length, self.overlong_fill, self.inputs.step_tag)
        stats.forward_responses = fwd.in_flight
        self.last_stats = stats
        return scores, stats

    def info(self) -> dict:
        return {"model": self.model_name_or_path, "backend": self.backend_name,
                "max_length": self.max_length, "position_limit": self.position_limit,
                "step_tag": self.inputs.step_tag, "overlong_fill": self.overlong_fill,
                "device": self.device}

    def close(self) -> None:
        """Release the vLLM engine (the hf backend just drops its model)."""
        if hasattr(self.backend, "close"):
            self.backend.close()
        self.backend = None
