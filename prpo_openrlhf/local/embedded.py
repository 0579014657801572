"""``make run``: PRPO on the embedded arithmetic task through the real pipeline, on one CPU machine.

    python -m prpo_openrlhf.local.embedded run     [--run.dir DIR] [--run.prm learned|exact] ...
    python -m prpo_openrlhf.local.embedded paths   # POLICY_MODEL=, PRM_MODEL=, PROMPT_DATA= (the launch script reads them)
    python -m prpo_openrlhf.local.embedded eval MODEL [--problems 512] [--out FILE]

``run`` evaluates the shipped policy on the task's held-out problems (greedy pass@1 and sampled
mean@4, through vLLM), starts a private Ray head (its own ports; stopped alone at the end),
submits examples/scripts/train_prpo_embedded_cpu.sh with ``ray job submit`` (train_prpo_ray:
OpenRLHF's DeepSpeed actors, a vLLM engine with the entropy plugin, the PRM on its own actor,
PPOTrainer.fit, weight sync), prints one line per training step from the run's TensorBoard
events, evaluates the saved final policy the same way, and writes ``summary.json`` and
``learning_curve.png`` into the run folder.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prpo_openrlhf.fileio import replace_atomically

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "examples" / "scripts"
LAUNCH = "train_prpo_embedded_cpu.sh"
N_PROMPTS = 960  # 60 steps of 16 prompts
ROLLOUT_BATCH = int(os.environ.get("ROLLOUT_BATCH", 16))  # prompts a step (the launch script reads it too)
CURVE_TAGS = ("train/accuracy", "train/prm_score_mean", "train/response_length")
LOGICAL_GPUS = 4  # actor, reference, vLLM engine, PRM: one each


def _task():
    from prpo_openrlhf.local.task import ArithmeticTask
    from prpo_openrlhf.local.warmup import WarmupConfig

    cfg = WarmupConfig()  # the shipped policy's recipe: its task and task seed
    return ArithmeticTask(cfg.task, seed=cfg.task_seed)


def write_prompts(path: Path, n: int) -> Path:
    """``n`` training problems of the task as ``{"problem", "answer"}`` rows (never held-out ones)."""
    if not path.exists():
        rows = _task().train_batch(n, "rl-prompts")
        text = "".join(json.dumps({"problem": p.text, "answer": str(p.answer)}) + "\n" for p in rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def paths(prm: str = "learned", n_prompts: int = N_PROMPTS) -> dict:
    from prpo_openrlhf.local.warmup import WarmupConfig, cache_root, shipped_policy

    policy, _ = shipped_policy(WarmupConfig())
    if prm == "learned":
        from prpo_openrlhf.local.prm_recipe import learned_prm

        prm_path = learned_prm(log=lambda msg: print(msg, file=sys.stderr))[0]  # stdout: NAME=value lines
    else:
        prm_path = "exact"
    data = write_prompts(cache_root() / "embedded" / f"prompts-{WarmupConfig().key()}-{n_prompts}.jsonl", n_prompts)
    return {"POLICY_MODEL": policy, "PRM_MODEL": prm_path, "PROMPT_DATA": str(data)}


def evaluate(model: str, n_problems: int, n_samples: int = 4, max_new_tokens: int = 64) -> dict:
    """Held-out greedy pass@1 and sampled mean@n (temperature 1) through an in-process vLLM engine.

    Sampling draws from the engine's seeded generator, not one seed per request: per-request
    seeds make vLLM's CPU sampler 4x slower (75 s against 20 s for 1024 responses, measured).
    The engine core runs in this process, so every request is queued before the first forward:
    the batches, and so the generator's draws, do not depend on the machine's load (with an
    engine core in a process of its own, requests reach it while it already steps: the same
    policy read 63.4-64.3% sampled in three runs). It also starts about 12 s sooner.
    """
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from prpo_openrlhf.algorithms.rewards import grade_batch
    from prpo_openrlhf.local.sampling import chat_prompt_ids
    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env, shut_down

    t0 = time.monotonic()
    in_process_engine_env()
    tok = AutoTokenizer.from_pretrained(model)
    problems = _task().heldout[:n_problems]
    prompts = [{"prompt_token_ids": ids} for ids in chat_prompt_ids(tok, [p.text for p in problems], None)]
    llm = LLM(model=model, **cpu_engine_kwargs(max_model_len=256, kv_cache_mib=256, seed=0))
    result = {"model": model, "problems": n_problems}
    try:
        for kind, params in (("greedy", SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens)),
                             ("sampled", SamplingParams(n=n_samples, temperature=1.0, top_p=1.0, top_k=0,
                                                        max_tokens=max_new_tokens))):
            outs = llm.generate(prompts, params, use_tqdm=False)
            texts = [c.text for o in outs for c in o.outputs]
            ok = grade_batch(texts, [str(p.answer) for p in problems for _ in range(params.n)])
            lengths = [len(c.token_ids) for o in outs for c in o.outputs]
            result[kind] = {"accuracy": sum(ok) / len(ok), "response_length": sum(lengths) / len(lengths),
                            "samples_per_problem": params.n}
    finally:
        shut_down(llm)
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def evaluate_apart(model: str, n_problems: int, out: Path) -> dict:
    """``evaluate`` in a process of its own, so that vLLM's memory is freed before the training
    and its log (``out`` with ``.log``) stays out of the console."""
    log = out.with_suffix(".log")
    with open(log, "w") as sink:
        status = subprocess.run([sys.executable, "-m", "prpo_openrlhf.local.embedded", "eval", model,
                                 "--problems", str(n_problems), "--out", str(out)], stdout=sink,
                                stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise RuntimeError(f"held-out evaluation of {model} failed (exit {status}); end of {log}:\n"
                           f"{log.read_text(errors='replace')[-3000:]}")
    return json.loads(out.read_text())


class _StepPrinter(threading.Thread):
    """Prints one line per training step from the run's TensorBoard events while it runs."""

    TAGS = dict(zip(CURVE_TAGS, ("train acc", "PRM score", "length")))

    def __init__(self, log_root: Path, total: int):
        super().__init__(daemon=True)
        self.log_root, self.total, self.done = log_root, total, threading.Event()
        self.t0, self.printed = time.monotonic(), 0

    def run(self):
        while not self.done.wait(3.0):
            self.poll()

    def poll(self):
        from prpo_openrlhf.testing.tiny_run import read_scalars

        runs = [p.name for p in self.log_root.iterdir()] if self.log_root.is_dir() else []
        if len(runs) != 1:  # LOG_ROOT/<run name>/<OpenRLHF's folder>: not there yet
            return
        with contextlib.suppress(Exception):  # events being written: read again at the next poll
            scalars = {tag: dict(points) for tag, points in read_scalars(self.log_root, runs[0]).items()}
            steps = sorted(scalars.get("train/accuracy", {}))
            for step in steps[self.printed:]:
                parts = [f"{label} {scalars[tag][step]:.3f}" for tag, label in self.TAGS.items()
                         if step in scalars.get(tag, {})]
                print(f"[run] step {step}/{self.total}: {', '.join(parts)} "
                      f"({time.monotonic() - self.t0:.0f} s)", flush=True)
            self.printed = len(steps)


