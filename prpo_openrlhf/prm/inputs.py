"""Token ids for a PRM: chat template + step tags, as the Qwen2.5-Math-PRM model card builds them.

One response becomes one sequence:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{problem}<|im_end|>\\n
    <|im_start|>assistant\\n{seg_1}<extra_0>{seg_2}<extra_0>...{seg_n}<extra_0>

(the template's trailing ``<|im_end|>`` is cut: the model is causal, so nothing after the last
tag can change a score, and those tokens would only cost compute). The conversation is rendered
by the tokenizer's own chat template and tokenized in one piece, like the model card does, so
the ids are exactly the model card's ids up to the last tag.

Two policies live here:
- A step tag inside the problem or a segment would become an extra scoring position and shift
  every later score. It is removed from the text (repeatedly, so that ``<extra<extra_0>_0>``
  cannot reassemble into a tag) and counted in ``stripped_tags``.
- Over-long inputs: ids are cut at ``max_length`` (the PRM's position limit by default). The
  segments whose tag still fits are scored exactly (causal model: a prefix scores the same as
  the whole); the rest get no score here and the scorer fills them with the prior mean.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_STEP_TAG = "<extra_0>"


@dataclass
class EncodedResponse:
    """One response as PRM input. ``ids`` ends at the last tag that fits (empty if none)."""

    ids: list[int]
    n_segments: int      # segments given
    n_scored: int        # segments whose tag fits within max_length (a prefix of them)
    full_length: int     # tokens of the whole conversation before any cut
    stripped_tags: int   # step tags removed from the problem / segment text

    @property
    def truncated(self) -> bool:
        return self.n_scored < self.n_segments


def step_tag_id(tokenizer, step_tag: str) -> int:
    """Id of ``step_tag``; a clear error if the tokenizer does not have it as a single token."""
    ids = tokenizer.encode(step_tag, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != step_tag:
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ValueError(f"tokenizer {name!r} has no single token for the step tag {step_tag!r} "
                         f"(it encodes to {ids}); pass the PRM's own tokenizer or its step tag")
    return ids[0]


def strip_tag(text: str, tag: str) -> tuple[str, int]:
    """Remove every occurrence of ``tag`` from ``text``; returns (clean text, removals)."""
    removed = 0
    while tag in text:
        removed += text.count(tag)
        text = text.replace(tag, "")
    return text, removed


def validate_batch(problems, segments) -> None:
    """Type and shape checks with the index of the first bad item in the message."""
    if not isinstance(problems, (list, tuple)) or not isinstance(segments, (list, tuple)):
        raise TypeError("problems must be a list of str and segments a list of lists of str")
    if len(problems) != len(segments):
        raise ValueError(f"got {len(problems)} problems but {len(segments)} segment lists; "
                         "they must pair up one to one")
    for i, (p, segs) in enumerate(zip(problems, segments)):
        _check_text(p, f"problems[{i}]")
        if not isinstance(segs, (list, tuple)):
            raise TypeError(f"segments[{i}] is {type(segs).__name__}, expected a list of str")
        for j, s in enumerate(segs):
            _check_text(s, f"segments[{i}][{j}]")


def _check_text(text, where: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{where} is {type(text).__name__}, expected str")
    # JSON can carry a lone surrogate ("\\ud800"); no tokenizer can encode it.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{where} is not valid Unicode text ({err.reason} at index "
                             f"{err.start})") from None


class PRMInputBuilder:
    """Builds PRM input ids from (problem, segments) with a tokenizer's chat template."""

    def __init__(self, tokenizer, *, max_length: int, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 step_tag: str = DEFAULT_STEP_TAG):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat "
                             "template; the PRM input is built with it")
        if step_tag in (system_prompt or ""):
            raise ValueError(f"the system prompt contains the step tag {step_tag!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.system_prompt = system_prompt
        self.step_tag = step_tag
        self.tag_id = step_tag_id(tokenizer, step_tag)

    def messages(self, problem: str, segments: list[str]) -> tuple[list[dict], int]:
        """Chat messages (model-card format) and the number of tags stripped from the text."""
        problem, stripped = strip_tag(problem, self.step_tag)
        clean = []
        for seg in segments:
            seg, n = strip_tag(seg, self.step_tag)
            clean.append(seg)
            stripped += n
        assistant = "".join(seg + self.step_tag for seg in clean)
        msgs = [{"role": "user", "content": problem}, {"role": "assistant", "content": assistant}]
        if self.system_prompt is not None:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs, stripped

    def full_ids(self, problem: str, segments: list[str]) -> tuple[list[int], int]:
        """Ids of the whole conversation (no cut) and the number of stripped tags."""
        msgs, stripped = self.messages(problem, segments)
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False,
                                                  add_generation_prompt=False)
        # The template already holds every special token the model expects (BOS included for
        # families that use one), so the tokenizer must not add its own.
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids, stripped

    def encode(self, problem: str, segments: list[str]) -> EncodedResponse:
        ids, stripped = self.full_ids(problem, segments)
        tag_pos = [i for i, t in enumerate(ids) if t == self.tag_id]
        if len(tag_pos) != len(segments):
            # Only reachable if the chat template itself injects or drops tags.
            raise ValueError(f"expected {len(segments)} step tags in the PRM input, found "
                             f"{len(tag_pos)}; does the chat template alter assistant content?")
        kept = [p for p in tag_pos if p < self.max_length]
        cut = ids[: kept[-1] + 1] if kept else []
        return EncodedResponse(ids=cut, n_segments=len(segments), n_scored=len(kept),
                               full_length=len(ids), stripped_tags=stripped)
