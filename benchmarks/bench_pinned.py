"""The PRM's cost as a cluster sees it: the PRM on a core of its own, the rest of the training on another.

On a cluster the PRM has GPUs of its own; on one CPU machine its compute would compete with
vLLM's and DeepSpeed's for the same cores, and the step time would mix that competition with
the time the trainer really waits for scores. This benchmark models the split:
- this process pins itself to --train-cpus (default "0") before it starts anything, so the
  private Ray head, its workers, the job's driver, the DeepSpeed actors and the vLLM engine
  inherit that core;
- PRPO's PRM actor moves itself to --prm-cpus (default "1") when it starts (PRPO_PRM_CPUS,
  prm/ray_group.py; vLLM's CPU thread binding follows the allowed cores).
GRPO runs the same way and never uses the PRM's core. What it does not model: memory
bandwidth and caches are still shared, and a cluster's PRM sits across a network.

Three trainings sharing one PRM server (the paper: 84.0 s per step against 80.8 s alone):
"PRPO server" is one training against examples/scripts/serve_prm.sh (vLLM's server, continuous
batching across requests) pinned to --prm-cpus; "PRPO server x3" is three trainings at once on
--train-cpus against one server. Three trainings on one core get a third of it each, so to keep
the cluster's proportions (each training with hardware of its own, the PRM with as much as one
training) the server gets a third of its core too once it is up, through a cgroup CPU quota.
That kind needs root and a cgroup cpu controller, and says so before it starts anything. Its
step times are in the time of a third of a core; the report also divides them by 3, beside
"PRPO server". The trainings start together (their Ray heads one after another).

"PRPO coalesce" and "PRPO async" are the PRM actor with --prm.coalesce (groups that arrive
during a forward share the next one) and with --prm.async_engine (vLLM's async engine batches
every group in flight, as the server does). "PRPO exact" puts the task's exact verifier on the PRM's actor in place of the model: the PRM
costs nothing, so its step time against GRPO's is PRPO's own work on the training core (vLLM's
entropies, the segments, the dispatch, the advantages). Not in the default kinds.

Each run is make run's launch script (examples/scripts/train_prpo_embedded_cpu.sh) on the
embedded task from the shipped policy, with the shipped learned PRM (4x the policy's parameters)
served by vLLM's pooling runner on its own actor, at larger sizes so a step lasts long enough to
time (--prompts x 8 samples, 64 new tokens). The kinds run interleaved, round after round (GRPO,
PRPO, PRPO server, PRPO server x3, GRPO, ...), so drift hits all. Per kind: the median of OpenRLHF's
`timing/step_total` over all measured steps (the first --skip of each run left out; of
concurrent trainings, only the steps during which all of them were training) with its
quartiles, the ratio to GRPO's, `prm/wait_s` as a share of the step, and the PRM's forward sizes
(`prm/forward_responses`: responses per PRM forward; with coalescing, groups share forwards).

    .venv/bin/python benchmarks/bench_pinned.py [--rounds 2] [--steps 10] [--prompts 64] [--kinds ...]
        [--once "PRPO server x3"]

Every training runs in a child process of its own (``--one-run``), pinned like this one; the
PRM server's output goes to ``prm_server.log`` in the run's folder.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple


ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "examples" / "scripts"
PRPO_SCRIPT = "train_prpo_qwen2.5_math_1.5b.sh"
SERVER_SCRIPT = "train_prpo_qwen2.5_math_1.5b_shared_prm.sh"


class Kind(NamedTuple):
    script: str
    extra_args: str = ""
    trainings: int = 0  # trainings sharing one PRM server; 0: each with the PRM on an actor of its own
    prm: str = "learned"  # exact: the task's exact verifier on the PRM's actor (no model compute)


KINDS = {
    "GRPO": Kind("train_grpo_qwen2.5_math_1.5b.sh"),
    "PRPO": Kind(PRPO_SCRIPT),
    "PRPO coalesce": Kind(PRPO_SCRIPT, "--prm.coalesce"),
    "PRPO async": Kind(PRPO_SCRIPT, "--prm.async_engine"),
    # PRPO's own work on the training core (entropies, segments, dispatch, advantages) without the PRM's compute
    "PRPO exact": Kind(PRPO_SCRIPT, prm="exact"),
    "PRPO server": Kind(SERVER_SCRIPT, trainings=1),
    "PRPO server x3": Kind(SERVER_SCRIPT, trainings=3),
}
DEFAULT_KINDS = ("GRPO", "PRPO", "PRPO server", "PRPO server x3")
PARTS = ("generation", "make_experience", "ppo_train", "broadcast")  # OpenRLHF's timing/* of a step
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


def cpu_quota_group(name: str) -> Path:
    """A new cgroup for a CPU-time quota (v2, or v1's cpu controller); SystemExit when this
    machine does not let us make one."""
    v2 = (CGROUP_V2 / "cgroup.controllers").is_file() and "cpu" in (CGROUP_V2 / "cgroup.controllers").read_text().split()
    group = (CGROUP_V2 if v2 else CGROUP_V1_CPU) / name
    try:
        group.mkdir()
        if not any((group / f).exists() for f in ("cpu.max", "cpu.cfs_quota_us")):  # v2 without cpu delegated
            group.rmdir()
            raise OSError("no CPU quota file in it")
    except OSError as e:
        raise SystemExit(f"the shared-server kind limits the PRM server to a share of its core with a cgroup CPU "
                         f"quota, and {group} cannot be made here ({e}): run as root on a machine with a "
                         "cgroup cpu controller, or leave that kind out (--kinds)") from None
    return group


def limit_cpu(group: Path, pid: int, cores: float) -> None:
    """``pid``, its descendants and what they start later get at most ``cores`` CPUs' worth of time."""
    import psutil

    period = 100_000
    if (group / "cpu.max").exists():
        (group / "cpu.max").write_text(f"{int(cores * period)} {period}")
    else:
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(int(cores * period)))
    root = psutil.Process(pid)
    for proc in (root, *root.children(recursive=True)):
        (group / "cgroup.procs").write_text(str(proc.pid))  # one write moves a process with all its threads


