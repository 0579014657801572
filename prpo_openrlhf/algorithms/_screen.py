"""Cheap screen for answers that would make SymPy run for minutes (no torch, no SymPy).

A hostile answer costs a grader worker its whole budget (and a kill and a restart) before it
is ruled False. Answers to competition maths are short and their numbers are small, so the few
shapes that blow up SymPy can be told apart from the text alone:

- over-long answers (``max_chars``), or braces nested deeper than ``max_depth``;
- numeric power towers (an exponent that itself holds a power of a number, a factorial or a
  binomial) and powers whose exponent has more than ``max_exponent_digits`` digits: ``9^{9^{9}}``,
  ``10^{10^{9}}``, ``2^{1000000}``;
- factorials of more than ``max_factorial_digits`` digits or of an expression holding a power:
  ``(10^{10})!``, ``100000!``;
- binomials with a power or a big number inside: ``\\binom{10^{9}}{10^{7}}``.

``rewards.grade_batch`` screens the text of a response's final box group (from its first
``\\boxed`` to its last closing brace, ``_answer.final_answer``). A screened answer is not sent
to math-verify; its verdict is whitespace-insensitive string equality of the boxes' contents,
joined by commas, with the reference, and ``GradeResults.screened`` counts it. The screen only
looks at the model's answer, never at the reference.
"""
from __future__ import annotations

import re

MAX_CHARS = 1000
MAX_DEPTH = 50
MAX_EXPONENT_DIGITS = 5
MAX_FACTORIAL_DIGITS = 4

_BIG_NUMBER = re.compile(r"\d[\d,]*")
# Inside an exponent, factorial or binomial: a numeric power (``9^``, ``{10}^``), a factorial or a
# binomial. Symbolic towers (``x^{y^2}``) are harmless to SymPy and are not screened.
_POWERISH = re.compile(r"\d\s*\}?\s*\^|!|\\[dt]?binom|\\choose")


def _group_after(text: str, i: int) -> str:
    """The operand starting at ``text[i]``: a {...} group, a run of digits, or one character."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return ""
    if text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1:j]
        return text[i + 1:]
    digits = _BIG_NUMBER.match(text, i)
    return digits.group(0) if digits else text[i]


def _group_before(text: str, i: int) -> str:
    """The operand ending just before ``text[i]``: a (...) / {...} group or a run of digits."""
    j = i - 1
    while j >= 0 and text[j] == " ":
        j -= 1
    if j < 0:
        return ""
    close = text[j]
    if close in ")}":
        opening = "(" if close == ")" else "{"
        depth = 0
        for s in range(j, -1, -1):
            depth += {close: 1, opening: -1}.get(text[s], 0)
            if depth == 0:
                return text[s + 1:j]
        return text[:j]
    s = j
    while s >= 0 and (text[s].isdigit() or text[s] == ","):
        s -= 1
    return text[s + 1:j + 1]


def _digits(operand: str) -> int:
    return max((len(m.group(0).replace(",", "")) for m in _BIG_NUMBER.finditer(operand)), default=0)


def hostile_reason(answer: str, *, max_chars: int = MAX_CHARS, max_depth: int = MAX_DEPTH,
                   max_exponent_digits: int = MAX_EXPONENT_DIGITS,
                   max_factorial_digits: int = MAX_FACTORIAL_DIGITS) -> str | None:
    """Why ``answer`` (a final box group's text, or a box's content) is too costly for SymPy, or None."""
    if len(answer) > max_chars:
        return "long"
    depth = deepest = 0
    for ch in answer:
        if ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}":
            depth -= 1
    if deepest > max_depth:
        return "nested"
    for m in re.finditer(r"\^", answer):
        exponent = _group_after(answer, m.end())
        if _POWERISH.search(exponent) or _digits(exponent) > max_exponent_digits:
            return "power"
    for m in re.finditer(r"!", answer):
        operand = _group_before(answer, m.start())
        if _POWERISH.search(operand) or _digits(operand) > max_factorial_digits:
            return "factorial"
    for m in re.finditer(r"\\[dt]?binom|\\choose", answer):
        args = answer[m.end():m.end() + 200]
        if _POWERISH.search(_group_after(args, 0)) or _digits(args[:100]) > max_factorial_digits + 1:
            return "binomial"
    return None


def screened_verdict(answer: str, reference: str) -> bool:
    """Verdict for a screened answer: equal to the reference up to whitespace."""
    return "".join(answer.split()) == "".join(str(reference).split())
