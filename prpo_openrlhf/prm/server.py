"""A small HTTP service around a PRM scorer, shared by several trainings (paper §4, Table 1).

Endpoints (JSON in, JSON out):
  GET  /health   -> {"status": "ok"}                         (no token needed: for probes)
  GET  /info     -> model, backend, max_length, counters      (token needed if one is set)
  POST /score    {"problems": [str], "segments": [[str]]}
                 -> {"scores": [[float]], "stats": {...}}     (token needed if one is set)

Errors are JSON ``{"error": "..."}`` with 400 (malformed body or deadline header), 401
(missing/wrong bearer token), 404, 405, 411 (no Content-Length), 413 (body, characters or segments
over a limit; the message names it), 500 (the PRM failed, e.g. non-finite scores), 503 (too many
open connections; nothing was read, so a client may send again), 504 (the call's deadline passed).
Client errors (4xx) and clients that hang up before their answer are counted apart from PRM
failures. The stdlib ThreadingHTTPServer is enough: a training sends one request per prompt group
(a few responses each, while its vLLM engines generate the others), and scoring is serialised
behind a lock when one in-process model serves all; the tokenization runs outside the lock, so a
large request holds the others back only for its forward pass (with ``--num-actors``, requests
go to the actors side by side). Every call has one deadline: the client's (header
``X-PRM-Timeout-S``, seconds left) or ``call_timeout_s``, whichever is sooner. Connections are
capped (``max_connections`` handler threads) and idle ones closed after ``idle_timeout_s``.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive for clients that want it
    server_version = "prpo-prm"
    service: "PRMServer"            # set on the subclass built by PRMServer; so is ``timeout``

    def log_message(self, fmt, *args):  # route access logs through logging, not stderr
        logger.info("%s %s", self.address_string(), fmt % args)

    def _send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="prpo-prm"')
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            # The client hung up (or its deadline passed) before its answer: not a PRM failure.
            self.close_connection = True
            self.service.count("disconnected")
            logger.info("%s hung up before its %d answer", self.address_string(), status)

    def send_error(self, code, message=None, explain=None):
        # The base class answers protocol errors (bad request line, 501) in HTML; keep JSON.
        self.close_connection = True
        self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _check_token(self) -> None:
        token = self.service.token
        if token is None:
            return
        got = self.headers.get("Authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(
                got[len("Bearer "):].encode(), token.encode()):
            raise _HTTPError(401, "missing or wrong bearer token")

    def _read_json(self):
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise _HTTPError(411, "chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise _HTTPError(411, "Content-Length required")
        try:
            length = int(length)
        except ValueError:
            self.close_connection = True
            raise _HTTPError(400, f"bad Content-Length {length[:40]!r}") from None
        if length < 0 or length > self.service.max_request_bytes:
            # The body is left unread, so this connection cannot be reused.
            self.close_connection = True
            raise _HTTPError(413, f"request body of {length} bytes exceeds the limit of "
                                  f"{self.service.max_request_bytes} bytes")
        self._body_read = True
        try:
            return json.loads(self.rfile.read(length))
        except (ValueError, RecursionError) as err:
            # ValueError covers bad UTF-8, bad JSON and integers too long to convert;
            # RecursionError, nesting deeper than the parser's stack.
            raise _HTTPError(400, f"body is not valid JSON: {type(err).__name__}: "
                                  f"{str(err)[:200]}") from None

    def _drain_body(self) -> None:
        """Read and drop an unread body (up to a cap) before an error answer.

        A client still sending a large body to a server that answers and closes at once sees
        a connection reset instead of the 401/413 explaining why; draining avoids that.
        """
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if self._body_read or length <= 0 or length > 4 * self.service.max_request_bytes:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _deadline(self) -> float:
        """Monotonic deadline: the client's seconds left, capped by the service's own."""
        limit = self.service.call_timeout_s
        header = self.headers.get(DEADLINE_HEADER)
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

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            path = self.path.split("?", 1)[0]
            routes = {("GET", "/health"): self._health, ("GET", "/info"): self.service.info_payload,
                      ("POST", "/score"): self._score}
            route = routes.get((method, path))
            if route is None:
                if path in {p for (_, p) in routes}:
                    raise _HTTPError(405, f"{method} not allowed on {path}")
                raise _HTTPError(404, f"no such endpoint {path[:200]}")
            if path != "/health":
                self._check_token()
            payload = route()
        except _HTTPError as err:
            self.service.count("timed_out" if err.status == 504 else "rejected")
            status, message = err.status, err.message
        except PRMScoreError as err:
            self.service.count("failed")
            status, message = 500, f"PRM scoring failed: {err}"
        except Exception as err:  # a bug or a dead backend: report it, keep serving
            logger.exception("PRM request failed")
            self.service.count("failed")
            status, message = 500, f"{type(err).__name__}: {err}"
        else:
            self._send_json(200, payload)
            return
        # A body may be left unread after an error; never reuse such a connection.
        self._drain_body()
        self.close_connection = True
        self._send_json(status, {"error": message})

    @staticmethod
    def _health() -> dict:
        return {"status": "ok"}

    def _score(self) -> dict:
        deadline = self._deadline()
        body = self._read_json()
        if not isinstance(body, dict) or "problems" not in body or "segments" not in body:
            raise _HTTPError(400, 'body must be a JSON object {"problems": [...], '
                                  '"segments": [[...], ...]}')
        problems, segments = body["problems"], body["segments"]
        try:
            validate_batch(problems, segments)
        except (TypeError, ValueError) as err:
            raise _HTTPError(400, str(err)) from None
        self.service.check_limits(problems, segments)
        scores, stats = self.service.score_with_stats(problems, segments, deadline)
        return {"scores": scores, "stats": stats.as_dict()}

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")


class _CappedHTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` connections get a handler thread. One more is answered 503
    (nothing of it was read, so sending it again is safe) from a short-lived thread of its own,
    which reads what the client sent so that it gets the answer rather than a reset; past a
    second cap of such answers, connections are closed at once."""

    daemon_threads = True
    REFUSE_S = 2.0

    def __init__(self, address, handler, max_connections: int, on_refuse):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._holders: set[int] = set()  # id() of the requests that hold a slot
        self._holders_lock = threading.Lock()
        self._refusals = threading.BoundedSemaphore(max_connections)
        self._on_refuse = on_refuse

    def _release_slot(self, request) -> None:
        # Exactly once per request: Ctrl-C can land in Thread.start() after the handler thread
        # began, and both that thread and the caller then try to give the slot back.
        with self._holders_lock:
            if id(request) not in self._holders:
                return
            self._holders.discard(id(request))
        self._slots.release()

    def process_request(self, request, client_address):
        if self._slots.acquire(blocking=False):
            with self._holders_lock:
                self._holders.add(id(request))
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._release_slot(request)
                raise
            return
        self._on_refuse()
        if self._refusals.acquire(blocking=False):
            threading.Thread(target=self._refuse, args=(request,), daemon=True).start()
        else:
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release_slot(request)

    def _refuse(self, request) -> None:
        body = b'{"error": "too many open connections; try again"}'
        try:
            request.settimeout(self.REFUSE_S)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(body), body))
            request.shutdown(socket.SHUT_WR)
            end = time.monotonic() + self.REFUSE_S
            while time.monotonic() < end and request.recv(1 << 16):
                pass
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._refusals.release()


class PRMServer:
    """Serve ``scorer`` (a PRMScorer or PRMActorGroup) over HTTP.

    ``port=0`` picks a free port (see ``.port``). ``token``: bearer token required on /score and
    /info (None = no auth; only sensible on 127.0.0.1; a blank token is refused). Limits:
    ``max_request_bytes`` of body, ``max_request_chars`` of text in problems and segments,
    ``max_segments`` per response, ``call_timeout_s`` per call, ``max_connections`` open at once,
    ``idle_timeout_s`` for a connection that sends nothing.
    """

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
                        "disconnected": 0, "refused_connections": 0, "in_flight": 0,
                        "responses": 0, "segments": 0, "filled_segments": 0}
        handler = type("PRMHandler", (_Handler,), {"service": self, "timeout": self.idle_timeout_s})
        self.httpd = _CappedHTTPServer((host, port), handler, self.max_connections,
                                       lambda: self.count("refused_connections"))
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "PRMServer":
        """Serve from a background thread (tests, or a trainer hosting the service)."""
        self._thread = threading.Thread(target=self.serve_forever, name="prm-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
