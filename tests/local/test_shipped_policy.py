"""The shipped warmed-up policy: found by its recipe's key (no training), a changed recipe
trains as before, `prpo-local warmup --rebuild` compares a rebuild with it, and the package holds
the default recipe's policy. Every recipe here is the tests' tiny one, never the real warm-up."""
import dataclasses
import json
from pathlib import Path

import pytest

from prpo_openrlhf.local import warmup as W
from prpo_openrlhf.local.task import TaskConfig
from tests.local.conftest import TINY, TINY_FLAGS


class Trained(Exception):
    pass


def _no_training(*_a, **_k):
    raise Trained("the warm-up was trained")


@pytest.fixture(scope="module")
def shipped_tiny(cache_dir, tmp_path_factory):
    """The tests' tiny warm-up, shipped into a temporary package folder."""
    _, path = cache_dir
    root = tmp_path_factory.mktemp("shipped")
    cfg = TINY
    W.ship(path, cfg, root, full_eval=8, log=lambda *_: None)
    return root, cfg


def test_ship_records_recipe_version_hash_and_accuracies(shipped_tiny):
    root, cfg = shipped_tiny
    dest = root / cfg.key()
    info = json.loads((dest / "warmup.json").read_text())
    assert info["key"] == cfg.key() and info["config"]["steps"] == TINY.steps
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
    for change in (dict(steps=TINY.steps + 1), dict(p_err=0.2), dict(task=TaskConfig(n_ops=(3, 4)))):
        cfg = dataclasses.replace(TINY, **change)
        with pytest.raises(Trained):
            W.warmed_up_policy(cfg, root=tmp_path, log=lambda *_: None)


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
    rc = main(["warmup", "--rebuild", "--local.no_progress", *TINY_FLAGS])
    out = capsys.readouterr().out
    assert rc == 1 and "differs from the shipped policy" in out and "-25.0%" in out


def test_warmup_cli_prints_the_policy_path(cache_dir, capsys):
    from prpo_openrlhf.local.__main__ import main

    root, path = cache_dir
    rc = main(["warmup", "--local.no_progress", *TINY_FLAGS])
    assert rc == 0 and capsys.readouterr().out.strip().endswith(path)


def test_the_package_ships_the_default_recipe():
    cfg = W.WarmupConfig()
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
