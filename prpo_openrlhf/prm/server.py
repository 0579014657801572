"""A small HTTP service around a PRM scorer, shared by several trainings (paper §4, Table 1).

Endpoints (JSON in, JSON out):
  GET  /health   -> {"status": "ok"}                         (no token needed: for probes)
  GET  /info     -> model, backend, max_length, counters      (token needed if one is set)
  POST /score    {"problems": [str], "segments": [[str]]}
                 -> {"scores": [[float]], "stats": {...}}     (token needed if one is set)

Errors are JSON ``{"error": "..."}`` with 400 (malformed body), 401 (missing/wrong bearer
token), 404, 405, 411 (no Content-Length), 413 (body over the size limit), 500 (the PRM failed,
e.g. non-finite scores). The stdlib ThreadingHTTPServer is enough: a training sends one request per
prompt group (a few responses each, while its vLLM engines generate the others), and scoring
is serialised behind a lock when one in-process model serves all (with ``--num-actors``, requests
go to the actors side by side).
Binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .inputs import validate_batch
from .scorer import PRMScoreError

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 32 << 20


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: a training reuses one connection
    timeout = 120                   # seconds a client may take to send its request
    server_version = "prpo-prm"
    service: "PRMServer"            # set on the subclass built by PRMServer

    def log_message(self, fmt, *args):  # route access logs through logging, not stderr
        logger.info("%s %s", self.address_string(), fmt % args)

    def _send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="prpo-prm"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

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
            raise _HTTPError(400, f"bad Content-Length {length!r}") from None
        if length < 0 or length > self.service.max_request_bytes:
            # The body is left unread, so this connection cannot be reused.
            self.close_connection = True
            raise _HTTPError(413, f"request body of {length} bytes exceeds the limit of "
                                  f"{self.service.max_request_bytes} bytes")
        self._body_read = True
        try:
            return json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _HTTPError(400, f"body is not valid JSON: {err}") from None

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
                raise _HTTPError(404, f"no such endpoint {path}")
            if path != "/health":
                self._check_token()
            self._send_json(200, route())
            return
        except _HTTPError as err:
            self.service.count("rejected")
            status, message = err.status, err.message
        except PRMScoreError as err:
            self.service.count("failed")
            status, message = 500, f"PRM scoring failed: {err}"
        except Exception as err:  # a bug or a dead backend: report it, keep serving
            logger.exception("PRM request failed")
            self.service.count("failed")
            status, message = 500, f"{type(err).__name__}: {err}"
        # A body may be left unread after an error; never reuse such a connection.
        self._drain_body()
        self.close_connection = True
        self._send_json(status, {"error": message})

    @staticmethod
    def _health() -> dict:
        return {"status": "ok"}

    def _score(self) -> dict:
        body = self._read_json()
        if not isinstance(body, dict) or "problems" not in body or "segments" not in body:
            raise _HTTPError(400, 'body must be a JSON object {"problems": [...], '
                                  '"segments": [[...], ...]}')
        problems, segments = body["problems"], body["segments"]
        try:
            validate_batch(problems, segments)
        except (TypeError, ValueError) as err:
            raise _HTTPError(400, str(err)) from None
        scores, stats = self.service.score_with_stats(problems, segments)
        return {"scores": scores, "stats": stats.as_dict()}

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")


class PRMServer:
    """Serve ``scorer`` (a PRMScorer or PRMActorGroup) over HTTP.

    ``port=0`` picks a free port (see ``.port``). ``token``: bearer token required on /score and
    /info (None = no auth; only sensible on 127.0.0.1).
    """

    def __init__(self, scorer, host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.scorer = scorer
        self.token = token or None
        self.max_request_bytes = int(max_request_bytes)
        self._score_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counts = {"served": 0, "rejected": 0, "failed": 0, "responses": 0,
                        "segments": 0, "filled_segments": 0}
        handler = type("PRMHandler", (_Handler,), {"service": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
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

    def score_with_stats(self, problems, segments):
        # One in-process model: scoring is serialised and requests queue in their threads. A
        # PRMActorGroup takes calls side by side (each actor queues its own), so that requests
        # of one prompt group each keep all its actors busy.
        lock = contextlib.nullcontext() if getattr(self.scorer, "concurrent_calls", False) else self._score_lock
        with lock:
            scores, stats = self.scorer.score_with_stats(problems, segments)
        with self._count_lock:
            self._counts["served"] += 1
            self._counts["responses"] += stats.responses
            self._counts["segments"] += stats.segments
            self._counts["filled_segments"] += stats.filled_segments
        return scores, stats

    def info_payload(self) -> dict:
        info = self.scorer.info() if hasattr(self.scorer, "info") else {}
        if isinstance(info, list):  # PRMActorGroup: one dict per actor
            info = {"actors": info}
        with self._count_lock:
            return {**info, "counts": dict(self._counts),
                    "max_request_bytes": self.max_request_bytes}

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