def remove_group(group: Path, wait_s: float = 30.0) -> None:
    """rmdir of a cgroup, once the processes ending in it have left; a warning if they do not."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return group.rmdir()
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"[bench] warning: {group} not removed ({e}); rmdir it when its processes have ended",
                      file=sys.stderr)
                return None
            time.sleep(1)


@contextlib.contextmanager
def prm_server(out: Path, prm_model: str, cpus_: set[int], trainings: int):
    """serve_prm.sh on its own port, pinned to ``cpus_`` and, for N trainings, held to 1/N of
    them; yields the environment a training needs to reach it. Stopped (its process group) at exit."""
    from prpo_openrlhf.local.cluster import end_group
    from prpo_openrlhf.testing.net import free_port, wait_healthy

    port, token = free_port(), secrets.token_hex(16)
    group = cpu_quota_group(f"prpo-bench-pinned-{os.getpid()}-{port}") if trainings > 1 else None
    env = {**os.environ, "PRPO_PRM_TOKEN": token, "PRM_MODEL": prm_model, "PRM_PORT": str(port),
           "PYTHON": sys.executable}
    url = f"http://127.0.0.1:{port}"
    with open(out / "prm_server.log", "w") as log:
        # fp32 like the PRM actor's CPU default (--prpo.cpu_dtype), so the two kinds do the same work
        proc = subprocess.Popen(["bash", str(SCRIPTS / "serve_prm.sh"), "--dtype", "float32"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            os.sched_setaffinity(proc.pid, cpus_)  # before it starts a thread: they all inherit it
            wait_healthy(url, proc, 900, f"the PRM server (log: {out / 'prm_server.log'})")
            if group is not None:  # once it is up: its start-up is not what is measured
                limit_cpu(group, proc.pid, len(cpus_) / trainings)
            yield {"PRM_URL": url, "PRPO_PRM_TOKEN": token}
        finally:
            end_group(proc, grace_s=60)
            if group is not None:
                remove_group(group)


def one_run(out: Path, kind: str, steps: int, prompts: int, env_paths: dict) -> dict:
    from prpo_openrlhf.local.embedded import train

    script, extra, _, prm = KINDS[kind]
    if prm == "exact":
        env_paths = {**env_paths, "PRM_MODEL": "exact"}
    rows = Path(env_paths["PROMPT_DATA"]).read_text().splitlines()
    data = out / "prompts.jsonl"
    data.write_text("\n".join((rows * (1 + steps * prompts // len(rows)))[: steps * prompts]) + "\n")
    sizes = {"ROLLOUT_BATCH": prompts, "ROLLOUT_MICRO_BATCH": prompts, "TRAIN_BATCH": prompts * 4,
             "TRAIN_MICRO_BATCH": 32, "EMBEDDED_SCRIPT": script, "EXTRA_ARGS": extra}
    saved, s = train(out, {**env_paths, "PROMPT_DATA": str(data)}, {k: str(v) for k, v in sizes.items()}, steps)
    result = {tag.rsplit("/", 1)[-1]: [v for _, v in s[tag]] for tag in
              ("train/timing/step_total", *(f"train/timing/{part}" for part in PARTS), "train/prm/wait_s",
               "train/prm/forward_responses") if tag in s}
    result["ended_at"] = step_end_times(out / "tensorboard" / saved.name)
    return result


def step_end_times(log_dir: Path) -> list[float]:
    """Wall-clock time at which each step's metrics were written (the step's end)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = [p for p in log_dir.iterdir() if p.is_dir()]
    events = EventAccumulator(str(run))
    events.Reload()
    return [e.wall_time for e in events.Scalars("train/timing/step_total")]


