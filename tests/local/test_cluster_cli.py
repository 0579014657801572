"""`python -m prpo_openrlhf.local.cluster run`: the private head of scripts/run_tiny_cpu.sh
(#24 item 3). It runs one command with RAY_ADDRESS set to a head of its own (free ports, own
temp dir), stops that head alone, and exits with the command's status."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from prpo_openrlhf.local.cluster import main

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("argv, message", [
    (["run", "--num-gpus", "1", "--num-cpus", "2"], "give the command after --"),
    (["run", "--num-gpus", "1", "--num-cpus", "2", "--"], "give the command after --"),
    (["run", "--num-gpus", "-1", "--num-cpus", "2", "--", "true"], "--num-gpus -1 must be >= 0"),
    (["run", "--num-cpus", "2", "--", "true"], "--num-gpus"),
])
def test_bad_arguments_are_named_before_any_head_starts(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_command_runs_against_its_own_head_and_its_status_is_the_exit_status(tmp_path):
    """One private head: the command sees RAY_ADDRESS (not Ray's default port), its arguments
    arrive unchanged, its exit status 7 comes back, and the head is gone afterwards."""
    probe = ("import os, sys, requests; a = os.environ['RAY_ADDRESS']; "
             "print('ADDRESS', a, requests.get(a + '/api/version', timeout=10).ok, sys.argv[1:]); sys.exit(7)")
    out = subprocess.run([sys.executable, "-m", "prpo_openrlhf.local.cluster", "run", "--num-gpus", "2",
                          "--num-cpus", "1", "--log-file", str(tmp_path / "head.log"), "--",
                          sys.executable, "-c", probe, "--flag", "a b"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 7, out.stdout + out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("ADDRESS")]
    _, address, answered, args = line.split(" ", 3)
    assert answered == "True" and args == "['--flag', 'a b']"
    assert not address.endswith(":8265")  # free ports, never the default ones
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{address}/api/version", timeout=5)
    assert f"private Ray head at {address}" in out.stderr


def test_port_blocks_are_reserved_across_processes_and_skip_ports_in_use(tmp_path, monkeypatch):
    """Three blocks of 20 ports: one is held by another process (flock), one has a port bound by
    something else; the only block left is handed out, then none is, until it is given back."""
    import socket

    from prpo_openrlhf.local import cluster
    monkeypatch.setattr(cluster, "_LOCK_DIR", tmp_path / "locks")
    monkeypatch.setattr(cluster, "BLOCK_SIZE", 20)
    start = 20000 + 20 * (os.getpid() % 500)  # spread concurrent test runs over the range
    monkeypatch.setattr(cluster, "PORT_RANGE", (start, start + 60))
    (tmp_path / "locks").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(60)"), str(tmp_path / "locks" / f"{start}.lock")],
        stdout=subprocess.PIPE, text=True)
    busy = socket.socket()
    try:
        assert holder.stdout.readline().strip() == "held"
        busy.bind(("0.0.0.0", start + 20 + 13))  # a worker port of the second block
        lock, ports = cluster.reserve_port_block()
        assert ports["gcs"] == start + 40 and ports["workers"] == (start + 49, start + 59)
        assert sorted(ports[name] for name in cluster.NAMED_PORTS) == list(range(start + 40, start + 49))
        with pytest.raises(RuntimeError, match="no block of 20 free ports"):
            cluster.reserve_port_block()
        lock.close()
        lock, again = cluster.reserve_port_block()
        assert again == ports
        lock.close()
    finally:
        holder.kill()
        busy.close()
