"""A private Ray head on this machine: its own ports and temp dir, stopped by stopping it alone.

``ray stop`` stops every Ray on the machine, other users' included; ``ray start --head --block``
in a session of its own is one process whose SIGTERM takes down exactly the head it started
(GCS, raylet, dashboard, and the workers and jobs under them). Every port of the head comes from a
block it holds alone (reserve_port_block), so a head already running here (on Ray's default ports)
keeps running and is never joined by mistake, and heads started at once never share a port.

As a command (scripts/run_tiny_cpu.sh uses it), it runs one command against such a head:

    python -m prpo_openrlhf.local.cluster run --num-gpus 4 --num-cpus 8 -- bash launch.sh

starts the head, runs the command with RAY_ADDRESS set to it, stops the head and exits with the
command's status (128 + N when a signal N ended it).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
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


# Every port of a head is given explicitly, from a block of PORT_RANGE that the head holds alone:
# Ray's defaults (worker ports 10002-19999, agents on ports picked at start-up) were seen to
# collide when two heads start at once (one's dashboard agent lost 0.0.0.0:10002 to the other).
# The range lies below the kernel's ephemeral range (32768-60999 by default) and above Ray's
# default worker ports, so no port the OS hands to another process can be one of a block's.
PORT_RANGE = (20000, 32000)
BLOCK_SIZE = 200  # 9 named ports, the rest for the workers (one per Ray worker process)
NAMED_PORTS = ("gcs", "dashboard", "client", "agent_listen", "agent_grpc", "runtime_env_agent",
               "metrics_export", "object_manager", "node_manager")
_LOCK_DIR = Path(tempfile.gettempdir()) / "prpo-ray-ports"


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def reserve_port_block():
    """(open lock file, ports) for a block of BLOCK_SIZE ports of PORT_RANGE, every one free now and
    reserved for as long as the lock file stays open: an flock on the block's file in a folder
    shared by every user of the machine, so two heads started at once, from any process, never
    share a port; the kernel drops the lock when the holder dies. ``ports`` maps each of
    NAMED_PORTS to a port and ``workers`` to (first, last) of the workers' range. Raises
    RuntimeError when no block is free."""
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        _LOCK_DIR.chmod(0o1777)  # other users' heads reserve here too
    starts = list(range(PORT_RANGE[0], PORT_RANGE[1] - BLOCK_SIZE + 1, BLOCK_SIZE))
    random.SystemRandom().shuffle(starts)
    for start in starts:
        try:
            lock = open(_LOCK_DIR / f"{start}.lock", "a")  # another user's file: PermissionError
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        if all(_free(port) for port in range(start, start + BLOCK_SIZE)):
            ports = dict(zip(NAMED_PORTS, range(start, start + len(NAMED_PORTS))))
            ports["workers"] = (start + len(NAMED_PORTS), start + BLOCK_SIZE - 1)
            return lock, ports
        lock.close()  # something of the machine uses a port of it
    raise RuntimeError(f"no block of {BLOCK_SIZE} free ports left in {PORT_RANGE[0]}-{PORT_RANGE[1]} "
                       f"for a private Ray head (reservations in {_LOCK_DIR})")


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


HEAD_STARTED = "Ray runtime started."  # `ray start` logs it once the node has registered
START_ATTEMPTS = 3
SETTLE_S = 3.0  # a started head must stay up this long to count as started


def _ray_env() -> dict:
    """The environment of a `ray start`: without RAY_ADDRESS (a node of its own cluster, not the
    caller's), and with this interpreter first on PATH, since jobs run `python` from the node's PATH."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _node_flags(ports: dict, num_gpus: int, num_cpus: int, resources: dict | None) -> list[str]:
    """`ray start` flags of every node, head or worker: its ports, from its block, and its resources."""
    return [f"--dashboard-agent-listen-port={ports['agent_listen']}", f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent']}", f"--metrics-export-port={ports['metrics_export']}",
            f"--object-manager-port={ports['object_manager']}", f"--node-manager-port={ports['node_manager']}",
            f"--min-worker-port={ports['workers'][0]}", f"--max-worker-port={ports['workers'][1]}",
            f"--num-gpus={num_gpus}", f"--num-cpus={num_cpus}", "--disable-usage-stats",
            *([f"--resources={json.dumps(resources)}"] if resources else [])]


def _spawn_node(cmd: list[str], env: dict, log_file: Path, lock):
    """``ray start`` of one node in a session of its own, output appended to ``log_file``. The node
    holds its port block's lock too, so its ports stay reserved while either of us lives; a start
    that fails gives the block back."""
    try:
        with open(log_file, "ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    pass_fds=(lock.fileno(),))
    except BaseException:
        lock.close()
        raise


def _start_head(num_gpus: int, num_cpus: int, log_file: Path, ready_timeout_s: float, resources: dict | None = None):
    """One ``ray start --head --block`` on a reserved port block: (process, dashboard address, temp
    dir, the block's lock, the GCS address) once the node has registered and the dashboard
    answers. Raises RuntimeError if the head exits first (stopped and cleaned up), TimeoutError
    after ``ready_timeout_s``."""
    lock, ports = reserve_port_block()
    temp_dir = tempfile.mkdtemp(prefix="prpo-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    cmd = [_ray_cli(), "start", "--head", "--block", f"--port={ports['gcs']}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dashboard']}",
           f"--ray-client-server-port={ports['client']}", *_node_flags(ports, num_gpus, num_cpus, resources),
           f"--temp-dir={temp_dir}"]
    env = _ray_env()
    # The dashboard gives each of its modules 30 s to start, and `ray start` gives the dashboard
    # 60 s; on a busy 2-core machine both were seen to run out (the head then exits), so both
    # waits follow ready_timeout_s instead.
    env.setdefault("RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT", str(ready_timeout_s))
    env.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", str(int(ready_timeout_s)))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    offset = log_file.stat().st_size if log_file.exists() else 0  # the log is shared by every attempt
    proc = _spawn_node(cmd, env, log_file, lock)
    address = f"http://127.0.0.1:{ports['dashboard']}"
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
                            return proc, address, temp_dir, lock, f"127.0.0.1:{ports['gcs']}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray head did not start on {address} within {ready_timeout_s:.0f} s; "
                                   f"see {log_file}")
            time.sleep(1)
    except BaseException:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        lock.close()
        raise


@contextlib.contextmanager
def private_ray_head(*, num_gpus: int, num_cpus: int, log_file: Path, ready_timeout_s: float = 180.0,
                     resources: dict | None = None, workers: list[dict] = ()):
    """Start a head with ``num_gpus`` logical GPUs (and custom ``resources``); yields its dashboard
    address (for ``ray job submit`` and RAY_ADDRESS); stops it, and only it, on exit (SIGTERM,
    then SIGKILL of its process group after 30 s).

    ``workers``: more nodes of the same cluster on this machine, each ``ray start --address``
    with ports of its own and ``{"num_gpus", "num_cpus", "resources"}`` (a multi-node cluster in
    miniature: the custom resources name the nodes); stopped before the head.

    A head that exits during its start-up (or within ``SETTLE_S`` of it) is started again, on
    new ports, up to ``START_ATTEMPTS`` times: Ray gives a new node's raylet a fixed 30 s to
    register with the GCS, which a machine busy with other trainings was seen to exceed, and a
    head started beside others was seen to lose its client-server port and exit."""
    log_file = Path(log_file)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            proc, address, temp_dir, lock, gcs = _start_head(num_gpus, num_cpus, log_file, ready_timeout_s, resources)
            break
        except RuntimeError as err:
            if attempt == START_ATTEMPTS:
                raise
            print(f"[cluster] {err} (attempt {attempt} of {START_ATTEMPTS}); starting it again", file=sys.stderr,
                  flush=True)
    nodes = []  # (process, lock) of each worker node
    try:
        for i, worker in enumerate(workers):
            nodes.append(_start_worker(gcs, log_file.with_name(f"{log_file.stem}-worker{i + 1}.log"),
                                       ready_timeout_s, **worker))
        yield address
    finally:
        for node, node_lock in nodes:
            _stop(node)
            node_lock.close()
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        lock.close()  # the head's ports may be reserved again


def _start_worker(gcs: str, log_file: Path, ready_timeout_s: float, *, num_gpus: int = 0, num_cpus: int = 1,
                  resources: dict | None = None):
    """``ray start --address GCS --block`` on a port block of its own: (process, the block's lock)
    once it has joined; RuntimeError if it exits first, TimeoutError after ``ready_timeout_s``."""
    lock, ports = reserve_port_block()
    cmd = [_ray_cli(), "start", f"--address={gcs}", "--block", *_node_flags(ports, num_gpus, num_cpus, resources)]
    proc = _spawn_node(cmd, _ray_env(), log_file, lock)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while HEAD_STARTED.encode() not in log_file.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(f"a Ray worker node exited with {proc.returncode} at start-up; see {log_file}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"a Ray worker node did not join {gcs} within {ready_timeout_s:.0f} s; see {log_file}")
            time.sleep(1)
    except BaseException:
        _stop(proc)
        lock.close()
        raise
    return proc, lock


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
                code = end_group(proc, grace_s)
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


def end_group(proc: subprocess.Popen, grace_s: float) -> int:
    """SIGTERM to ``proc``'s process group (started with ``start_new_session``), SIGKILL after
    ``grace_s``; its exit code."""
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
