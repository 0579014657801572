"""Malformed benchmark rows through the CLI: named by file:line, or skipped and counted."""
import json
import subprocess
import sys

from prpo_openrlhf.cli.evaluate import main

from .helpers import results


def _bench(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join([
        json.dumps({"problem": "What is 1+1?", "answer": "2"}),
        json.dumps({"problem": "What is 2+2?"}),
        "{\"problem\": \"cut off",
        json.dumps({"problem": "What is 3+3?", "answer": 6}),
    ]) + "\n")
    return f


def test_malformed_rows_stop_the_run_with_file_and_line(tmp_path, tiny_lm_path, capsys):
    f = _bench(tmp_path)
    rc = main(["--model", tiny_lm_path, "--benchmarks", str(f), "--output_dir",
               str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{f}:2: missing or empty 'answer'" in err and f"{f}:3: invalid JSON" in err
    assert not (tmp_path / "out" / "generations.jsonl").exists()


def test_skip_bad_rows_evaluates_the_rest(tmp_path, tiny_lm_path, vllm_backend, capsys):
    f = _bench(tmp_path)
    out = tmp_path / "out"
    rc = main(["--model", tiny_lm_path, "--benchmarks", str(f), "--output_dir", str(out),
               "--skip_bad_rows", "--greedy_benchmarks", "mixed", "--max_new_tokens", "8"],
              backend=vllm_backend)
    assert rc == 0
    assert "mixed: skipped 2 malformed row(s)" in capsys.readouterr().err
    res = results(out)["benchmarks"]["mixed"]
    assert (res["n_problems"], res["skipped_rows"]) == (2, 2)
    assert [p["line"] for p in res["per_problem"]] == [1, 4]


def _hostile_bench(tmp_path):
    # Rows a hostile probe found crashing the loader (undecodable bytes, deep nesting) or
    # accepted though no sample could ever be graded correct (NaN, overflow, blank answer).
    f = tmp_path / "hostile.jsonl"
    f.write_bytes(b"\n".join([
        json.dumps({"problem": "What is 1+1?", "answer": "2"}).encode(),
        b'{"problem": "caf\xe9?", "answer": "2"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"problem": "p", "answer": NaN}',
        b'{"problem": "p", "answer": 1e999}',
        b'{"problem": "p", "answer": " \\t "}',
    ]) + b"\n")
    return f


HOSTILE_REASONS = [(2, "not UTF-8 text"), (3, "invalid JSON (nested too deeply)"),
                   (4, "invalid JSON (NaN is not a JSON value)"),
                   (5, "'answer' is not a finite number"), (6, "'answer' is blank")]


def test_hostile_rows_stop_the_run_with_file_and_line(tmp_path, tiny_lm_path, capsys):
    f = _hostile_bench(tmp_path)
    rc = main(["--model", tiny_lm_path, "--benchmarks", str(f), "--output_dir",
               str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "5 malformed row(s)" in err
    for line, reason in HOSTILE_REASONS:
        assert f"{f}:{line}: {reason}" in err, err
    assert not (tmp_path / "out" / "generations.jsonl").exists()


def test_hostile_rows_exit_2_without_traceback_in_a_fresh_process(tmp_path, tiny_lm_path):
    f = _hostile_bench(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "prpo_openrlhf.cli.evaluate", "--model",
                           tiny_lm_path, "--benchmarks", str(f), "--output_dir",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert all(f"{f}:{line}: {reason}" in proc.stderr for line, reason in HOSTILE_REASONS)
