"""prpo-local end to end on CPU with a tiny warmed-up policy: training steps, metrics, resume.

The tiny warm-up (``TINY``, fixture ``cache_dir``) is in conftest.py. The default-size warm-up
is exercised by `prpo-local train` itself (see docs/local.md).
"""
import json
import re

import pytest
import torch

from prpo_openrlhf.local import runlog
from prpo_openrlhf.local.config import TrainConfig, UsageError
from tests.local.conftest import TINY


def _train(out, **kw):
    from prpo_openrlhf.local.trainer import LocalTrainer

    cfg = TrainConfig(**{**TINY, "output_dir": str(out), **kw})
    trainer = LocalTrainer(cfg, log=lambda *_: None)
    trainer.train()
    return trainer


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_three_steps_change_the_policy_and_write_metrics(cache_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    _, warm_path = cache_dir
    before = _params(AutoModelForCausalLM.from_pretrained(warm_path, dtype=torch.float32))
    trainer = _train(tmp_path / "run", num_steps=3)
    after = _params(trainer.policy)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    recs = runlog.read_metrics(tmp_path / "run")
    train = [r for r in recs if "train/accuracy" in r]
    evals = [r for r in recs if "eval/accuracy" in r]
    assert [r["step"] for r in train] == [0, 1, 2]
    assert [r["step"] for r in evals] == [0, 2, 3]
    for r in train:
        assert 0.0 <= r["train/accuracy"] <= 1.0 and r["train/response_length"] > 0
        assert r["train/segments"] >= 1 and 0.0 <= r["train/process_score"] <= 1.0
        assert torch.isfinite(torch.tensor([r["train/loss"], r["train/kl"], r["train/grad_norm"]])).all()
    for name in (runlog.CKPT, runlog.CURVE, "config.json", "policy/config.json"):
        assert (tmp_path / "run" / name).exists(), name


def test_resume_reproduces_the_uninterrupted_run(cache_dir, tmp_path):
    straight = _train(tmp_path / "a", num_steps=4)
    _train(tmp_path / "b", num_steps=2)
    resumed = _train(tmp_path / "b", num_steps=4, resume=True)
    a, b = _params(straight.policy), _params(resumed.policy)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    def train_records(path):
        return [(r["step"], r["train/accuracy"], r["train/response_length"])
                for r in runlog.read_metrics(path) if "train/accuracy" in r]

    assert train_records(tmp_path / "b") == train_records(tmp_path / "a")  # no step twice, none lost
    assert json.loads((tmp_path / "b" / "config.json").read_text())["num_steps"] == 4


def test_run_directory_guards(cache_dir, tmp_path):
    from prpo_openrlhf.local.trainer import LocalTrainer

    with pytest.raises(UsageError, match="no checkpoint"):
        LocalTrainer(TrainConfig(**{**TINY, "output_dir": str(tmp_path / "none"), "resume": True}))
    _train(tmp_path / "run", num_steps=1)
    with pytest.raises(UsageError, match="already holds a run"):
        LocalTrainer(TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), "num_steps": 2}))
    with pytest.raises(UsageError, match="--algo.advantage.estimator 'prpo'"):
        LocalTrainer(TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), "num_steps": 2,
                                    "resume": True, "estimator": "group_norm"}), log=lambda *_: None)
    _train(tmp_path / "two", num_steps=2)
    before = (tmp_path / "two" / "metrics.jsonl").read_text()
    with pytest.raises(UsageError, match="has trained 2 steps, more than --local.num_steps 1"):
        LocalTrainer(TrainConfig(**{**TINY, "output_dir": str(tmp_path / "two"), "num_steps": 1, "resume": True}),
                     log=lambda *_: None)
    assert (tmp_path / "two" / "metrics.jsonl").read_text() == before  # nothing dropped