def common_window(results: list[dict], skip: int) -> None:
    """Concurrent trainings are measured only while all of them train: from the moment the last
    one has done its ``skip`` warm-up steps to the moment the first one ends. Sets each result's
    ``window`` [first, last + 1) to the steps that lie wholly inside."""
    start = max(r["ended_at"][skip - 1] if skip else r["ended_at"][0] - r["step_total"][0] for r in results)
    end = min(r["ended_at"][-1] for r in results)
    for r in results:
        inside = [i for i, (t, d) in enumerate(zip(r["ended_at"], r["step_total"])) if t - d >= start and t <= end]
        r["window"] = [inside[0], inside[-1] + 1] if inside else [0, 0]


def run_kind(out: Path, kind: str, args) -> list[dict]:
    """One run of ``kind``: its trainings, each a child process (``--one-run``), and the PRM server
    they share for the server kinds; the trainings' results."""
    from prpo_openrlhf.local.cluster import end_group

    trainings = KINDS[kind].trainings
    server = prm_server(out, os.environ["PRM_MODEL"], cpus(args.prm_cpus), trainings) if trainings \
        else contextlib.nullcontext({})
    dirs = [out / f"training-{i}" for i in range(trainings)] if trainings > 1 else [out]
    with server as server_env:
        procs = []
        try:
            for d in dirs:
                d.mkdir(exist_ok=True)
                with open(d / "bench.log", "w") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, __file__, "--one-run", str(d), "--kinds", kind, "--steps", str(args.steps),
                         "--prompts", str(args.prompts)], env={**os.environ, **server_env}, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True))
                if len(dirs) > 1:  # Ray heads started at once on one core time out at start-up (raylet)
                    _wait_for_head(d / "bench.log", procs[-1])
            codes = [proc.wait() for proc in procs]
        except BaseException:  # Ctrl-C, SIGTERM: each training stops its own Ray head
            for proc in procs:
                end_group(proc, grace_s=120)
            raise
    failed = [str(d / "bench.log") for d, code in zip(dirs, codes) if code]
    if failed:
        raise RuntimeError(f"{kind}: training failed, see {', '.join(failed)}")
    results = [json.loads((d / "result.json").read_text()) for d in dirs]
    if len(results) > 1:
        common_window(results, args.skip)
    return results


def _wait_for_head(log: Path, proc: subprocess.Popen, timeout_s: float = 600.0) -> None:
    """Until the training's private Ray head is up (its "[run] Ray head at" line) or it has ended."""
    deadline = time.monotonic() + timeout_s
    while "[run] Ray head at" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            return  # its exit code or its own timeout tells the rest
        time.sleep(2)


