"""Benchmark JSONL loading: the vendored sets, bad rows named by file:line, skipping."""
import json

import pytest

from prpo_openrlhf.eval.data import (DEFAULT_BENCHMARKS, DataError, default_data_dir,
                                     load_problems, resolve_benchmark)


def test_vendored_benchmarks_load():
    sizes = {}
    for name in DEFAULT_BENCHMARKS:
        resolved, path = resolve_benchmark(name)
        problems, bad = load_problems(path)
        assert resolved == name and not bad
        sizes[name] = len(problems)
        assert all(p.problem and p.answer for p in problems)
    assert sizes == {"math500": 500, "amc23": 40, "aime24": 30, "aime25": 30}
    assert (default_data_dir() / "README.md").is_file()


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_rows_are_listed_with_file_and_line(tmp_path):
    f = _write(tmp_path / "set.jsonl", [
        json.dumps({"problem": "1+1?", "answer": "2"}),
        "{not json",
        json.dumps({"problem": "no answer"}),
        "",
        json.dumps({"problem": "", "answer": "3"}),
        json.dumps(["a", "list"]),
        json.dumps({"problem": "2+2?", "answer": 4}),
    ])
    with pytest.raises(DataError) as err:
        load_problems(f)
    msg = str(err.value)
    assert "4 malformed row(s)" in msg and "--skip_bad_rows" in msg
    for line, what in [(2, "invalid JSON"), (3, "'answer'"), (5, "'problem'"), (6, "JSON object")]:
        assert f"{f}:{line}: " in msg and what in msg
    assert f"{f}:1:" not in msg and f"{f}:7:" not in msg


def test_skip_bad_rows_keeps_good_rows_and_counts(tmp_path):
    f = _write(tmp_path / "set.jsonl", [
        json.dumps({"problem": "1+1?", "answer": "2", "id": "a"}),
        "{broken",
        json.dumps({"problem": "2+2?", "answer": 4}),
    ])
    problems, bad = load_problems(f, skip_bad_rows=True)
    assert [(p.index, p.line, p.answer, p.id) for p in problems] == [(0, 1, "2", "a"),
                                                                      (1, 3, "4", None)]
    assert len(bad) == 1 and bad[0].startswith(f"{f}:2:")
    assert [p.index for p in load_problems(f, skip_bad_rows=True, limit=1)[0]] == [0]


def test_any_jsonl_by_path_and_unknown_name(tmp_path):
    f = _write(tmp_path / "mine.jsonl", [json.dumps({"problem": "x?", "answer": "1"})])
    assert resolve_benchmark(str(f)) == ("mine", f)
    with pytest.raises(DataError, match="no file"):
        resolve_benchmark("nope", data_dir=tmp_path)


_GOOD = json.dumps({"problem": "1+1?", "answer": "2"}).encode()


def _row(answer=b'"2"', problem=b'"p?"', extra=b""):
    return b'{"problem": ' + problem + b', "answer": ' + answer + extra + b"}"


# Hostile rows (raw bytes, so undecodable ones can be written) and the reason each must give.
HOSTILE = [
    pytest.param(b'{"problem": "x\xff?", "answer": "2"}', "not UTF-8 text (byte 0xff at byte 15",
                 id="invalid-utf8-byte"),
    pytest.param(_row(problem=b'"caf\xe9?"'), "not UTF-8 text (byte 0xe9", id="latin1-text"),
    pytest.param(_row(problem=b'"\xe2\x82"'), "not UTF-8 text (byte 0xe2", id="truncated-utf8"),
    pytest.param(b"[" * 5000 + b"]" * 5000, "invalid JSON (nested too deeply)", id="deep-array"),
    pytest.param(_row(answer=b'{"a": ' * 5000), "invalid JSON (nested too deeply)",
                 id="deep-answer"),
    pytest.param(_row(answer=b"NaN"), "invalid JSON (NaN is not a JSON value)", id="nan"),
    pytest.param(_row(answer=b"Infinity"), "invalid JSON (Infinity is not a JSON value)",
                 id="infinity"),
    pytest.param(_row(answer=b"-Infinity"), "invalid JSON (-Infinity is not a JSON value)",
                 id="minus-infinity"),
    pytest.param(_row(extra=b', "level": NaN'), "invalid JSON (NaN is not a JSON value)",
                 id="nan-in-other-field"),
    pytest.param(_row(answer=b"1e999"), "'answer' is not a finite number (it parses to inf)",
                 id="overflow-float"),
    pytest.param(_row(answer=b"-1e999"), "'answer' is not a finite number (it parses to -inf)",
                 id="negative-overflow-float"),
    pytest.param(_row(answer=b"1" * 5000), "invalid JSON (Exceeds the limit (4300 digits)",
                 id="huge-int"),
    pytest.param(_row(answer=b'"  \\t "'), "'answer' is blank", id="whitespace-answer"),
    pytest.param(_row(answer=b'"\\n"'), "'answer' is blank", id="newline-answer"),
    pytest.param(_row(answer=b'"\\u0000\\u0007"'), "'answer' is blank", id="control-answer"),
    pytest.param(_row(problem=b'" \\n "'), "'problem' is blank", id="whitespace-problem"),
    pytest.param(_row(problem=b'"\\u0000\\u0001"'), "'problem' is blank", id="control-problem"),
    pytest.param(_row(problem=b'"\\u200b\\u200b"'), "'problem' is blank",
                 id="zero-width-problem"),
    pytest.param(_row(problem=b'"x \\ud800?"'), "'problem' is not encodable as UTF-8",
                 id="lone-surrogate-problem"),
    pytest.param(_row(answer=b'"\\udfff"'), "'answer' is not encodable as UTF-8",
                 id="lone-surrogate-answer"),
]


@pytest.mark.parametrize("row,reason", HOSTILE)
def test_hostile_row_is_named_by_file_and_line(tmp_path, row, reason):
    f = tmp_path / "set.jsonl"
    f.write_bytes(_GOOD + b"\n" + row + b"\n" + _GOOD + b"\n")
    with pytest.raises(DataError) as err:
        load_problems(f)
    msg = str(err.value)
    assert "1 malformed row(s)" in msg and f"{f}:2: {reason}" in msg, msg


def test_hostile_rows_all_listed_and_skippable_around_legitimate_answers(tmp_path):
    # One bad line must not stop the others being checked; answers a grader can match
    # ("\infty", and the strings "inf"/"nan", which the grader compares as text) stay.
    legit = [json.dumps({"problem": "lim?", "answer": a}).encode()
             for a in ["\\infty", "inf", "nan", "-\\infty", " 7 "]] + [_row(answer=b"0"),
                                                                      _row(answer=b"-2.5")]
    hostile = [p.values[0] for p in HOSTILE]
    f = tmp_path / "set.jsonl"
    f.write_bytes(b"\n".join(hostile + legit) + b"\n")
    with pytest.raises(DataError) as err:
        load_problems(f)
    msg = str(err.value)
    assert f"{len(hostile)} malformed row(s)" in msg
    assert all(f"{f}:{i}: " in msg for i in range(1, len(hostile) + 1))  # up to 20 shown
    problems, bad = load_problems(f, skip_bad_rows=True)
    assert len(bad) == len(hostile)
    assert [b.split(": ", 1)[0] for b in bad] == [f"{f}:{i}" for i in range(1, len(hostile) + 1)]
    assert [p.answer for p in problems] == ["\\infty", "inf", "nan", "-\\infty", " 7 ", "0",
                                            "-2.5"]
    assert [p.line for p in problems] == list(range(len(hostile) + 1, len(hostile) + 8))
