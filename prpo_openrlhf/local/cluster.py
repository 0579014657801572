"""A private Ray head on this machine: its own ports and temp dir, stopped by stopping it alone.

``ray stop`` stops every Ray on the machine, other users' included; ``ray start --head --block``
in a session of its own is one process whose SIGTERM takes down exactly the head it started
(GCS, raylet, dashboard, and the workers and jobs under them). Ports are picked free, so a head
already running here (on Ray's default ports) keeps running and is never joined by mistake.

As a command (scripts/run_tiny_cpu.sh uses it), it runs one command against such a head:

    python -m prpo_openrlhf.local.cluster run --num-gpus 4 --num-cpus 8 -- bash launch.sh

starts the head, runs the command with RAY_ADDRESS set to it, stops the head and exits with the
command's status (128 + N when a signal N ended it).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests


_HANDED_OUT: set[int] = set()  # ports given to heads of this process: some bind them only later
# Our heads' ports come from below the kernel's ephemeral range (32768-60999 by default) and above
# Ray's worker ports (10002-19999): a port the OS hands to any other process (a second head's
# raylet, its agents) can then never be one we picked and have not bound yet. Seen: two heads
# started at once, one's dashboard agent lost its port to the other and jobs could not start.
PORT_RANGE = (20000, 32000)


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports of PORT_RANGE free on 127.0.0.1 right now, none handed out before by
    this process (random picks: two processes rarely draw the same one)."""
    rng = random.SystemRandom()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(*PORT_RANGE)
        if port in _HANDED_OUT or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    _HANDED_OUT.update(ports)
    return ports


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


HEAD_STARTED = "Ray runtime started."  # `ray start` logs it once the node has registered
START_ATTEMPTS = 3
SETTLE_S = 3.0  # a started head must stay up this long to count as started


def _start_head(num_gpus: int, num_cpus: int, log_file: Path, ready_timeout_s: float):
    """One ``ray start --head --block`` on free ports: (process, dashboard address, temp dir) once
    the node has registered and the dashboard answers. Raises RuntimeError if the head exits
    first (stopped and cleaned up), TimeoutError after ``ready_timeout_s``."""
    gcs, dashboard, client, agent = free_ports(4)
    temp_dir = tempfile.mkdtemp(prefix="prpo-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    cmd = [_ray_cli(), "start", "--head", "--block", f"--port={gcs}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--num-gpus={num_gpus}", f"--num-cpus={num_cpus}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    # Jobs run `python` from the head's PATH: this interpreter's, venv included.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The dashboard gives each of its modules 30 s to start, and `ray start` gives the dashboard
    # 60 s; on a busy 2-core machine both were seen to run out (the head then exits), so both
    # waits follow ready_timeout_s instead.
    env.setdefault("RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT", str(ready_timeout_s))
    env.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", str(int(ready_timeout_s)))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    offset = log_file.stat().st_size if log_file.exists() else 0  # the log is shared by every attempt
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + ready_timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Ray head exited with {proc.returncode} at start-up; see {log_file}")
            with open(log_file, "rb") as log:
                log.seek(offset)
                registered = HEAD_STARTED.encode() in log.read()
            if registered:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{address}/api/version", timeout=2).ok:
                        # `ray start --block` stops the whole head when one of its processes exits;
                        # one that lost its port to a concurrent start was seen to exit a second later.
                        time.sleep(SETTLE_S)
                        if proc.poll() is None:
                            return proc, address, temp_dir
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray head did not start on {address} within {ready_timeout_s:.0f} s; "
                                   f"see {log_file}")
            time.sleep(1)
    except BaseException:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def private_ray_head(*, num_gpus: int, num_cpus: int, log_file: Path, ready_timeout_s: float = 180.0):
    """Start a head with ``num_gpus`` logical GPUs; yields its dashboard address (for ``ray job
    submit`` and RAY_ADDRESS); stops it, and only it, on exit (SIGTERM, then SIGKILL of its
    process group after 30 s).

    A head that exits during its start-up (or within ``SETTLE_S`` of it) is started again, on
    new ports, up to ``START_ATTEMPTS`` times: Ray gives a new node's raylet a fixed 30 s to
    register with the GCS, which a machine busy with other trainings was seen to exceed, and a
    head started beside others was seen to lose its client-server port and exit."""
    log_file = Path(log_file)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            proc, address, temp_dir = _start_head(num_gpus, num_cpus, log_file, ready_timeout_s)
            break
        except RuntimeError as err:
            if attempt == START_ATTEMPTS:
                raise
            print(f"[cluster] {err} (attempt {attempt} of {START_ATTEMPTS}); starting it again", file=sys.stderr,
                  flush=True)
    try:
        yield address
    finally:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of the head's session still there
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def run_command(cmd: list[str], *, num_gpus: int, num_cpus: int, log_file: Path, grace_s: float = 60.0,
                log=print) -> int:
    """Run ``cmd`` with RAY_ADDRESS set to a private head; returns its exit status.

    The command runs in a session of its own, so a SIGINT or SIGTERM to us reaches it once, as
    SIGTERM to its whole group (a launch script then stops its job); after ``grace_s`` the group
    is killed. The head is stopped in every case.
    """
    interrupted: list[int] = []

    def on_signal(signum, frame):
        if not interrupted:
            interrupted.append(signum)
            raise KeyboardInterrupt

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with private_ray_head(num_gpus=num_gpus, num_cpus=num_cpus, log_file=log_file) as address:
            log(f"[cluster] private Ray head at {address} (log {log_file})", file=sys.stderr)
            proc = subprocess.Popen(cmd, env={**os.environ, "RAY_ADDRESS": address}, start_new_session=True)
            start = time.monotonic()
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                code = _end_group(proc, grace_s)
            log(f"[cluster] {Path(cmd[0]).name} exited with {code} after {time.monotonic() - start:.0f} s; "
                f"stopping the Ray head at {address}", file=sys.stderr)
    except KeyboardInterrupt:  # a signal while the head started: it is stopped already
        code = None
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if interrupted or code is None:
        return 128 + (interrupted or [signal.SIGINT])[0]
    return code if code >= 0 else 128 - code  # Popen gives -N for "killed by signal N"


def _end_group(proc: subprocess.Popen, grace_s: float) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m prpo_openrlhf.local.cluster")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command against a private Ray head, then stop the head")
    run.add_argument("--num-gpus", type=int, required=True, help="logical GPUs of the head")
    run.add_argument("--num-cpus", type=int, required=True)
    run.add_argument("--log-file", type=Path, default=None,
                     help="the head's output (default: a new file under the system's temp dir)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("run: give the command after --, e.g. run --num-gpus 4 --num-cpus 8 -- bash launch.sh")
    if args.num_gpus < 0 or args.num_cpus < 1:
        p.error(f"run: --num-gpus {args.num_gpus} must be >= 0 and --num-cpus {args.num_cpus} >= 1")
    log_file = args.log_file or Path(tempfile.mkstemp(prefix="prpo-ray-head-", suffix=".log")[1])
    try:
        return run_command(cmd, num_gpus=args.num_gpus, num_cpus=args.num_cpus, log_file=log_file)
    except (RuntimeError, TimeoutError) as exc:  # the head did not start: the message names its log
        print(f"[cluster] {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"[cluster] cannot run {cmd[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
