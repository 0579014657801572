"""Client of the PRM HTTP service (``prpo-serve-prm``), with timeouts, retries and backoff.

    client = PRMClient("http://127.0.0.1:8000", token=os.environ.get("PRPO_PRM_TOKEN"))
    scores = client.score(problems, segments)
    future = client.score_async(problems, segments)   # (scores, stats) = future.result()

Retried: connection failures, timeouts, 429/502/503/504 (a service restarting or overloaded).
Not retried: other 4xx (the request is wrong and will stay wrong) and 500 (the PRM failed on
this input, e.g. non-finite scores; sending it again gives the same answer). Backoff is
exponential with jitter so that several trainings do not retry in lockstep.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import requests

from .scorer import PRMStats

logger = logging.getLogger(__name__)

RETRY_STATUS = {429, 502, 503, 504}
TOKEN_ENV = "PRPO_PRM_TOKEN"


class PRMClientError(RuntimeError):
    """The service refused the request or stayed unreachable; ``status`` is None if unreachable."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PRMClient:
    """Options: token (default: $PRPO_PRM_TOKEN), connect_timeout_s (5), read_timeout_s (600:
    a large batch on a busy shared PRM takes minutes), retries (3 extra attempts),
    backoff_s (1.0, doubled per attempt), max_backoff_s (30), max_in_flight (4: score_async
    requests sent at once, so that a service with several PRM actors scores several prompt
    groups side by side)."""

    def __init__(self, url: str, *, token: str | None = None, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 600.0, retries: int = 3, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, max_in_flight: int = 4):
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        # requests.Session is not thread-safe: one per thread (score_async uses a pool thread).
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.max_in_flight = max(1, int(max_in_flight))

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _sleep_before(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        time.sleep(delay * random.uniform(0.5, 1.0))

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep_before(attempt - 1)
            try:
                resp = self._session().request(method, self.url + path, json=payload,
                                             headers=self._headers(), timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as err:
                last = f"{type(err).__name__}: {err}"
                logger.warning("PRM service %s%s unreachable (attempt %d of %d): %s", self.url,
                               path, attempt + 1, self.retries + 1, last)
                continue
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError as err:
                    raise PRMClientError(f"PRM service {self.url}{path} answered 200 with a body that is not "
                                         f"JSON ({err}): {resp.text[:200]!r}") from err
            message = _error_message(resp)
            if resp.status_code not in RETRY_STATUS:
                raise PRMClientError(f"PRM service {self.url}{path} answered "
                                     f"{resp.status_code}: {message}", resp.status_code)
            last = f"HTTP {resp.status_code}: {message}"
            logger.warning("PRM service %s%s busy (attempt %d of %d): %s", self.url, path,
                           attempt + 1, self.retries + 1, last)
        raise PRMClientError(f"PRM service {self.url}{path} failed after "
                             f"{self.retries + 1} attempts; last: {last}")

    def health(self) -> dict:
        return self._request("GET", "/health")

    def info(self) -> dict:
        return self._request("GET", "/info")

    def score_with_stats(self, problems: list[str], segments: list[list[str]]
                         ) -> tuple[list[list[float]], PRMStats]:
        out = self._request("POST", "/score", {"problems": list(problems),
                                               "segments": [list(s) for s in segments]})
        return checked_reply(out, segments, f"PRM service {self.url}/score")

    def score(self, problems: list[str], segments: list[list[str]]) -> list[list[float]]:
        return self.score_with_stats(problems, segments)[0]

    def score_async(self, problems, segments) -> Future:
        """Send in a background thread; ``.result()`` gives (scores, stats)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="prm-client")
        return self._pool.submit(self.score_with_stats, problems, segments)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


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
        stats = PRMStats(**out["stats"])
    except (KeyError, TypeError) as err:
        raise PRMClientError(f"{source}: the reply's 'stats' are missing or malformed ({err})") from err
    return [[float(v) for v in row] for row in scores], stats


def _error_message(resp) -> str:
    try:
        return str(resp.json().get("error", resp.text[:200]))
    except ValueError:
        return resp.text[:200]
