"""An exclusive lock on an evaluation's output folder, held for a run's whole lifetime.

Two runs on one folder each read ``run_config.json`` before either wrote it, then appended
samples of different settings under the same keys; the folder then held a mix that no later
run could tell apart. A run now takes ``fcntl.flock`` on ``<output_dir>/.prpo-eval.lock``
before it reads anything there and keeps it until it returns. The kernel drops the lock when
its holder dies (even by SIGKILL), so a crashed run never leaves the folder locked. The file
records the holder (pid, host, command) for the message a refused run prints.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .store import StoreError

LOCK_FILE = ".prpo-eval.lock"


class OutputLock:
    """``with OutputLock(dir):`` holds ``dir`` or raises StoreError naming the holder at once."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{self.path.parent} is in use by another prpo-eval run "
                             f"({self._holder()}); wait for it to end, or use another "
                             "--output_dir") from None
        # The file is rewritten only under the lock, and never removed: removing it would let
        # a third run lock a new file while the second still holds the old one.
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def _holder(self) -> str:
        # The holder writes its record just after it takes the lock: allow it a moment.
        for _ in range(20):
            try:
                info = json.loads(self.path.read_text())
                cmd = " ".join(map(str, info["command"]))
                return f"pid {info['pid']} on host {info['host']}, since {info['started']}: {cmd}"
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.05)
        return f"holder not recorded in {self.path}"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
