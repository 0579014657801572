"""The shipped warmed-up policy: found by its recipe's key (no training), a changed --warmup.* flag
trains as before, `prpo-local warmup --rebuild` compares a rebuild with it, and the package holds
the default recipe's policy. Every recipe here is the tests' tiny one, never the real warm-up."""
import json
from pathlib import Path

import pytest

from prpo_openrlhf.local import warmup as W
from prpo_openrlhf.local.config import TrainConfig
from prpo_openrlhf.local.trainer import warmup_config
from tests.local.conftest import TINY


class Trained(Exception):
    pass


def _no_training(*_a, **_k):
    raise Trained("the warm-up was trained")


@pytest.fixture(scope="module")
def shipped_tiny(cache_dir, tmp_path_factory):
    """The tests' tiny warm-up, shipped into a temporary package folder."""
    _, path = cache_dir
    root = tmp_path_factory.mktemp("shipped")
    cfg = warmup_config(TrainConfig(**TINY))
    W.ship(path, cfg, root, full_eval=8, log=lambda *_: None)
    return root, cfg


def test_ship_records_recipe_version_hash_and_accuracies(shipped_tiny):
    root, cfg = shipped_tiny
    dest = root / cfg.key()
    info = json.loads((dest / "warmup.json").read_text())
    assert info["key"] == cfg.key() and info["config"]["steps"] == TINY["warmup_steps"]
    assert info["task_seed"] == cfg.task_seed and info["warmup_format"] == W.WARMUP_FORMAT
    assert info["code_version"] and info["weights_sha256"] == W.weights_sha256(dest)
    assert info["heldout_full"]["problems"] == 8
    assert 0 <= info["heldout_full"]["greedy"]["accuracy"] <= 1
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in dest.iterdir()}


def test_matching_key_uses_the_shipped_policy_without_training(shipped_tiny, tmp_path, monkeypatch):
    root, cfg = shipped_tiny
    monkeypatch.setattr(W, "SHIPPED_ROOT", root)
    monkeypatch.setattr(W, "_build", _no_training)
    path, info = W.warmed_up_policy(cfg, root=tmp_path / "empty_cache", log=lambda *_: None)
    assert Path(path) == root / cfg.key() and info["key"] == cfg.key()
    assert not (tmp_path / "empty_cache").exists()  # nothing copied, nothing built


def test_a_changed_warmup_flag_trains_a_new_policy(shipped_tiny, tmp_path, monkeypatch):
    root, _ = shipped_tiny
    monkeypatch.setattr(W, "SHIPPED_ROOT", root)
    monkeypatch.setattr(W, "_build", _no_training)
    for change in (dict(warmup_steps=TINY["warmup_steps"] + 1), dict(warmup_p_err=0.2), dict(n_ops="3,4", max_new_tokens=48)):
        cfg = warmup_config(TrainConfig(**{**TINY, **change}))
        with pytest.raises(Trained):
            W.warmed_up_policy(cfg, root=tmp_path, log=lambda *_: None)


def test_trainer_runs_from_the_shipped_policy(shipped_tiny, tmp_path, monkeypatch):
    from prpo_openrlhf.local.trainer import LocalTrainer

    root, cfg = shipped_tiny
    monkeypatch.setattr(W, "SHIPPED_ROOT", root)
    monkeypatch.setattr(W, "_build", _no_training)
    monkeypatch.setenv("PRPO_CACHE_DIR", str(tmp_path / "empty_cache"))
    trainer = LocalTrainer(TrainConfig(**{**TINY, "num_steps": 1, "output_dir": str(tmp_path / "run")}),
                           log=lambda *_: None)
    assert Path(trainer.model_path) == root / cfg.key()
    trainer.train()
    assert W.weights_sha256(root / cfg.key()) == json.loads((root / cfg.key() / "warmup.json").read_text())["weights_sha256"]


