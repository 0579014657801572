"""Client of the PRM HTTP service (``prpo-serve-prm``), with one deadline per call.

    client = PRMClient("http://127.0.0.1:8000", token=os.environ.get("PRPO_PRM_TOKEN"))
    scores = client.score(problems, segments)
    future = client.score_async(problems, segments)   # (scores, stats) = future.result()

Every call has one deadline, ``timeout_s`` from the moment it is made (``score_async``: from
dispatch, so time spent waiting for a free request slot counts). The service is told how much
of it is left (header ``X-PRM-Timeout-S``) and answers 504 when it runs out; the client gives up
a few seconds later at most. A POST is sent again only when it surely was not taken: the
connection could not be opened, or the service answered 429/502/503. A POST whose outcome is
unknown (no answer in time, the connection cut after sending) is never sent again, since the
service may still be scoring it; the call fails with :class:`PRMClientError` instead. GETs are
retried on any network error. Other 4xx (the request is wrong and will stay wrong), 500 (the
PRM failed on this input) and 504 are not retried. Backoff is exponential with jitter so that
several trainings do not retry in lockstep. Each request opens its own connection: an idle
kept-alive one may be closed by the service at any moment, and a POST on it would end with an
unknown outcome.
"""
from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor

import requests
from urllib3.exceptions import ConnectTimeoutError

from .scorer import PRMStats

logger = logging.getLogger(__name__)

RETRY_STATUS = {429, 502, 503}
TOKEN_ENV = "PRPO_PRM_TOKEN"
# Hosts on which the PRM servers (prpo-serve-prm, vllm_serve) start without a token and no warning.
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEADLINE_HEADER = "X-PRM-Timeout-S"
# The client waits this much past the deadline so that the service's own 504 reaches it.
GRACE_S = 5.0


class PRMClientError(RuntimeError):
    """The service refused the request, stayed unreachable, or the deadline passed; ``status``
    is the HTTP status, or None when there was no answer."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _not_sent(err: requests.RequestException) -> bool:
    """True when the connection was never opened, so the service cannot have the request."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    reason = getattr(err.args[0] if err.args else None, "reason", None)
    return isinstance(reason, ConnectTimeoutError)  # urllib3's NewConnectionError is one


class PRMClient:
    """Options: token (default: $PRPO_PRM_TOKEN), timeout_s (600: the deadline of one call; a
    large batch on a busy shared PRM takes minutes), connect_timeout_s (5), retries (3 extra
    attempts, within the deadline), backoff_s (1.0, doubled per attempt), max_backoff_s (30),
    max_in_flight (4: score_async requests sent at once, so that a service with several PRM
    actors scores several prompt groups side by side)."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 600.0,
                 connect_timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, max_in_flight: int = 4):
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s, self.connect_timeout_s = float(timeout_s), float(connect_timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._pool: ThreadPoolExecutor | None = None
        self.max_in_flight = max(1, int(max_in_flight))

    def _headers(self) -> dict:
        headers = {"Connection": "close"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _request(self, method: str, path: str, payload: dict | None = None,
                 deadline: float | None = None) -> dict:
        deadline = time.monotonic() + self.timeout_s if deadline is None else deadline
        where, last = f"PRM service {self.url}{path}", "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                time.sleep(min(delay * random.uniform(0.5, 1.0), max(0.0, deadline - time.monotonic())))
            left = deadline - time.monotonic()
            if left <= 0:
                raise PRMClientError(f"{where}: the call's deadline ({self.timeout_s:g} s) passed "
                                     f"after {attempt} attempt(s); last: {last}")
            headers = {**self._headers(), DEADLINE_HEADER: f"{left:.3f}"}
            try:
                resp = requests.request(method, self.url + path, json=payload, headers=headers,
                                        timeout=(min(self.connect_timeout_s, left), left + GRACE_S))
            except requests.RequestException as err:
                last = f"{type(err).__name__}: {err}"
                if method == "POST" and not _not_sent(err):
                    raise PRMClientError(
                        f"{where}: no answer ({last}); the service may still be scoring this "
                        "request, so it is not sent again") from err
                logger.warning("%s unreachable (attempt %d of %d): %s", where, attempt + 1,
                               self.retries + 1, last)
                continue
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError as err:
                    raise PRMClientError(f"{where} answered 200 with a body that is not "
                                         f"JSON ({err}): {resp.text[:200]!r}") from err
            message = _error_message(resp)
            if resp.status_code not in RETRY_STATUS:
                raise PRMClientError(f"{where} answered {resp.status_code}: {message}",
                                     resp.status_code)
            last = f"HTTP {resp.status_code}: {message}"
            logger.warning("%s busy (attempt %d of %d): %s", where, attempt + 1,
                           self.retries + 1, last)
        raise PRMClientError(f"{where} failed after {self.retries + 1} attempts; last: {last}")

    def health(self) -> dict:
        return self._request("GET", "/health")

    def info(self) -> dict:
        return self._request("GET", "/info")

    def score_with_stats(self, problems: list[str], segments: list[list[str]],
                         deadline: float | None = None) -> tuple[list[list[float]], PRMStats]:
        """``deadline``: a ``time.monotonic()`` value (default: ``timeout_s`` from now)."""
        out = self._request("POST", "/score", {"problems": list(problems),
                                               "segments": [list(s) for s in segments]}, deadline)
        return checked_reply(out, segments, f"PRM service {self.url}/score")

    def score(self, problems: list[str], segments: list[list[str]]) -> list[list[float]]:
        return self.score_with_stats(problems, segments)[0]

    def score_async(self, problems, segments) -> Future:
        """Send in a background thread; ``.result()`` gives (scores, stats). The deadline runs
        from now, so waiting for a free slot (``max_in_flight``) counts."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="prm-client")
        return self._pool.submit(self.score_with_stats, problems, segments,
                                 time.monotonic() + self.timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def checked_reply(out, segments, source: str) -> tuple[list[list[float]], PRMStats]:
    """(scores, stats) of a /score reply, or PRMClientError naming what is wrong with it.

    Every score that reaches the advantages must be a finite number in [0, 1], one per segment
    of the request: nothing is filled in and nothing passes unchecked.
    """
    if not isinstance(out, dict) or not isinstance(out.get("scores"), list):
        what = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise PRMClientError(f"{source}: the reply has no 'scores' list (it holds: {what})")
    scores = out["scores"]
    if len(scores) != len(segments):
        raise PRMClientError(f"{source}: {len(scores)} score lists for {len(segments)} responses")
    for i, (row, segs) in enumerate(zip(scores, segments)):
        if not isinstance(row, list) or len(row) != len(segs):
            raise PRMClientError(f"{source}: response {i}: {row!r:.80} is not {len(segs)} scores")
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise PRMClientError(f"{source}: response {i}, segment {j}: score {value!r:.40} is not a "
                                     "finite number in [0, 1]")
    try:
        stats = PRMStats.from_dict(out["stats"])
    except (KeyError, TypeError) as err:
        raise PRMClientError(f"{source}: the reply's 'stats' are missing or malformed ({err})") from err
    return [[float(v) for v in row] for row in scores], stats


def _error_message(resp) -> str:
    try:
        return str(resp.json().get("error", resp.text[:200]))
    except ValueError:
        return resp.text[:200]
