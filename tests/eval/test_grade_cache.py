"""The grade cache: a verdict is tied to the text it graded; a malformed record is named.

Folders are hand-written (``test_report.hand_run``): every sample is stored, so no model loads.
"""
import json

import pytest

from prpo_openrlhf.cli.evaluate import main

from .helpers import records, results
from .test_report import _gen, hand_run  # noqa: F401  (fixture)


def _append(path, *recs):
    with path.open("a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in recs))


@pytest.mark.parametrize("regrade", [False, True])
def test_a_new_text_for_a_graded_key_is_regraded(hand_run, regrade):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    assert [p["correct"] for p in results(out)["benchmarks"]["toy"]["per_problem"]] == [4, 1, 0]
    # A newer record for toy problem 3, sample 1 (the store's last record wins), now right.
    _append(out / "generations.jsonl", _gen("toy", 2, 1, "3*3 = \\boxed{9}"))
    assert main(argv + (["--regrade"] if regrade else [])) == 0
    toy = results(out)["benchmarks"]["toy"]
    assert [p["correct"] for p in toy["per_problem"]] == [4, 1, 1]
    if not regrade:
        assert toy["grading"]["graded"] == 1 and toy["grading"]["cached"] == 11
    # The stored verdicts name the text they judged.
    assert all(len(g["text_sha"]) == 16 for g in records(out, "grades.jsonl"))


def test_a_verdict_for_another_text_is_not_reused(hand_run):  # noqa: F811
    """A grade line whose text does not match (e.g. appended by hand) is regraded, not trusted."""
    data, out, argv = hand_run
    assert main(argv) == 0
    _append(out / "grades.jsonl", {"benchmark": "toy", "problem": 2, "sample": 0, "answer": "9",
                                   "text_sha": "0" * 16, "correct": True})
    assert main(argv) == 0
    assert [p["correct"] for p in results(out)["benchmarks"]["toy"]["per_problem"]] == [4, 1, 0]


def _without(key, **changed):
    rec = {**_gen("toy", 0, 0, "\\boxed{27}"), **changed}
    rec.pop(key, None)
    return rec


BAD_GENERATIONS = [
    (_without("text"), "'text'"),
    (_without(None, text=None), "'text'"),
    (_without(None, problem="zero"), "'problem'"),
    (_without(None, sample=True), "'sample'"),
    (_without("benchmark"), "'benchmark'"),
    (_without("num_tokens"), "'num_tokens'"),
]


@pytest.mark.parametrize("regrade", [False, True])
@pytest.mark.parametrize("bad,named", BAD_GENERATIONS)
def test_a_malformed_generation_record_is_a_named_error(hand_run, capsys, bad, named, regrade):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    gens = out / "generations.jsonl"
    _append(gens, bad, _gen("toy", 0, 1, "\\boxed{27}"))  # not the last line: no crash artefact
    line = len(gens.read_text().splitlines()) - 1
    capsys.readouterr()
    assert main(argv + (["--regrade"] if regrade else [])) == 2
    err = capsys.readouterr().err
    assert f"{gens}:{line}:" in err and named in err and "Traceback" not in err


def test_a_malformed_grade_record_is_a_named_error(hand_run, capsys):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    grades = out / "grades.jsonl"
    _append(grades, {"benchmark": "toy", "problem": 0, "sample": 0, "answer": "27.0"},
            {"benchmark": "toy", "problem": 0, "sample": 1, "answer": "27.0", "correct": True})
    line = len(grades.read_text().splitlines()) - 1
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{grades}:{line}:" in err and "'correct'" in err
    assert main(argv + ["--regrade"]) == 0  # --regrade does not read the cache
