"""Local servers for tests and benchmarks: a free port, and the wait until a server answers."""
from __future__ import annotations

import socket
import subprocess
import time

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    """Until ``GET url/health`` answers 200. RuntimeError naming ``what`` when ``proc`` ends
    first or ``timeout_s`` passes (a server that never binds must not hang its caller)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url + "/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before answering {url}/health")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url}/health within {timeout_s:.0f} s")
        time.sleep(1)