def test_rebuild_matches_the_shipped_policy_bit_for_bit(shipped_tiny, tmp_path):
    root, cfg = shipped_tiny
    report = W.rebuild(cfg, root=tmp_path, shipped_root=root, progress=False, log=lambda *_: None)
    assert report["bitwise"] is True and report["greedy_diff"] == 0 and report["sampled_diff"] == 0


def test_rebuild_reports_a_mismatch_and_the_cli_exits_1(shipped_tiny, tmp_path, monkeypatch, capsys):
    from prpo_openrlhf.local.__main__ import main

    root, cfg = shipped_tiny
    other = tmp_path / "shipped"
    (other / cfg.key()).mkdir(parents=True)
    info = json.loads((root / cfg.key() / "warmup.json").read_text())
    info["weights_sha256"] = "0" * 64
    info["heldout_greedy"]["accuracy"] += 0.25
    (other / cfg.key() / "warmup.json").write_text(json.dumps(info))
    monkeypatch.setattr(W, "SHIPPED_ROOT", other)
    monkeypatch.setenv("PRPO_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["warmup", "--rebuild", "--local.no_progress", "--warmup.steps", str(TINY["warmup_steps"]),
               "--warmup.hidden_size", str(TINY["warmup_hidden_size"]), "--warmup.num_layers",
               str(TINY["warmup_num_layers"]), "--local.n_ops", TrainConfig(**TINY).n_ops])
    out = capsys.readouterr().out
    assert rc == 1 and "differs from the shipped policy" in out and "-25.0%" in out


def test_warmup_cli_prints_the_policy_path(cache_dir, capsys):
    from prpo_openrlhf.local.__main__ import main

    root, path = cache_dir
    rc = main(["warmup", "--local.no_progress", "--warmup.steps", str(TINY["warmup_steps"]),
               "--warmup.hidden_size", str(TINY["warmup_hidden_size"]), "--warmup.num_layers",
               str(TINY["warmup_num_layers"]), "--local.n_ops", TrainConfig(**TINY).n_ops])
    assert rc == 0 and capsys.readouterr().out.strip().endswith(path)


def test_the_package_ships_the_default_recipe():
    cfg = warmup_config(TrainConfig())
    found = W.shipped_policy(cfg)
    assert found is not None, f"no shipped policy for the default recipe {cfg.key()} in {W.SHIPPED_ROOT}"
    path, info = found
    path = Path(path)
    assert info["key"] == cfg.key() and info["weights_sha256"] == W.weights_sha256(path)
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "warmup.json"} <= {p.name for p in path.iterdir()}
    assert sum(p.stat().st_size for p in path.iterdir()) < 5 * 2**20
    # Only the default recipe is shipped (the folder is package data: keep it small); the learned
    # PRM's folder (prm-<key>, tests/local/test_prm_recipe.py) sits beside it.
    assert [p.name for p in W.SHIPPED_ROOT.iterdir() if p.is_dir() and not p.name.startswith("prm-")] == [cfg.key()]


def test_wheel_holds_the_shipped_policy(tmp_path):
    """A wheel built from the source holds every file of every shipped policy and of the shipped
    PRM, without setuptools' warning about a directory of package data missing from ``packages``."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside setup.py
    shutil.copytree(repo / "prpo_openrlhf", src / "prpo_openrlhf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "README.md", "MANIFEST.in"):
        shutil.copy(repo / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                           str(src), "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BuildBackendWarning" not in proc.stdout + proc.stderr
    shipped = repo / "prpo_openrlhf" / "local" / "shipped"
    expected = {f.relative_to(repo).as_posix() for f in shipped.glob("*/*") if f.is_file()}
    assert any(p.endswith("model.safetensors") for p in expected)
    assert any("/shipped/prm-" in p and p.endswith("prm.json") for p in expected)  # the learned PRM too
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert expected <= set(zipfile.ZipFile(wheel).namelist())
