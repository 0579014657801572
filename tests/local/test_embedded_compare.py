"""The comparison on the real pipeline: its table and verdicts on hand-made runs, its flags, and
(slow) two methods trained through train_prpo_ray end to end and reused on a second call."""
import json

import pytest

from prpo_openrlhf.local import embedded_compare as ec
from prpo_openrlhf.local.embedded_compare import UsageError


def _summary(sampled, greedy=0.9, length=30.0, acc=None, prm=None):
    acc = acc or [0.6] * 20
    scalars = {"train/accuracy": list(enumerate(acc, 1)), "train/response_length": [(i, length) for i in range(1, 21)]}
    if prm is not None:
        scalars["train/prm_score_mean"] = [(i, prm) for i in range(1, 21)]
    return {"end": {"sampled": {"accuracy": sampled, "response_length": length}, "greedy": {"accuracy": greedy}},
            "scalars": scalars}


def test_row_reads_the_final_evaluation_and_the_last_ten_steps():
    acc = [0.5] * 10 + [0.9] * 5 + [0.4] * 5  # peak of the 5-step mean 0.9, last 0.4
    row = ec.row_of(_summary(0.8, 0.7, 25.0, acc, prm=0.55))
    assert row["sampled_accuracy"] == 0.8 and row["accuracy"] == 0.7 and row["response_length"] == 25.0
    assert row["train_accuracy"] == pytest.approx(0.65) and row["prm_score"] == pytest.approx(0.55)
    assert row["train_drop"] == pytest.approx(0.5)
    assert ec.row_of(_summary(0.8))["prm_score"] is None  # GRPO logs no PRM score


def test_orderings_name_what_is_seen_reversed_and_unresolved():
    rows = {"GRPO": [ec.row_of(_summary(0.80, length=30.0))],
            "PRPO": [ec.row_of(_summary(0.85))],
            "PRPO uniform split": [ec.row_of(_summary(0.86))],
            "PRPO random split": [ec.row_of(_summary(0.70))],
            "process-only": [ec.row_of(_summary(0.5, length=12.0))],
            "PRPO relative norm": [ec.row_of(_summary(0.6, acc=[0.9] * 10 + [0.5] * 10))]}
    lines = ec.orderings(rows)
    assert lines[0].startswith("A gap counts when it is larger than 2 points")
    assert lines[1].endswith("PRPO 85.0 vs GRPO 80.0 (+5.0 points, margin 2.0): seen")
    assert lines[2].endswith("PRPO 85.0 vs PRPO uniform split 86.0 (-1.0 points, margin 2.0): "
                             "not resolved (within the margin)")
    assert lines[3].endswith("PRPO uniform split 86.0 vs PRPO random split 70.0 (+16.0 points, margin 2.0): seen")
    assert "12.0 vs GRPO's 30.0 tokens: seen" in lines[4]
    assert "falls 40.0 points from its peak (PRPO's prior normalisation: 0.0): seen" in lines[5]
    assert lines[5].endswith("PRPO 85.0 vs PRPO relative norm 60.0 (+25.0 points, margin 2.0): seen")
    flipped = ec.orderings({"GRPO": [ec.row_of(_summary(0.85))], "PRPO": [ec.row_of(_summary(0.80))]})
    assert flipped[1].endswith("reversed") and len(flipped) == 4  # no process-only / relative rows: not claimed


def test_margin_grows_with_the_seeds_spread():
    rows = {"GRPO": [ec.row_of(_summary(x)) for x in (0.70, 0.80, 0.90)],
            "PRPO": [ec.row_of(_summary(x)) for x in (0.75, 0.85, 0.95)]}
    lines = ec.orderings(rows)
    # pooled sd 0.10 over 3 seeds: 2 * 0.1 * sqrt(2/3) = 16.3 points, so a 5-point gap is not resolved
    assert lines[1].endswith("(+5.0 points, margin 16.3): not resolved (within the margin)")
    # a method run once against one run 3 times: 2 * 0.1 * sqrt(1 + 1/3) = 23.1 points
    rows["PRPO"] = rows["PRPO"][:1]
    assert ec.orderings(rows)[1].endswith("(-5.0 points, margin 23.1): not resolved (within the margin)")
    text = ec.table(rows, {"sampled": {"accuracy": 0.6, "response_length": 40.0}, "greedy": {"accuracy": 0.9}})
    assert "| GRPO | 80.0 ± 10.0 | 90.0 ± 0.0 | 30.0 ± 0.0 |" in text and "| 3 |" in text
    assert "Pooled sd over seeds of the final sampled accuracy: 10.00 points." in text


