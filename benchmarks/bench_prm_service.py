"""PRM service throughput for per-prompt-group requests: one request in flight vs several.

    .venv/bin/python benchmarks/bench_prm_service.py [--actors 2 --groups 8 --n 8]

A training sends the service one request per prompt group (trainer/prm_dispatch.py). This
starts ``prpo-serve-prm``'s server in-process over a PRMActorGroup of ``--actors`` CPU actors
(a random PRM as in bench_prm.py, on a local Ray cluster) and sends one step's ``--groups``
groups of ``--n`` responses through PRMClient, side by side in one run:
  - one request in flight at a time (``max_in_flight=1``, the client before requests overlapped);
  - ``max_in_flight=4`` (the default): the service hands concurrent requests to different actors.
Timed: all groups' scores back, best of ``--repeats`` rounds in which the two take turns.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prm import interleaved, make_workload  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--groups", type=int, default=8, help="prompt groups (requests) per step")
    p.add_argument("--n", type=int, default=8, help="responses per group")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--min-len", type=int, default=128)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import ray

    from prpo_openrlhf.prm import PRMActorGroup, PRMClient, PRMServer
    from prpo_openrlhf.testing.tiny_models import write_tiny_prm

    problems, segments = make_workload(args.groups * args.n, 6, args.min_len, args.max_len, seed=0)
    groups = [(problems[i:i + args.n], segments[i:i + args.n]) for i in range(0, len(problems), args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(write_tiny_prm(tmp, hidden_size=args.hidden, num_layers=args.layers,
                                  max_position_embeddings=2048))
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
    print(f"bench_prm_service: {args.actors} CPU actors behind the service, {args.groups} requests of "
          f"{args.n} responses ({len(problems)} responses), random PRM hidden={args.hidden} layers={args.layers}")
    for name, (t, _) in best.items():
        print(f"  {name}: {t:6.2f} s per step, {len(problems) / t:7.1f} responses/s")
    print(f"  -> max_in_flight=4 / max_in_flight=1 throughput: {t1 / t4:.2f}x; max |score difference| {same:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
