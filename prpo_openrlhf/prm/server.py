"""A small HTTP service around a PRM scorer, shared by several trainings (paper §4, Table 1).

Endpoints (JSON in, JSON out):
  GET  /health   -> {"status": "ok"}                         (no token needed: for probes)
  GET  /info     -> model, backend, max_length, counters      (token needed if one is set)
  POST /score    {"problems": [str], "segments": [[str]]}
                 -> {"scores": [[float]], "stats": {...}}     (token needed if one is set)

Built on FastAPI and uvicorn, as OpenRLHF serves its reward models (``serve_rm.py``): uvicorn
runs the connections, caps them (``limit_concurrency``: one more is answered 503, so a client
may send again) and closes idle ones (``timeout_keep_alive``). What is ours: the bearer token,
the size limits and one deadline per call.

Errors are JSON ``{"error": "..."}`` with 400 (malformed body or deadline header), 401
(missing/wrong bearer token), 404, 405, 411 (no Content-Length), 413 (body, characters or segments
over a limit; the message names it), 500 (the PRM failed, e.g. non-finite scores), 504 (the call's
deadline passed); uvicorn's own 503 (too many connections) is plain text. Client errors (4xx) and
clients that hang up before their answer are counted apart from PRM failures. Scoring runs on
uvicorn's thread pool: when one in-process model serves all, forwards are serialised behind a lock
and tokenization runs outside it, so a large request holds the others back only for its forward
(with ``--num-actors``, requests go to the actors side by side). Every call has one deadline: the
client's (header ``X-PRM-Timeout-S``, seconds left) or ``call_timeout_s``, whichever is sooner.
Binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from .client import DEADLINE_HEADER
from .inputs import validate_batch
from .scorer import PRMScoreError

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 32 << 20
DEFAULT_MAX_REQUEST_CHARS = 4_000_000  # ~1M tokens: 128 responses of 8k tokens
DEFAULT_MAX_SEGMENTS = 1024            # per response


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _IdleClosingH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with its keep-alive timer also armed while a connection has
    not yet sent a whole request: uvicorn arms it only after a response, so a connection that
    never sends one would hold a slot of ``limit_concurrency`` for ever, and a few such
    connections would get every client a 503."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # cancels the timer; a whole request starts a cycle
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self._arm_idle_timer()  # still waiting for the rest of a request line or headers

    def _arm_idle_timer(self) -> None:
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket bound now, so that ``port=0`` is known before the server runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class PRMServer:
    """Serve ``scorer`` (a PRMScorer or PRMActorGroup) over HTTP.

    ``port=0`` picks a free port (see ``.port``). ``token``: bearer token required on /score and
    /info (None = no auth; only sensible on 127.0.0.1; a blank token is refused). Limits:
    ``max_request_bytes`` of body, ``max_request_chars`` of text in problems and segments,
    ``max_segments`` per response, ``call_timeout_s`` per call, ``max_connections`` open at once
    (uvicorn's ``limit_concurrency``), ``idle_timeout_s`` for a connection that sends nothing
    (uvicorn's ``timeout_keep_alive``).
    """

    GRACEFUL_SHUTDOWN_S = 10.0  # calls still being scored at shutdown get this long

    def __init__(self, scorer, host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_request_chars: int = DEFAULT_MAX_REQUEST_CHARS,
                 max_segments: int = DEFAULT_MAX_SEGMENTS, call_timeout_s: float = 600.0,
                 max_connections: int = 64, idle_timeout_s: float = 30.0):
        if token is not None and not token.strip():
            raise ValueError("the bearer token is empty or blank; give a real token, or none "
                             "to serve without authentication")
        self.scorer = scorer
        self.token = token
        self.max_request_bytes = int(max_request_bytes)
        self.max_request_chars, self.max_segments = int(max_request_chars), int(max_segments)
        self.call_timeout_s = float(call_timeout_s)
        self.max_connections, self.idle_timeout_s = int(max_connections), float(idle_timeout_s)
        self._score_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counts = {"served": 0, "rejected": 0, "failed": 0, "timed_out": 0,
                        "disconnected": 0, "in_flight": 0,
                        "responses": 0, "segments": 0, "filled_segments": 0}
        self.app = self._build_app()
        self._sock = _listen(host, port)
        self._address = self._sock.getsockname()  # still known once the socket is closed
        # log_config=None: uvicorn leaves the process's logging as the CLI (or a trainer) set it.
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            self.app, http=_IdleClosingH11, limit_concurrency=self.max_connections,
            timeout_keep_alive=self.idle_timeout_s, timeout_graceful_shutdown=self.GRACEFUL_SHUTDOWN_S,
            lifespan="off", log_config=None))
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        return self._address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- the HTTP surface ------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="prpo-serve-prm", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/health")
        async def health():
            return {"status": "ok"}

        @app.get("/info")
        async def info(request: Request):
            return await self._answer(request, self._info)

        @app.post("/score")
        async def score(request: Request):
            return await self._answer(request, self._score)

        @app.exception_handler(HTTPException)
        async def routing_error(request: Request, exc: HTTPException):  # no such path or method
            self.count("rejected")
            path = request.url.path[:200]
            message = (f"{request.method} not allowed on {path}" if exc.status_code == 405
                       else f"no such endpoint {path}" if exc.status_code == 404 else str(exc.detail))
            return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

        return app

    async def _answer(self, request: Request, handler) -> JSONResponse:
        """``handler``'s payload as JSON 200, or its error as JSON with the status that says who
        is to blame (4xx the client, 500 the PRM, 504 the deadline), counted as such."""
        try:
            self._check_token(request)
            return JSONResponse(await handler(request))
        except _HTTPError as err:
            self.count("timed_out" if err.status == 504 else "rejected")
            status, message = err.status, err.message
        except PRMScoreError as err:
            self.count("failed")
            status, message = 500, f"PRM scoring failed: {err}"
        except Exception as err:  # a bug or a dead backend: report it, keep serving
            logger.exception("PRM request failed")
            self.count("failed")
            status, message = 500, f"{type(err).__name__}: {err}"
        await self._drain(request)
        headers = {"Connection": "close"}  # a body may be left unread: never reuse the connection
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="prpo-prm"'
        return JSONResponse({"error": message}, status, headers=headers)

    def _check_token(self, request: Request) -> None:
        if self.token is None:
            return
        got = request.headers.get("authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(
                got[len("Bearer "):].encode(), self.token.encode()):
            raise _HTTPError(401, "missing or wrong bearer token")

    async def _drain(self, request: Request) -> None:
        """Read and drop an unread body (up to a cap) before an error answer: a client still
        sending to a server that answers and closes at once sees a connection reset instead of
        the 401/413 explaining why."""
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return
        if 0 < length <= 4 * self.max_request_bytes:
            try:
                async for _ in request.stream():
                    pass
            except Exception:  # already read, or the client hung up: nothing left to drain
                pass

    async def _info(self, request: Request) -> dict:
        return self.info_payload()

    async def _score(self, request: Request) -> dict:
        deadline = self._deadline(request)
        raw = await self._read_body(request)
        scores, stats = await run_in_threadpool(self._parse_and_score, raw, deadline)
        if await request.is_disconnected():  # the answer has no one to go to: not a PRM failure
            self.count("disconnected")
            logger.info("%s hung up before its answer", request.client.host if request.client else "a client")
        return {"scores": scores, "stats": stats.as_dict()}

    def _deadline(self, request: Request) -> float:
        """Monotonic deadline: the client's seconds left, capped by the service's own."""
        limit = self.call_timeout_s
        header = request.headers.get(DEADLINE_HEADER)
        if header is not None:
            try:
                left = float(header)
            except ValueError:
                left = math.nan
            if not (math.isfinite(left) and left > 0):
                raise _HTTPError(400, f"{DEADLINE_HEADER} must be a positive number of seconds, "
                                      f"got {header[:40]!r}")
            limit = min(limit, left)
        return time.monotonic() + limit

    async def _read_body(self, request: Request) -> bytes:
        if request.headers.get("transfer-encoding"):
            raise _HTTPError(411, "chunked bodies are not accepted; send Content-Length")
        length = request.headers.get("content-length")
        if length is None:
            raise _HTTPError(411, "Content-Length required")
        try:
            length = int(length)
        except ValueError:
            raise _HTTPError(400, f"bad Content-Length {length[:40]!r}") from None
        if length < 0 or length > self.max_request_bytes:
            raise _HTTPError(413, f"request body of {length} bytes exceeds the limit of "
                                  f"{self.max_request_bytes} bytes")
        return await request.body()

    def _parse_and_score(self, raw: bytes, deadline: float):
        """On a worker thread: parsing 20 MB of JSON must not stall the other connections."""
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as err:
            # ValueError covers bad UTF-8, bad JSON and integers too long to convert;
            # RecursionError, nesting deeper than the parser's stack.
            raise _HTTPError(400, f"body is not valid JSON: {type(err).__name__}: {str(err)[:200]}") from None
        if not isinstance(body, dict) or "problems" not in body or "segments" not in body:
            raise _HTTPError(400, 'body must be a JSON object {"problems": [...], "segments": [[...], ...]}')
        problems, segments = body["problems"], body["segments"]
        try:
            validate_batch(problems, segments)
        except (TypeError, ValueError) as err:
            raise _HTTPError(400, str(err)) from None
        self.check_limits(problems, segments)
        return self.score_with_stats(problems, segments, deadline)

    # --- scoring and counters --------------------------------------------------------------


    def count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[key] += n

    def check_limits(self, problems, segments) -> None:
        """413 naming the limit for a request over ``max_request_chars`` or ``max_segments``."""
        for i, segs in enumerate(segments):
            if len(segs) > self.max_segments:
                raise _HTTPError(413, f"response {i} has {len(segs)} segments; the limit is "
                                      f"{self.max_segments} per response (--max-segments)")
        chars = sum(map(len, problems)) + sum(len(s) for segs in segments for s in segs)
        if chars > self.max_request_chars:
            raise _HTTPError(413, f"request holds {chars} characters of text; the limit is "
                                  f"{self.max_request_chars} (--max-request-chars): send fewer "
                                  "responses per request")

    def score_with_stats(self, problems, segments, deadline: float | None = None):
        """Score by ``deadline`` (monotonic; default ``call_timeout_s`` from now), else 504."""
        deadline = time.monotonic() + self.call_timeout_s if deadline is None else deadline
        self.count("in_flight")
        try:
            if getattr(self.scorer, "concurrent_calls", False):
                # A PRMActorGroup takes calls side by side (each actor queues its own), so that
                # requests of one prompt group each keep all its actors busy.
                try:
                    scores, stats = self.scorer.score_with_stats(
                        problems, segments, timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError as err:
                    raise _HTTPError(504, f"not scored by the call's deadline: {err}") from None
            else:
                # One in-process model: tokenize outside the lock, then queue for the forward.
                batch = self.scorer.prepare(problems, segments)
                if not self._score_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise _HTTPError(504, "not scored: the call's deadline passed while it waited "
                                          "behind other requests")
                try:
                    scores, stats = self.scorer.score_prepared(batch)
                finally:
                    self._score_lock.release()
        finally:
            self.count("in_flight", -1)
        with self._count_lock:
            self._counts["served"] += 1
            self._counts["responses"] += stats.responses
            self._counts["segments"] += stats.segments
            self._counts["filled_segments"] += stats.filled_segments
        return scores, stats

    def info_payload(self) -> dict:
        """From counters and start-up facts only: never waits on a busy model or actor."""
        describe = getattr(self.scorer, "describe", None) or self.scorer.info
        with self._count_lock:
            counts = dict(self._counts)
        return {**describe(), "counts": counts, "limits": {
            "max_request_bytes": self.max_request_bytes, "max_request_chars": self.max_request_chars,
            "max_segments": self.max_segments, "call_timeout_s": self.call_timeout_s,
            "max_connections": self.max_connections, "idle_timeout_s": self.idle_timeout_s}}

    # --- running -----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until ``shutdown()``, or (from the main thread) SIGINT / SIGTERM, which uvicorn
        catches, finishes the calls in flight for up to GRACEFUL_SHUTDOWN_S, then raises again
        with the handler that was there before."""
        try:
            self._uvicorn.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def start(self) -> "PRMServer":
        """Serve from a background thread (tests, or a trainer hosting the service); returns once
        the server accepts calls."""
        self._thread = threading.Thread(target=self.serve_forever, name="prm-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the PRM server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def shutdown(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.GRACEFUL_SHUTDOWN_S + 5)
        self._sock.close()