@pytest.mark.parametrize("argv, message", [
    (["--compare.methods", "GRPO,DPO"], r"unknown \['DPO'\]"),
    (["--compare.prms", "learned,noisy"], "choose from learned, exact"),
    (["--compare.seeds", "1,x"], "comma-separated integers"),
    (["--compare.prompts", "100"], "a multiple of 16"),
])
def test_bad_flags_are_refused_before_anything_runs(argv, message):
    with pytest.raises(UsageError, match=message):
        ec._parse(argv)


def test_a_run_without_process_scores_serves_every_arm(tmp_path):
    assert ec.run_dir(tmp_path, "GRPO", "exact", 1) == ec.run_dir(tmp_path, "GRPO", "learned", 1)
    assert ec.run_dir(tmp_path, "PRPO", "exact", 1) != ec.run_dir(tmp_path, "PRPO", "learned", 1)


def test_a_finished_run_under_other_settings_is_refused(tmp_path):
    out = ec.run_dir(tmp_path, "PRPO", "exact", 1)
    out.mkdir(parents=True)
    script, extra = ec.METHODS["PRPO"]
    (out / "summary.json").write_text(json.dumps({"method": "PRPO", "prm": "exact", "seed": 1, "script": script,
                                                  "extra_args": extra, "eval_problems": 512, "n_prompts": 960}))
    with pytest.raises(UsageError, match=r"other settings \(n_prompts\)"):
        ec.run_one(tmp_path, "PRPO", "exact", 1, {}, {"eval_problems": 512, "n_prompts": 480})


def test_report_reads_every_finished_seed_and_trains_nothing(tmp_path):
    start = {"sampled": {"accuracy": 0.6, "response_length": 30.0}, "greedy": {"accuracy": 0.9}}
    (tmp_path / "eval_start-512.json").write_text(json.dumps(start))
    for method, seed, sampled in (("GRPO", 42, 0.80), ("GRPO", 1, 0.82), ("PRPO", 7, 0.85)):
        out = ec.run_dir(tmp_path, method, "exact", seed)
        out.mkdir(parents=True)
        script, extra = ec.METHODS[method]
        summary = {"method": method, "prm": "none" if method == "GRPO" else "exact", "seed": seed, "script": script,
                   "extra_args": extra, "eval_problems": 512, "n_prompts": 960, **_summary(sampled)}
        (out / "summary.json").write_text(json.dumps(summary))
    ec.run_dir(tmp_path, "PRPO", "exact", 8).mkdir()  # unfinished: left out, and not run
    assert ec.main(["--compare.dir", str(tmp_path), "--compare.prms", "exact", "--compare.report"]) == 0
    rows = json.loads((tmp_path / "compare.json").read_text())["arms"]["exact"]
    assert [r["sampled_accuracy"] for r in rows["GRPO"]] == [0.82, 0.80] and len(rows["PRPO"]) == 1
    assert not (ec.run_dir(tmp_path, "PRPO", "exact", 8) / "train.log").exists()
    assert "seeds (every finished run)" in (tmp_path / "compare.md").read_text()


@pytest.mark.slow
def test_two_methods_train_through_the_real_pipeline_and_are_reused(tmp_path, capsys):
    """GRPO and PRPO (oracle PRM), 5 steps each, through the launch scripts; a second call trains
    nothing and writes the same table."""
    argv = ["--compare.methods", "GRPO,PRPO", "--compare.seeds", "3", "--compare.prms", "exact",
            "--compare.dir", str(tmp_path), "--compare.prompts", "80", "--compare.eval_problems", "32"]
    assert ec.main(argv) == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    rows = result["arms"]["exact"]
    assert set(rows) == {"GRPO", "PRPO"}
    for name, (row,) in rows.items():
        assert 0 <= row["sampled_accuracy"] <= 1 and row["response_length"] > 0
        assert row["train_accuracy"] is not None
    assert rows["GRPO"][0]["prm_score"] is None and 0 < rows["PRPO"][0]["prm_score"] <= 1
    summary = json.loads((tmp_path / "exact" / "prpo" / "seed3" / "summary.json").read_text())
    assert len(summary["scalars"]["train/accuracy"]) == 5
    first = (tmp_path / "compare.md").read_text()
    capsys.readouterr()
    assert ec.main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, reusing") == 2
    assert (tmp_path / "compare.md").read_text() == first