def train(run_dir: Path, env_paths: dict, extra_env: dict, total_steps: int) -> tuple[Path, dict]:
    """The launch script under ``ray job submit`` on a private Ray head; (saved model, scalars)."""
    from prpo_openrlhf.local.cluster import end_group, private_ray_head
    from prpo_openrlhf.testing.tiny_run import read_scalars

    save_root, log_root = run_dir / "checkpoints", run_dir / "tensorboard"
    for used in (save_root, log_root):  # the launch scripts resume from checkpoints found there
        if used.is_dir() and any(used.iterdir()):
            raise FileExistsError(f"{used} holds an earlier run; give a new --run.dir")
    env = {**os.environ, **env_paths, **extra_env, "SAVE_ROOT": str(save_root), "LOG_ROOT": str(log_root),
           "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_file = run_dir / "train.log"
    with private_ray_head(num_gpus=LOGICAL_GPUS, num_cpus=LOGICAL_GPUS + 4, log_file=run_dir / "ray.log") as address:
        print(f"[run] Ray head at {address} (private; stopped at the end); training log: {log_file}", flush=True)
        printer = _StepPrinter(log_root, total_steps)
        printer.start()
        with open(log_file, "w") as log:
            # A group of its own: the launch script's background job_wait goes with it when this
            # process is stopped (it stops the job), instead of polling a stopped head for 300 s.
            proc = subprocess.Popen(["bash", str(SCRIPTS / LAUNCH)], env={**env, "RAY_ADDRESS": address},
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                status = proc.wait()
            except BaseException:  # Ctrl-C, or SIGTERM's SystemExit
                end_group(proc, grace_s=30)
                raise
        printer.done.set()
        printer.join()
        printer.poll()
    saved = [p for p in save_root.iterdir() if (p / "config.json").is_file()] if save_root.is_dir() else []
    if status != 0 or len(saved) != 1:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"training failed (exit {status}, saved models {saved}); end of {log_file}:\n{tail}")
    return saved[0], read_scalars(log_root, saved[0].name)


def plot(scalars: dict, start: dict, end: dict, out: Path, title: str) -> Path:
    """Training accuracy (and mean PRM score) per step, with the held-out figures at both ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps, acc = zip(*scalars["train/accuracy"])
    ax.plot(steps, acc, label="training accuracy (sampled rollouts)", color="C0")
    if "train/prm_score_mean" in scalars:
        ax.plot(*zip(*scalars["train/prm_score_mean"]), label="mean PRM score", color="C2", alpha=0.7)
    for kind, marker in (("sampled", "o"), ("greedy", "s")):
        ax.plot([0, steps[-1]], [start[kind]["accuracy"], end[kind]["accuracy"]], marker=marker, ls="--",
                color="C3" if kind == "sampled" else "C1", label=f"held-out {kind} ({start['problems']} problems)")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy / score")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(args) -> dict:
    t0 = time.monotonic()
    run_dir = Path(args.dir or ROOT / "runs" / time.strftime("embedded-%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    env_paths = paths(args.prm)
    extra_env = {"EMBEDDED_SCRIPT": args.script}
    print(f"[run] policy {env_paths['POLICY_MODEL']}\n[run] PRM {env_paths['PRM_MODEL']}\n"
          f"[run] prompts {env_paths['PROMPT_DATA']}\n[run] output {run_dir}", flush=True)
    print(f"[run] held-out evaluation of the start policy ({args.eval_problems} problems, vLLM)", flush=True)
    start = evaluate_apart(env_paths["POLICY_MODEL"], args.eval_problems, run_dir / "eval_start.json")
    _report("start", start)
    steps = N_PROMPTS // ROLLOUT_BATCH
    saved, scalars = train(run_dir, env_paths, extra_env, steps)
    print(f"[run] held-out evaluation of the final policy {saved}", flush=True)
    end = evaluate_apart(str(saved), args.eval_problems, run_dir / "eval_end.json")
    _report("end", end)
    gain = {k: end[k]["accuracy"] - start[k]["accuracy"] for k in ("greedy", "sampled")}
    title = (f"{args.script.removesuffix('.sh')} on the embedded task, PRM: {args.prm}\n"
             f"held-out sampled {start['sampled']['accuracy']:.1%} -> {end['sampled']['accuracy']:.1%}, "
             f"greedy {start['greedy']['accuracy']:.1%} -> {end['greedy']['accuracy']:.1%}")
    summary = {"script": args.script, "prm": args.prm, "paths": env_paths, "final_model": str(saved),
               "start": start, "end": end, "gain": gain, "steps": len(scalars.get("train/accuracy", [])),
               "train_accuracy": scalars.get("train/accuracy"), "seconds": round(time.monotonic() - t0, 1),
               "plot": str(plot(scalars, start, end, run_dir / "learning_curve.png", title))}
    replace_atomically(run_dir / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    print(f"[run] held-out sampled {gain['sampled']:+.1%}, greedy {gain['greedy']:+.1%} in "
          f"{summary['steps']} steps; {summary['seconds']:.0f} s in all\n[run] {run_dir / 'summary.json'}\n"
          f"[run] {summary['plot']}\n[run] TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}", flush=True)
    return summary


def _report(when: str, result: dict) -> None:
    print(f"[run] {when}: held-out greedy {result['greedy']['accuracy']:.1%}, sampled "
          f"{result['sampled']['accuracy']:.1%} ({result['seconds']:.0f} s)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prpo_openrlhf.local.embedded", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="evaluate, train through train_prpo_ray, evaluate again")
    r.add_argument("--run.dir", dest="dir", default=None, help="output folder (default runs/embedded-<time>)")
    r.add_argument("--run.prm", dest="prm", choices=("learned", "exact"), default="learned",
                   help="the shipped learned PRM (vLLM pooling) or the exact verifier (oracle)")
    r.add_argument("--run.script", dest="script", default="train_prpo_qwen2.5_math_1.5b.sh",
                   help="launch script of examples/scripts to run at the embedded sizes")
    r.add_argument("--run.eval_problems", dest="eval_problems", type=int, default=512)
    p = sub.add_parser("paths", help="print POLICY_MODEL=, PRM_MODEL=, PROMPT_DATA=")
    p.add_argument("--prm", choices=("learned", "exact"), default=os.environ.get("EMBEDDED_PRM", "learned"))
    e = sub.add_parser("eval", help="held-out greedy and sampled accuracy of a model")
    e.add_argument("model")
    e.add_argument("--problems", type=int, default=512)
    e.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so the private Ray head is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.command == "paths":
        for name, value in paths(args.prm).items():
            print(f"{name}={value}")
    elif args.command == "eval":
        result = json.dumps(evaluate(args.model, args.problems), indent=2)
        replace_atomically(args.out, lambda tmp: tmp.write_text(result)) if args.out else print(result)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