def test_flag_checks_name_the_flags():
    from prpo_openrlhf.local.config import check

    with pytest.raises(UsageError, match="--rollout.n_samples_per_prompt must be > 1"):
        check(TrainConfig(n_samples_per_prompt=1))
    with pytest.raises(UsageError, match="--train.batch_size 48 must divide"):
        check(TrainConfig(train_batch_size=48))
    with pytest.raises(UsageError, match="--prpo.entropy_source vllm needs --local.engine vllm"):
        check(TrainConfig(entropy_source="vllm", engine="hf"))
    assert TrainConfig(estimator="grpo").estimator == "group_norm"


def test_cli_train_help_and_bad_flags(capsys):
    from prpo_openrlhf.local.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--algo.advantage.estimator ESTIMATOR grpo (= group_norm)" in text
    assert "(default: prpo)" in text and text.count("(default: prpo)") == 1  # shown once, by argparse
    assert "--local.no_progress no progress bar --" in text  # a switch: no "(default: True)"
    assert "(default: True)" not in text and "(default: False)" not in text
    assert main(["train", "--prpo.split", "sentences", "--local.num_steps", "1"]) == 2
    assert "--prpo.split 'sentences'" in capsys.readouterr().err


def test_a_real_prm_and_model_path_take_the_verifiers_place(cache_dir, tmp_path, tiny_lm_path, tiny_prm_path):
    """--model / --prm accept HF paths: here the random tiny policy and PRM checkpoints."""
    trainer = _train(tmp_path / "run", num_steps=1, model=tiny_lm_path, prm=tiny_prm_path, max_new_tokens=16)
    assert trainer.system_prompt is not None  # a --model run gets the paper's system prompt
    train = [r for r in runlog.read_metrics(tmp_path / "run") if "train/accuracy" in r]
    assert len(train) == 1 and 0.0 <= train[0]["train/process_score"] <= 1.0


def test_compare_runs_every_method_on_the_same_budget_and_reports(cache_dir, tmp_path, capsys):
    from prpo_openrlhf.local.__main__ import main

    out = tmp_path / "cmp"
    argv = ["compare", "--compare.methods", "GRPO,PRPO,process-only", "--compare.output_dir", str(out),
            "--compare.seeds", "0", "--compare.prm_noise", "0.5,0.1", "--local.n_ops", "2,3",
            "--local.num_steps", "2", "--eval.steps", "1", "--local.eval_problems", "8", "--local.eval_samples", "1",
            "--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "4", "--train.batch_size", "8",
            "--rollout.max_new_tokens", "34", "--local.engine", "hf", "--local.no_progress",
            "--warmup.steps", str(TINY["warmup_steps"]), "--warmup.hidden_size", str(TINY["warmup_hidden_size"]),
            "--warmup.num_layers", str(TINY["warmup_num_layers"])]
    assert main(argv) == 0
    text = (out / "compare.md").read_text()
    for name in ("GRPO", "PRPO", "process-only", "(start: warmed-up policy)"):
        assert f"| {name} |" in text
    assert (out / "compare.png").exists() and (out / "compare_noisy.png").exists()
    clean, noisy = text.split("## noisy PRM")
    assert "steps to +10 points sampled" in clean and "evaluations above / below GRPO" in clean and "| PRPO |" in noisy
    # GRPO uses no process scores: its noisy-arm row is the clean run, not a second training.
    assert not (out / "noisy-prm" / "grpo").exists() and (out / "noisy-prm" / "prpo" / "seed0").exists()
    noisy_train = [r for r in runlog.read_metrics(out / "noisy-prm" / "prpo" / "seed0") if "train/accuracy" in r]
    assert noisy_train and all(r["train/prm_noise_flipped"] > 0 for r in noisy_train)
    def step0_eval(method):
        return {k: v for k, v in runlog.read_metrics(out / method / "seed0")[0].items() if not k.startswith("time/")}

    assert step0_eval("grpo") == step0_eval("prpo")  # the same start policy, evaluated the same way
    assert main(argv) == 0  # finished runs are reused, not retrained
    assert "finished earlier" in capsys.readouterr().out
    assert main(argv + ["--actor.adam.lr", "1e-3"]) == 2  # ... but not under other settings
    assert "--actor.adam.lr" in capsys.readouterr().err
    # A shorter comparison reuses the first steps of the longer runs and reports their step-1 figures.
    assert main(argv + ["--local.num_steps", "1"]) == 0
    step1 = next(r for r in runlog.read_metrics(out / "prpo" / "seed0") if r["step"] == 1 and "eval/accuracy" in r)
    final = json.loads((out / "compare.json").read_text())["clean"]["results"]["PRPO"][0]
    assert final["sampled_accuracy"] == step1["eval/sampled_accuracy"] and final["curve"][-1][0] == 1
    assert [x[0] for x in final["length_curve"]] == [0]  # the 1 step a 1-step run trains
    # ... unless the LR schedule depends on the run's length
    assert main(argv + ["--local.num_steps", "1", "--actor.lr_scheduler", "cosine_with_min_lr"]) == 2
    assert "--local.num_steps" in capsys.readouterr().err


