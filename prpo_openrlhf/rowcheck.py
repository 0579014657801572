"""Checks of one JSON row of problems and answers, shared by prpo-eval's benchmark loader, the
training run's start-up check of its prompt file, and the outcome grader's labels.

One set of rules everywhere: a text field is a string with visible characters, an answer is
such a string or a finite number (never null, NaN, inf, a boolean or ""). Every function
returns the reason a value is unusable, or None; callers add the file and line.
"""
from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterator


def refuse_constant(name: str):
    # json.loads accepts NaN/Infinity/-Infinity by default, but they are not JSON (RFC 8259)
    # and an answer of NaN can never be graded correct.
    raise ValueError(f"{name} is not a JSON value")


def text_fault(value: str) -> str | None:
    """Why a text string is unusable, or None."""
    # Whitespace, control and format characters (e.g. U+0000, U+200B) show nothing to the
    # model and can never match a graded answer.
    if all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in value):
        return "blank (only whitespace or control characters)"
    try:  # a lone surrogate escape (JSON "\ud800") parses, then fails when hashed or tokenized
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not encodable as UTF-8 (a lone surrogate escape)"
    return None


def answer_fault(value) -> str | None:
    """Why ``value`` cannot be a reference answer, or None. The strings ``"nan"``, ``"inf"``
    stay accepted: the grader can match them; the float NaN cannot be matched honestly."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        return "missing or empty"
    if isinstance(value, float) and not math.isfinite(value):  # e.g. 1e999 parses to inf
        return f"not a finite number (it parses to {value})"
    return text_fault(value) if isinstance(value, str) else None


def parse_json_row(text: str) -> tuple[dict | None, str | None]:
    """``text`` (one JSON line) as a dict, or None and why it cannot be read."""
    try:
        row = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:  # the decoder recurses once per nesting level
        return None, "invalid JSON (nested too deeply)"
    except ValueError as exc:
        # NaN/Infinity (above), or an integer past Python's digit limit; the text after ":"
        # is advice about sys.set_int_max_str_digits, not about the data.
        return None, f"invalid JSON ({str(exc).partition(':')[0]})"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    return row, None


def json_lines(path) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line number, row or None, why it cannot be read)`` per non-blank line of a JSON Lines
    file. Read as bytes and decoded line by line: an undecodable line is one bad row, and the
    rest of the file is still read."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, (f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                                     f"of the line)")
                continue
            if text.strip():
                yield (lineno, *parse_json_row(text))


def _chat_fault(messages) -> str | None:
    """Why a chat-format prompt (a list of ``{"role", "content"}``) is unusable, or None."""
    if not isinstance(messages, list) or not messages:
        return "missing or empty"
    for i, msg in enumerate(messages, 1):
        content = msg.get("content") if isinstance(msg, dict) else None
        if content is None or content == "" or content == []:
            return f"message {i} has no text content"
        if isinstance(content, str) and text_fault(content):
            return f"message {i} content is {text_fault(content)}"
    return None


def row_fault(row: dict, text_keys: dict, answer_keys: dict, *, chat_keys: bool = False) -> str | None:
    """Why a parsed row is unusable, or None. ``text_keys`` / ``answer_keys`` map each key to
    the name shown for it (e.g. ``"'problem' (--data.input_key)"``); ``chat_keys`` also takes
    a list of chat messages for a text key (OpenRLHF's ``--data.apply_chat_template``)."""
    for key, shown in text_keys.items():
        value = row.get(key)
        if chat_keys and isinstance(value, list):
            fault = _chat_fault(value)
            if fault == "missing or empty":
                return f"missing or empty {shown} (a non-empty string or list of messages)"
            if fault:
                return f"{shown} {fault}"
        elif not isinstance(value, str) or not value:
            return f"missing or empty {shown} (a non-empty string)"
        elif text_fault(value):
            return f"{shown} is {text_fault(value)}"
    for key, shown in answer_keys.items():
        fault = answer_fault(row.get(key))
        if fault == "missing or empty":
            return f"missing or empty {shown} (a string or number)"
        if fault:
            return f"{shown} is {fault}"
    return None
