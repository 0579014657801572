"""prpo-local's OpenRLHF --logger.* flags: TensorBoard and W&B get metrics.jsonl's scalars."""
import re
import sys

import pytest

from prpo_openrlhf.local.config import TrainConfig, UsageError
from prpo_openrlhf.local.tracking import Trackers, TrackingConfig
from tests.local.conftest import TINY


def _train(out, tracking, **kw):
    from prpo_openrlhf.local.trainer import LocalTrainer

    cfg = TrainConfig(**{**TINY, "output_dir": str(out), "eval_problems": 4, "eval_samples": 1, **kw})
    return LocalTrainer(cfg, log=lambda *_: None, tracking=tracking).train()


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)], read by TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_every_scalar_of_metrics_jsonl(cache_dir, tmp_path):
    tracking = TrackingConfig(tensorboard_dir=str(tmp_path / "tb"), wandb_run_name="tiny")
    records = _train(tmp_path / "run", tracking, num_steps=2)
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for k, v in r.items():
            if k != "step":
                expected.setdefault(k, []).append((r["step"], v))
    assert {"train/accuracy", "train/loss", "time/step", "eval/accuracy", "eval/sampled_accuracy"} <= set(expected)
    got = _scalars(tmp_path / "tb" / "tiny")  # OpenRLHF's layout: <tensorboard_dir>/<run_name>
    assert set(got) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32


def _log_steps(tracking, steps, start_step=0, value=0.0):
    trackers = Trackers(tracking)
    trackers.open({}, start_step, log=lambda *_: None)
    for s in steps:
        if s % 2 == 0:
            trackers.log({"step": s, "eval/accuracy": value + s}, every_step=True)
        trackers.log({"step": s, "train/accuracy": value + s, "time/step": 1.0})
    trackers.close()


def test_logging_steps_thins_train_steps_and_keeps_evaluations(tmp_path):
    # OpenRLHF logs when global_step % logging_steps == 0, global_step counting finished steps
    # from 1: our 0-based steps 2, 5, 8 with logging_steps 3.
    _log_steps(TrackingConfig(tensorboard_dir=str(tmp_path), wandb_run_name="r", logging_steps=3), range(9))
    got = _scalars(tmp_path / "r")
    assert [s for s, _ in got["train/accuracy"]] == [2, 5, 8] == [s for s, _ in got["time/step"]]
    assert [s for s, _ in got["eval/accuracy"]] == [0, 2, 4, 6, 8]


def test_resumed_run_hides_the_events_after_its_checkpoint(tmp_path):
    tracking = TrackingConfig(tensorboard_dir=str(tmp_path), wandb_run_name="r")
    _log_steps(tracking, range(4))  # "crashed" after step 3, checkpoint at 2
    _log_steps(tracking, range(2, 4), start_step=2, value=100.0)
    got = _scalars(tmp_path / "r")
    assert got["train/accuracy"] == [(0, 0.0), (1, 1.0), (2, 102.0), (3, 103.0)]


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline, every file of it under tmp_path, no credentials of the machine."""
    wandb = pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    wandb.teardown()  # settings are read once per process: start from these
    yield tmp_path / "wandb_home"
    wandb.teardown()


def test_wandb_offline_writes_a_run_with_the_metrics(cache_dir, tmp_path, wandb_offline):
    key = "test-key-that-must-not-be-logged"
    tracking = TrackingConfig(wandb_key=key, wandb_project="prpo-local-test", wandb_run_name="tiny")
    _train(tmp_path / "run", tracking, num_steps=2, eval_steps=0)
    import wandb

    wandb.teardown()  # run.finish() does not wait for wandb's service to write the file; this does
    (run_dir,) = (wandb_offline / "wandb").glob("offline-run-*")
    (events,) = run_dir.glob("*.wandb")
    raw = events.read_bytes()
    for name in (b"train/accuracy", b"train/loss", b"time/step", b"eval/accuracy", b"prpo-local-test"):
        assert name in raw, name
    assert key.encode() not in raw  # not in the run's config
    assert not (tmp_path / "netrc").exists()


def test_trackers_that_cannot_start_fail_before_anything_loads(tmp_path, monkeypatch):
    from prpo_openrlhf.local.trainer import LocalTrainer

    def make(**tracking):
        return LocalTrainer(TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run")}), log=lambda *_: None,
                            tracking=TrackingConfig(**tracking))

    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=re.escape(f"--logger.tensorboard_dir {tmp_path / 'file' / 'tb'}: "
                                                   "cannot write to")):
        make(tensorboard_dir=str(tmp_path / "file" / "tb"))
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(UsageError, match=r"--logger.wandb.key needs the wandb package \(pip install wandb\)"):
        make(wandb_key="k")
    with pytest.raises(UsageError, match="--logger.logging_steps must be >= 1"):
        make(logging_steps=0)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_cli_takes_openrlhfs_logger_flags():
    from prpo_openrlhf.local.__main__ import build_parser
    from prpo_openrlhf.local.tracking import tracking_from_args

    defaults = tracking_from_args(build_parser().parse_args(["train"]))
    assert (defaults.tensorboard_dir, defaults.wandb_key, defaults.wandb_org, defaults.wandb_group,
            defaults.wandb_project, defaults.logging_steps) == (None, None, None, None, "openrlhf_train_ppo", 1)
    assert re.fullmatch(r"ppo_\d{4}T\d\d:\d\d", defaults.wandb_run_name)
    args = build_parser().parse_args([
        "train", "--logger.tensorboard_dir", "tb", "--logger.wandb.key", "k", "--logger.wandb.org", "o",
        "--logger.wandb.group", "g", "--logger.wandb.project", "p", "--logger.wandb.run_name", "r",
        "--logger.logging_steps", "5"])
    assert tracking_from_args(args) == TrackingConfig("tb", "k", "o", "g", "p", "r", 5)
