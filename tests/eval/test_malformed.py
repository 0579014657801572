"""Malformed benchmark rows through the CLI: named by file:line, or skipped and counted."""
import json

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
