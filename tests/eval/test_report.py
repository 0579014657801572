"""Grading and reporting on hand-written generations: known verdicts, tables, cached regrades."""
import json

import pytest

from prpo_openrlhf.cli.evaluate import main
from prpo_openrlhf.eval.store import text_sha

from .helpers import results

PROBLEMS = [("What is 20+7?", "27.0"), ("What is 1/2 as a fraction?", "\\frac{1}{2}"),
            ("What is 3*3?", "9")]
# Sampled benchmark "toy", 4 samples per problem: 4, 1 and 0 of them correct.
TOY = [["The sum is \\boxed{27}."] * 4,
       ["So \\boxed{\\frac{1}{2}}", "\\boxed{0.3}", "no answer", "\\boxed{2}"],
       ["\\boxed{6}", "\\boxed{8}", "\\boxed{10}", "I give up"]]
# Greedy benchmark "toyg": one sample per problem, the first two correct.
TOYG = ["\\boxed{27}", "\\boxed{0.5}", "\\boxed{3}"]


def _write_set(path, problems):
    path.write_text("".join(json.dumps({"problem": q, "answer": a}) + "\n" for q, a in problems))


def _gen(bench, p, s, text):
    return {"benchmark": bench, "problem": p, "sample": s, "problem_sha": text_sha(PROBLEMS[p][0]),
            "seed": None, "text": text, "num_tokens": 10, "finish_reason": "stop"}


@pytest.fixture
def hand_run(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    _write_set(data / "toy.jsonl", PROBLEMS)
    _write_set(data / "toyg.jsonl", PROBLEMS)
    recs = [_gen("toy", p, s, t) for p, row in enumerate(TOY) for s, t in enumerate(row)]
    recs += [_gen("toyg", p, 0, t) for p, t in enumerate(TOYG)]
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    argv = ["--model", "never-loaded", "--label", "hand", "--data_dir", str(data),
            "--benchmarks", "toyg,toy", "--greedy_benchmarks", "toyg", "--n_samples", "4",
            "--pass_k", "1,2,4,8", "--output_dir", str(out)]
    return data, out, argv


def test_grades_and_tables_from_known_generations(hand_run, capsys):
    data, out, argv = hand_run
    assert main(argv) == 0  # every sample is stored: no model is loaded
    res = results(out)
    toy, toyg = res["benchmarks"]["toy"], res["benchmarks"]["toyg"]
    assert [p["correct"] for p in toy["per_problem"]] == [4, 1, 0]
    assert [p["correct"] for p in toyg["per_problem"]] == [1, 1, 0]
    assert toy["accuracy"] == pytest.approx((1 + 0.25 + 0) / 3)
    pk = {k: v["value"] for k, v in toy["pass_at_k"].items()}
    # problem 2 (c=1 of 4): pass@2 = 1 - C(3,2)/C(4,2) = 1/2
    assert pk["1"] == pytest.approx(toy["accuracy"])
    assert pk["2"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert pk["4"] == pytest.approx(2 / 3)
    assert pk["8"] is None
    md = capsys.readouterr().out
    assert "| model | toyg pass@1 | toy mean@4 |\n| --- | --- | --- |\n| hand | 66.67 | 41.67 |" in md
    assert "| toy | hand | 41.67 | 50.00 | 66.67 | – | – |" in md
    assert "toy, hand, pass@8: needs n >= 8 samples per problem; this run has n = 4" in md
    assert (out / "results.md").read_text() in md


def test_changed_reference_regrades_only_its_samples(hand_run):
    data, out, argv = hand_run
    assert main(argv) == 0
    fixed = list(PROBLEMS)
    fixed[2] = (PROBLEMS[2][0], "8")  # one sample of problem 3 answered 8
    _write_set(data / "toy.jsonl", fixed)
    assert main(argv) == 0
    toy = results(out)["benchmarks"]["toy"]
    assert toy["grading"] == {"cached": 8, "graded": 4, "timeouts": 0, "screened": 0}
    assert [p["correct"] for p in toy["per_problem"]] == [4, 1, 1]


def test_compare_merges_runs_into_one_table(hand_run, tmp_path, capsys):
    data, out, argv = hand_run
    assert main(argv) == 0
    other = tmp_path / "out2"
    argv2 = [a if a != "hand" else "second" for a in argv]
    argv2[argv2.index(str(out))] = str(other)
    other.mkdir()
    (other / "generations.jsonl").write_bytes((out / "generations.jsonl").read_bytes())
    assert main(argv2) == 0
    capsys.readouterr()
    merged = tmp_path / "merged"
    assert main(["--compare", str(out), str(other), "--output_dir", str(merged)]) == 0
    md = capsys.readouterr().out
    assert "| hand | 66.67 | 41.67 |" in md and "| second | 66.67 | 41.67 |" in md
    assert (merged / "pass_at_k.png").read_bytes()[:4] == b"\x89PNG"