def summary(runs: list[dict], skip: int) -> dict:
    def measured(r, key):  # a run's own window (concurrent trainings), else all but its first `skip` steps
        return r[key][slice(*r.get("window", (skip, None)))]

    steps = [x for r in runs for x in measured(r, "step_total")]
    if len(steps) < 2:
        raise ValueError(f"{len(steps)} measured step(s): run more --steps")
    q = statistics.quantiles(steps, n=4)
    out = {"step_s": statistics.median(steps), "q1": q[0], "q3": q[2], "n": len(steps),
           "per_run": [round(statistics.median(measured(r, "step_total")), 2) for r in runs]}
    if "wait_s" in runs[0]:
        waits = [w / t for r in runs for w, t in zip(measured(r, "wait_s"), measured(r, "step_total"))]
        out["wait_share"] = statistics.median(waits)
        out["wait_share_max"] = max(waits)
    for part in (*PARTS, "wait_s"):
        if part in runs[0]:
            out[part] = statistics.median(x for r in runs for x in measured(r, part))
    if "forward_responses" in runs[0]:  # the PRM actor's; 0 when calls are not coalesced (one group a forward)
        out["forward_responses"] = statistics.median(x for r in runs for x in measured(r, "forward_responses"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="training steps per run")
    ap.add_argument("--skip", type=int, default=2, help="first steps of each run left out (vLLM warm-up)")
    ap.add_argument("--prompts", type=int, default=64, help="prompts per step (x 8 samples)")
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"comma-separated, from: {', '.join(KINDS)}")
    ap.add_argument("--once", default="", help="kinds (of --kinds) run in the first round only, e.g. the long "
                    "'PRPO server x3'; they are still compared with the other kinds' runs of every round")
    ap.add_argument("--train-cpus", default="0")
    ap.add_argument("--prm-cpus", default="1")
    ap.add_argument("--out", default=str(ROOT / "runs" / f"bench-pinned-{time.strftime('%Y%m%d-%H%M%S')}"))
    ap.add_argument("--summarize", action="store_true", help="print the table of the runs already in --out")
    ap.add_argument("--one-run", help=argparse.SUPPRESS)  # a child: one training of --kinds into this folder
    args = ap.parse_args(argv)
    if args.summarize:
        return report(json.loads((Path(args.out) / "runs.json").read_text()), args)
    # SIGTERM unwinds like Ctrl-C, so the run's private Ray head is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.one_run:
        env_paths = {k: os.environ[k] for k in ("POLICY_MODEL", "PRM_MODEL", "PROMPT_DATA")}
        result = one_run(Path(args.one_run), args.kinds, args.steps, args.prompts, env_paths)
        (Path(args.one_run) / "result.json").write_text(json.dumps(result))
        return 0
    kinds = [k.strip() for k in args.kinds.split(",")]
    once = [k.strip() for k in args.once.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"--kinds: unknown {unknown}; choose from {', '.join(KINDS)}")
    if set(once) - set(kinds):
        ap.error(f"--once: {sorted(set(once) - set(kinds))} not in --kinds")
    if any(KINDS[k].trainings > 1 for k in kinds):  # refused now rather than after an hour of other runs
        cpu_quota_group(f"prpo-bench-pinned-{os.getpid()}-check").rmdir()
    os.sched_setaffinity(0, cpus(args.train_cpus))  # before any thread or process is started
    os.environ["PRPO_PRM_CPUS"] = args.prm_cpus      # reaches the PRM actor through the Ray head
    from prpo_openrlhf.local.embedded import paths

    os.environ.update(paths("learned"))  # the trainings' and the PRM server's models and prompts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    got: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in (k for k in kinds if r == 0 or k not in once):
            d = out / f"{kind.replace(' ', '-').lower()}-{r}"
            d.mkdir()
            t0 = time.monotonic()
            results = run_kind(d, kind, args)
            got[kind].extend(results)
            (out / "runs.json").write_text(json.dumps(got))
            medians = ", ".join(f"{summary([x], args.skip)['step_s']:.1f}" for x in results)
            print(f"[bench] round {r + 1}, {kind}: median step {medians} s, {time.monotonic() - t0:.0f} s in all",
                  flush=True)
    return report(got, args)


def report(got: dict, args) -> int:
    res = {k: summary(v, args.skip) for k, v in got.items() if v}
    base = res.get("GRPO", {}).get("step_s")
    print(f"\n{args.prompts} prompts x 8 samples a step; training on CPUs {args.train_cpus}, PRM on {args.prm_cpus}")
    print("| run | step (s), median [quartiles] | per run | / GRPO | prm/wait_s share of the step, median (max) "
          "| responses per PRM forward |\n| --- | --- | --- | --- | --- | --- |")
    for k, s in res.items():
        ratio = f"{s['step_s'] / base:.3f}x" if base else "-"
        wait = f"{100 * s['wait_share']:.1f}% ({100 * s['wait_share_max']:.1f}%)" if "wait_share" in s else "-"
        if KINDS[k].trainings:  # the client logs no forward sizes: the server batches what is in flight
            fwd = "vLLM's server: continuous batching"
        elif "forward_responses" in s and "--prm.async_engine" in KINDS[k].extra_args:
            fwd = f"{s['forward_responses']:.0f} in vLLM's engine at once (continuous batching)"
        elif "forward_responses" in s:  # the PRM actor's
            fwd = f"{s['forward_responses']:.0f}" if s["forward_responses"] else "one group (8) per call"
        else:
            fwd = "-"
        print(f"| {k} | {s['step_s']:.2f} [{s['q1']:.2f}-{s['q3']:.2f}], n {s['n']} | {s['per_run']} | {ratio} | {wait} | {fwd} |")
    print("\nWhere the step goes, medians in seconds (OpenRLHF's timing/*; the wait is part of make_experience):")
    print(f"| run | {' | '.join(PARTS)} | prm/wait_s |\n| --- |{' --- |' * (len(PARTS) + 1)}")
    for k, s in res.items():
        print(f"| {k} | {' | '.join(f'{s[p]:.2f}' if p in s else '-' for p in (*PARTS, 'wait_s'))} |")
    single, shared = res.get("PRPO server"), res.get("PRPO server x3")
    if single and shared:
        own = shared["step_s"] / 3
        print(f"\nThree trainings sharing one server, each with a third of the training core and the server with a "
              f"third of its own: {shared['step_s']:.2f} s a step, {own:.2f} s in a whole core's time, "
              f"{own / single['step_s']:.3f}x one training's {single['step_s']:.2f} s against the server alone "
              f"(paper: 84.0 s vs 80.8 s, 1.040x); prm/wait_s {100 * shared['wait_share']:.1f}% of the step vs "
              f"{100 * single['wait_share']:.1f}%")
    (Path(args.out) / "result.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
