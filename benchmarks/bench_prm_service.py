"""PRM service throughput for per-prompt-group requests, two comparisons in one run.

    .venv/bin/python benchmarks/bench_prm_service.py [--only servers|inflight] [--groups 8 --n 8]

A training sends the service one request per prompt group (trainer/prm_dispatch.py). The PRM
is a random one as in bench_prm.py (``--hidden``, ``--layers``), in fp32 on CPU.

``servers``: vLLM's own server (``prm/vllm_serve.py``) vs ``prpo-serve-prm`` with one in-process
hf model, each in its own process, taking turns. ``--clients`` (3) trainings send one step's
``--groups`` requests of ``--n`` responses each at once (``score_async``, 4 in flight per client).
Reported per server: responses/s over the step (median of ``--repeats``) and the p95 latency of
a request (over all repeats), and the largest score difference between the two.

``inflight``: ``prpo-serve-prm`` in-process over a PRMActorGroup of ``--actors`` CPU actors on a
local Ray cluster, one client: one request in flight at a time (``max_in_flight=1``) vs 4 (the
default), where the service hands concurrent requests to different actors. Best of
``--repeats`` rounds in which the two take turns.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prm import interleaved, make_workload  # noqa: E402
from prpo_openrlhf.testing.net import free_port, wait_healthy  # noqa: E402


def _start(cmd, url, env) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, proc, 600, " ".join(cmd[:4]))
    except RuntimeError as e:
        proc.kill()
        raise SystemExit(str(e)) from None
    return proc


def compare_servers(args, path, groups) -> None:
    from prpo_openrlhf.prm import connect

    env = {**os.environ, "PRPO_PRM_TOKEN": "bench-token"}
    ports = {"vllm serve": free_port(), "prpo-serve-prm": free_port()}
    cmds = {"vllm serve": [sys.executable, "-m", "prpo_openrlhf.prm.vllm_serve", "--model", path,
                           "--port", str(ports["vllm serve"]), "--", "--dtype", "float32"],
            "prpo-serve-prm": [sys.executable, "-m", "prpo_openrlhf.cli.serve_prm", "--model", path,
                               "--port", str(ports["prpo-serve-prm"]), "--dtype", "fp32",
                               "--device", "cpu", "--log-level", "WARNING"]}
    procs = {}
    try:
        for name, cmd in cmds.items():
            procs[name] = _start(cmd, f"http://127.0.0.1:{ports[name]}", env)
        clients = {name: [connect(f"http://127.0.0.1:{ports[name]}", token="bench-token")
                          for _ in range(args.clients)] for name in cmds}

        def step(name):
            """Every client sends its step's groups at once; (seconds, latencies, scores)."""
            def one(client, p, s):
                t0 = time.perf_counter()
                scores = client.score(p, s)
                return time.perf_counter() - t0, scores
            with ThreadPoolExecutor(args.clients * 4) as pool:
                t0 = time.perf_counter()
                futures = [pool.submit(one, c, p, s) for c in clients[name] for p, s in groups]
                done = [f.result() for f in futures]
            return time.perf_counter() - t0, [d for d, _ in done], [sc for _, sc in done]

        for name in cmds:  # untimed: first shapes are slow on CPU
            step(name)
        runs = {name: [] for name in cmds}
        for _ in range(args.repeats):
            for name in cmds:
                runs[name].append(step(name))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)
    responses = args.clients * len(groups) * args.n
    print(f"servers: {args.clients} clients x {len(groups)} requests of {args.n} responses per step "
          f"({responses} responses), median of {args.repeats} steps")
    rates = {}
    for name, steps in runs.items():
        rates[name] = responses / statistics.median(t for t, _, _ in steps)
        lat = sorted(x for _, lats, _ in steps for x in lats)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"  {name:15s}: {rates[name]:7.1f} responses/s, request latency p50 "
              f"{statistics.median(lat):.2f} s, p95 {p95:.2f} s")
    a, b = (runs[name][0][2] for name in cmds)
    diff = max(abs(x - y) for ra, rb in zip(a, b) for sa, sb in zip(ra, rb) for x, y in zip(sa, sb))
    print(f"  -> vllm serve / prpo-serve-prm throughput: {rates['vllm serve'] / rates['prpo-serve-prm']:.2f}x; "
          f"max |score difference| {diff:.1e}")


def compare_inflight(args, path, groups, n_responses) -> None:
    import ray

    from prpo_openrlhf.prm import PRMActorGroup, PRMClient, PRMServer

    ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
    group = PRMActorGroup(path, num_actors=args.actors, backend="hf", dtype="fp32")
    server = PRMServer(group, port=0).start()
    clients = {f"max_in_flight={k}": PRMClient(server.url, max_in_flight=k) for k in (1, 4)}

    def step(client):
        futures = [client.score_async(p, s) for p, s in groups]
        return [f.result() for f in futures]

    try:
        best = interleaved({name: (lambda c=c: step(c)) for name, c in clients.items()}, args.repeats)
    finally:
        for c in clients.values():
            c.close()
        server.shutdown()
        group.shutdown()
        ray.shutdown()
    (t1, out1), (t4, out4) = best.values()
    same = max(abs(a - b) for r1, r4 in zip(out1, out4) for x, y in zip(r1[0], r4[0]) for a, b in zip(x, y))
    print(f"inflight: {args.actors} CPU actors behind prpo-serve-prm, {len(groups)} requests of "
          f"{args.n} responses ({n_responses} responses)")
    for name, (t, _) in best.items():
        print(f"  {name}: {t:6.2f} s per step, {n_responses / t:7.1f} responses/s")
    print(f"  -> max_in_flight=4 / max_in_flight=1 throughput: {t1 / t4:.2f}x; max |score difference| {same:.1e}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("servers", "inflight"), default=None)
    p.add_argument("--clients", type=int, default=3, help="servers: trainings sharing the PRM")
    p.add_argument("--actors", type=int, default=2, help="inflight: PRM actors")
    p.add_argument("--groups", type=int, default=8, help="prompt groups (requests) per step")
    p.add_argument("--n", type=int, default=8, help="responses per group")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--min-len", type=int, default=128)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from prpo_openrlhf.testing.tiny_models import write_tiny_prm

    problems, segments = make_workload(args.groups * args.n, 6, args.min_len, args.max_len, seed=0)
    groups = [(problems[i:i + args.n], segments[i:i + args.n]) for i in range(0, len(problems), args.n)]
    print(f"bench_prm_service: random PRM hidden={args.hidden} layers={args.layers}, fp32, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(write_tiny_prm(tmp, hidden_size=args.hidden, num_layers=args.layers,
                                  max_position_embeddings=2048))
        if args.only in (None, "servers"):
            compare_servers(args, path, groups)
        if args.only in (None, "inflight"):
            compare_inflight(args, path, groups, len(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
