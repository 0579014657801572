"""Resume: an interrupted run loses nothing and a rerun never regenerates a finished sample."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from prpo_openrlhf.cli.evaluate import main

from .helpers import keys, lines, results, texts

ARGS = ["--benchmarks", "math500,amc23", "--limit", "5", "--n_samples", "4",
        "--max_new_tokens", "16", "--pass_k", "1,2,4,8"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_lm_path, vllm_backend):
    out = tmp_path_factory.mktemp("full")
    assert main(["--model", tiny_lm_path, "--output_dir", str(out), *ARGS],
                backend=vllm_backend) == 0
    return out


def test_interrupted_run_resumes_to_the_same_samples(full_run, tiny_lm_path, vllm_backend,
                                                     tmp_path):
    out = tmp_path / "run"
    argv = ["--model", tiny_lm_path, "--output_dir", str(out), *ARGS]
    assert main(argv + ["--max_samples_this_run", "7"], backend=vllm_backend) == 3
    first = lines(out)
    assert len(first) == 7 and not (out / "results.json").exists()
    assert main(argv, backend=vllm_backend) == 0
    assert lines(out)[:7] == first                      # finished samples untouched
    assert sorted(keys(out)) == sorted(keys(full_run))  # each sample exactly once
    assert results(out)["generated_this_run"] == 25 - 7
    # One seed per sample: the resumed run drew exactly what an uninterrupted run drew.
    assert texts(out) == texts(full_run)


def test_rerun_of_a_finished_run_generates_nothing(full_run, tiny_lm_path, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run, out)
    before = (out / "generations.jsonl").read_bytes()
    # No backend is passed: generating anything would have to start a second engine.
    assert main(["--model", tiny_lm_path, "--output_dir", str(out), *ARGS]) == 0
    assert (out / "generations.jsonl").read_bytes() == before
    res = results(out)
    assert res["generated_this_run"] == 0
    assert res["benchmarks"]["amc23"]["grading"]["cached"] == 20
    assert res["benchmarks"]["amc23"]["grading"]["graded"] == 0


def test_more_samples_extend_a_finished_run(full_run, tiny_lm_path, vllm_backend, tmp_path):
    out = tmp_path / "more"
    shutil.copytree(full_run, out)
    args = list(ARGS)
    args[args.index("--n_samples") + 1] = "6"
    assert main(["--model", tiny_lm_path, "--output_dir", str(out), *args],
                backend=vllm_backend) == 0
    old, new = texts(full_run), texts(out)
    assert all(new[k] == v for k, v in old.items())
    assert len(new) == len(old) + 5 * 2
    amc = results(out)["benchmarks"]["amc23"]
    assert amc["metric"] == "mean@6" and amc["pass_at_k"]["4"]["value"] is not None
    assert amc["pass_at_k"]["8"]["value"] is None


def test_changed_sampling_flag_is_refused(full_run, tiny_lm_path, tmp_path, capsys):
    out = tmp_path / "changed"
    shutil.copytree(full_run, out)
    argv = ["--model", tiny_lm_path, "--output_dir", str(out), *ARGS, "--temperature", "1.0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--temperature: stored 0.7, now 1.0" in err and "amc23" in err


def test_killed_process_loses_no_finished_sample(tiny_lm_path, tmp_path):
    out = tmp_path / "killed"
    argv = ["--model", tiny_lm_path, "--output_dir", str(out), "--backend", "hf",
            "--benchmarks", "amc23", "--limit", "5", "--n_samples", "6",
            "--max_new_tokens", "16", "--pass_k", "1,4"]
    # One sample per generate call keeps the process busy long enough to be killed mid-run.
    proc = subprocess.Popen([sys.executable, "-m", "prpo_openrlhf.cli.evaluate", *argv,
                             "--hf_batch_size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gen = out / "generations.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if gen.exists() and len(gen.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    survived = lines(out)
    assert 3 <= len(survived) < 30
    with gen.open("a") as fh:  # and as if it had died in the middle of writing a record
        fh.write('{"benchmark": "amc23", "problem": 4, "sam')
    assert main(argv + ["--hf_batch_size", "16"]) == 0  # batch size is not a sample setting
    assert lines(out)[:len(survived)] == survived
    assert sorted(keys(out)) == [("amc23", p, s) for p in range(5) for s in range(6)]
    assert results(out)["generated_this_run"] == 30 - len(survived)
    assert all(json.loads(x) for x in lines(out))