@pytest.mark.parametrize("overrides", [
    {"estimator": "dr_grpo"}, {"estimator": "prm_avg"}, {"estimator": "prm_avg_prpo"}, {"estimator": "pure"},
    {"estimator": "process_only"}, {"split": "uniform"}, {"split": "random"}, {"split": "newline"},
    {"normalization": "relative"}, {"verifier_mode": "graded"},
], ids=lambda o: "-".join(map(str, o.values())))
def test_every_estimator_and_split_takes_a_step(cache_dir, tmp_path, overrides):
    _train(tmp_path / "run", num_steps=1, eval_steps=0, eval_problems=4, eval_samples=1, **overrides)
    (step,) = [r for r in runlog.read_metrics(tmp_path / "run") if "train/accuracy" in r]
    assert torch.isfinite(torch.tensor([step["train/loss"], step["train/advantage_abs"]])).all()


def test_cosine_lr_schedule_reaches_the_optimizer(cache_dir, tmp_path):
    from prpo_openrlhf.local.config import lr_factor

    cfg = _train(tmp_path / "run", num_steps=2, eval_steps=0, eval_problems=4, eval_samples=1,
                 lr_scheduler="cosine_with_min_lr", lr_warmup_ratio=0.0, min_lr_ratio=0.1).cfg
    steps = [r for r in runlog.read_metrics(tmp_path / "run") if "train/lr" in r]
    per_step = cfg.max_epochs * cfg.prompts_per_step * cfg.n_samples_per_prompt // cfg.train_batch_size
    total = cfg.num_steps * per_step
    expected = [cfg.lr * lr_factor(cfg, (s + 1) * per_step - 1, total) for s in range(cfg.num_steps)]
    assert [r["train/lr"] for r in steps] == pytest.approx(expected)
    assert expected[-1] < expected[0]


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "the checkpoint is empty"),
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a readable prpo-local checkpoint"),
    (lambda p: torch.save({"evil": "not ours"}, p), "not a prpo-local checkpoint (missing"),
])
def test_damaged_checkpoint_is_a_named_error_on_resume(cache_dir, tmp_path, damage, message):
    from prpo_openrlhf.local.trainer import LocalTrainer

    _train(tmp_path / "run", num_steps=1)
    ckpt = tmp_path / "run" / runlog.CKPT
    damage(ckpt)
    with pytest.raises(UsageError, match=re.escape(message)) as err:
        LocalTrainer(TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), "num_steps": 2, "resume": True}),
                     log=lambda *_: None)
    assert str(ckpt) in str(err.value)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / runlog.CKPT).write_bytes(b"")
    torch.save({"policy": Payload()}, tmp_path / runlog.CKPT)
    with pytest.raises(UsageError, match="not a readable prpo-local checkpoint"):
        runlog.load_checkpoint(tmp_path, policy=None, optimizer=None)
    assert not (tmp_path / "pwned").exists()


