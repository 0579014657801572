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
