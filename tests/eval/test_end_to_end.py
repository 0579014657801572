"""prpo-eval end to end on 5 problems with the tiny LM, through vLLM CPU and through HF."""
import os
import subprocess
import sys

import pytest

from prpo_openrlhf.cli.evaluate import main

from .helpers import keys, records, results, texts

# 25 seeded and greedy requests whose prompts overflow one 4096-token prefill batch: on vLLM's
# CPU build this crashed with chunked prefill ("CPU Generator does not use offset").
ARGS = ["--benchmarks", "math500,amc23", "--limit", "5", "--n_samples", "4",
        "--max_new_tokens", "16", "--pass_k", "1,2,8"]


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, tiny_lm_path, vllm_backend):
    out = tmp_path_factory.mktemp("vllm_run")
    rc = main(["--model", tiny_lm_path, "--output_dir", str(out), *ARGS], backend=vllm_backend)
    return rc, out


def _check_run(out, backend):
    res = results(out)
    m, a = res["benchmarks"]["math500"], res["benchmarks"]["amc23"]
    assert (m["n_problems"], m["n_samples"], m["metric"]) == (5, 1, "pass@1")
    assert (a["n_problems"], a["n_samples"], a["metric"]) == (5, 4, "mean@4")
    assert a["settings"] == {"model": res["model"], "backend": backend,
                             "prompt_template": "qwen_math_chat", "max_new_tokens": 16,
                             "greedy": False, "temperature": 0.7, "top_p": 0.9, "seed": 42}
    assert m["settings"]["greedy"] and m["settings"]["temperature"] is None
    # pass@8 cannot come from 4 samples: missing with the reason, never estimated.
    assert a["pass_at_k"]["8"] == {"value": None,
                                   "reason": "needs n >= 8 samples per problem; this run has n = 4"}
    assert a["pass_at_k"]["1"]["value"] == pytest.approx(a["accuracy"])
    recs = records(out)
    assert len(recs) == 5 + 20 and len(set(keys(out))) == 25
    assert all(1 <= r["num_tokens"] <= 16 for r in recs)
    assert {r["seed"] is None for r in recs if r["benchmark"] == "math500"} == {True}
    # The reported accuracy is the grader's verdicts on exactly these samples.
    grades = [g["correct"] for g in records(out, "grades.jsonl") if g["benchmark"] == "amc23"]
    assert len(grades) == 20 and a["accuracy"] == pytest.approx(sum(grades) / 20)
    assert (out / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vllm_end_to_end(vllm_run):
    rc, out = vllm_run
    assert rc == 0
    _check_run(out, "vllm")
    md = (out / "results.md").read_text()
    label = results(out)["label"]
    assert "| model | MATH500 pass@1 | AMC23 mean@4 |" in md
    assert f"| AMC23 | {label} |" in md and "| pass@1 | pass@2 | pass@8 | average |" in md


def test_hf_end_to_end_agrees_with_vllm_on_greedy(vllm_run, tiny_lm_path, tmp_path):
    out = tmp_path / "hf"
    rc = main(["--model", tiny_lm_path, "--output_dir", str(out), "--backend", "hf",
               "--hf_batch_size", "16", *ARGS])
    assert rc == 0
    _check_run(out, "hf")
    # Same prompt ids, same greedy decoding: the two backends should write the same text
    # (the trailing partial UTF-8 byte is dropped by vLLM's detokenizer, kept by HF's).
    hf, vl = texts(out), texts(vllm_run[1])
    same = sum(hf[("math500", p, 0)].rstrip("\ufffd") == vl[("math500", p, 0)].rstrip("\ufffd")
               for p in range(5))
    assert same >= 4


@pytest.mark.slow
def test_console_script_with_vllm(tiny_lm_path, tmp_path):
    # The installed entry point in a fresh process: argument parsing, engine construction on
    # CPU, generation, grading, report (the other tests share one engine across runs).
    exe = os.path.join(os.path.dirname(sys.executable), "prpo-eval")
    out = tmp_path / "cli"
    proc = subprocess.run([exe, "--model", tiny_lm_path, "--output_dir", str(out),
                           "--benchmarks", "math500,amc23", "--limit", "2", "--n_samples", "2",
                           "--max_new_tokens", "8"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| model | MATH500 pass@1 | AMC23 mean@2 |" in proc.stdout
    assert len(records(out)) == 2 + 4