def test_truncated_last_metrics_line_is_dropped_and_a_bad_middle_line_named(tmp_path):
    path = tmp_path / runlog.METRICS
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "train/acc')
    assert runlog.read_metrics(tmp_path) == [{"step": 0}, {"step": 1}]
    runlog.truncate_metrics(tmp_path, 2)
    assert path.read_text() == '{"step": 0}\n{"step": 1}\n'
    path.write_text('{"step": 0}\n{garbage\n{"step": 2}\n')
    with pytest.raises(UsageError, match=f"{path}:2: unreadable metrics record"):
        runlog.read_metrics(tmp_path)


def test_resume_with_another_length_under_a_length_dependent_lr_schedule_is_refused(cache_dir, tmp_path):
    """#24 item 7: cosine_with_min_lr stretches with --local.num_steps, so resuming a 1-step run
    as a 2-step one would jump the LR back up; the resume is refused naming both values, as
    `compare` refuses to reuse such a run (one check: config.diff)."""
    from prpo_openrlhf.local.trainer import LocalTrainer

    cosine = dict(lr_scheduler="cosine_with_min_lr", lr_warmup_ratio=0.0, min_lr_ratio=0.1, eval_steps=0,
                  eval_problems=4, eval_samples=1, save_steps=1)
    _train(tmp_path / "run", num_steps=1, **cosine)
    before = (tmp_path / "run" / runlog.CKPT).read_bytes()
    with pytest.raises(UsageError, match=re.escape("--local.num_steps 1 (now 2)")) as err:
        LocalTrainer(TrainConfig(**{**TINY, **cosine, "output_dir": str(tmp_path / "run"), "num_steps": 2,
                                    "resume": True}), log=lambda *_: None)
    assert "cosine_with_min_lr" in str(err.value)
    assert (tmp_path / "run" / runlog.CKPT).read_bytes() == before


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4544 vs 4432"),
], ids=["ENOSPC", "torch-short-write"])
def test_a_full_disk_at_a_checkpoint_is_one_named_line_and_the_previous_checkpoint_kept(
        cache_dir, tmp_path, monkeypatch, capsys, failure):
    """#24 item 6. A full disk cannot be made in a test: ``torch.save`` writes part of the file
    and then raises what it raises on a full disk (ENOSPC, or torch's own short-write error)."""
    from prpo_openrlhf.local.__main__ import main

    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *a, **kw):
        calls.append(f)
        if len(calls) == 1:
            return real_save(obj, f, *a, **kw)
        open(f, "wb").write(b"PK\x03\x04 half a checkpoint")
        raise failure

    monkeypatch.setattr(torch, "save", save)
    argv = ["train", "--ckpt.output_dir", str(out), "--local.num_steps", "2", "--ckpt.save_steps", "1",
            "--eval.steps", "0", "--local.eval_problems", "4", "--local.eval_samples", "1",
            "--local.n_ops", TINY["n_ops"], "--rollout.batch_size", "4", "--rollout.n_samples_per_prompt", "4",
            "--train.batch_size", "8", "--rollout.max_new_tokens", "34", "--local.engine", "hf",
            "--local.no_progress", "--warmup.steps", str(TINY["warmup_steps"]),
            "--warmup.hidden_size", str(TINY["warmup_hidden_size"]),
            "--warmup.num_layers", str(TINY["warmup_num_layers"])]
    assert main(argv) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("prpo-local")]  # the rest: progress bars
    assert "Traceback" not in err
    assert line.startswith(f"prpo-local train: error: {out / runlog.CKPT}: no space left on device (")
    assert "the previous checkpoint.pt is kept" in line
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(out / runlog.CKPT, weights_only=True)["next_step"] == 1  # step 1's, whole
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary left
