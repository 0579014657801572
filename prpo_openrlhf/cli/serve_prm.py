"""``prpo-serve-prm``: serve a process reward model over HTTP for one or several trainings.

    prpo-serve-prm --model Qwen/Qwen2.5-Math-PRM-7B --backend vllm --port 8000
    PRPO_PRM_TOKEN=secret prpo-serve-prm --model ... --host 0.0.0.0 --port 8000
    prpo-serve-prm --model ... --num-actors 8          # a Ray PRM actor group behind it
    prpo-serve-prm --backend exact --port 8000         # the embedded task's exact verifier (oracle)

Binds to 127.0.0.1 unless ``--host`` says otherwise. The bearer token is read from the
environment variable named by ``--token-env`` (default PRPO_PRM_TOKEN) or from
``--token-file``, never from the command line, where other users could read it in ``ps``. An
empty or blank token (an empty file, a variable set to "") stops the start-up: it would
otherwise turn authentication off without a word.
Endpoints and error codes: prpo_openrlhf/prm/server.py and docs/prm.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from prpo_openrlhf.prm.client import LOOPBACK, TOKEN_ENV
from prpo_openrlhf.prm.server import DEFAULT_MAX_REQUEST_CHARS, DEFAULT_MAX_SEGMENTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prpo-serve-prm", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="PRM checkpoint dir or hub id (not with --backend exact)")
    p.add_argument("--backend", choices=["hf", "vllm", "exact"], default="hf",
                   help="exact: the embedded arithmetic task's exact verifier, an oracle PRM (no model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--token-env", default=TOKEN_ENV,
                   help="environment variable holding the bearer token (unset: no auth)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token")
    p.add_argument("--max-request-mb", type=float, default=32.0, help="body size limit")
    p.add_argument("--max-request-chars", type=int, default=DEFAULT_MAX_REQUEST_CHARS,
                   help="characters of problem and segment text per request (413 past it)")
    p.add_argument("--max-segments", type=int, default=DEFAULT_MAX_SEGMENTS,
                   help="segments per response (413 past it)")
    p.add_argument("--call-timeout-s", type=float, default=600.0,
                   help="deadline of one call (a client's own shorter deadline wins); 504 past it")
    p.add_argument("--max-connections", type=int, default=64,
                   help="connections served at once; more are answered 503")
    p.add_argument("--idle-timeout-s", type=float, default=30.0,
                   help="close a connection that sends nothing for this long")
    p.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--device", default=None, help="hf backend: cpu | cuda | cuda:N")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per input (default: the PRM's position limit)")
    p.add_argument("--overlong-fill", type=float, default=0.5,
                   help="score of segments past --max-length (default 0.5, the prior mean)")
    p.add_argument("--max-tokens-per-batch", type=int, default=16384)
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="vllm backend")
    p.add_argument("--num-actors", type=int, default=0,
                   help="> 0: score with a Ray PRM actor group of this size")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: local)")
    p.add_argument("--log-level", default="INFO")
    return p


def _token(args) -> str | None:
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as fh:
            token, source = fh.read().strip(), f"--token-file {args.token_file}"
    else:
        token, source = os.environ.get(args.token_env), f"${args.token_env}"
        if token is None:
            return None
        token = token.strip()
    if not token:
        raise SystemExit(f"prpo-serve-prm: {source} holds an empty token; put the token there, "
                         f"or unset ${args.token_env} and give no --token-file to serve without "
                         "authentication")
    return token


def _scorer_kwargs(args) -> dict:
    if args.backend == "exact":
        return {}
    kw = dict(dtype=args.dtype, max_length=args.max_length, overlong_fill=args.overlong_fill)
    if args.backend == "hf":
        kw.update(device=args.device, max_tokens_per_batch=args.max_tokens_per_batch)
    else:
        engine = {"tensor_parallel_size": args.tensor_parallel_size}
        if args.gpu_memory_utilization is not None:
            engine["gpu_memory_utilization"] = args.gpu_memory_utilization
        kw["engine_kwargs"] = engine
    return kw


def build_scorer(args):
    kwargs = _scorer_kwargs(args)
    if args.num_actors > 0:
        import ray

        from prpo_openrlhf.prm import PRMActorGroup

        ray.init(address=args.ray_address, include_dashboard=False)
        kwargs.pop("device", None)
        group = PRMActorGroup(args.model or args.backend, num_actors=args.num_actors, backend=args.backend,
                              **kwargs)
        group.ready()  # the service answers /health once its actors have loaded the model
        return group
    from prpo_openrlhf.prm.factory import make_scorer

    return make_scorer(args.model, args.backend, **kwargs)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.model is None) != (args.backend == "exact"):
        parser.error("--model is required" if args.model is None else "--backend exact reads no --model")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("prpo-serve-prm")
    token = _token(args)
    if args.host not in LOOPBACK and token is None:
        log.warning("serving on %s without a bearer token: anyone who can reach this port "
                    "can use the PRM (set $%s)", args.host, args.token_env)
    from prpo_openrlhf.prm.server import PRMServer

    scorer = build_scorer(args)
    server = PRMServer(scorer, args.host, args.port, token=token,
                       max_request_bytes=int(args.max_request_mb * (1 << 20)),
                       max_request_chars=args.max_request_chars, max_segments=args.max_segments,
                       call_timeout_s=args.call_timeout_s, max_connections=args.max_connections,
                       idle_timeout_s=args.idle_timeout_s)
    # Launchers (and tests) read the bound port from this line when --port 0 is used.
    print(f"prpo-serve-prm: serving {args.model or 'the exact verifier'} ({args.backend}) on {server.url}", flush=True)
    # While serving, uvicorn catches SIGTERM (e.g. from a job scheduler) and SIGINT, lets the calls
    # in flight finish, then raises the signal again with the handler that was there before: for
    # SIGTERM a no-op, so that the PRM's actors are released below and the exit status is 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if hasattr(scorer, "shutdown"):
            scorer.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
