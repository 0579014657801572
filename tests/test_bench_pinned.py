"""benchmarks/bench_pinned.py's hardware model: the CPU quota that gives the shared PRM server a
third of its core holds the server's whole process tree (children started before the quota and
after it), and the kinds' table is what the report reads."""
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pinned.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pinned", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


def test_quota_holds_a_process_tree_to_its_share(bench):
    try:
        group = bench.cpu_quota_group(f"prpo-test-quota-{time.monotonic_ns()}")
    except SystemExit as e:
        pytest.skip(f"no writable cgroup cpu controller here: {e}")
    spin = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 60: pass\n"
    # a parent that starts one spinning child now and spins itself: both must be held
    tree = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\n"
                             f"subprocess.Popen([sys.executable, '-c', {spin!r}])\n{spin}"])
    try:

        deadline = time.monotonic() + 30
        while not psutil.Process(tree.pid).children() and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [tree.pid, *(c.pid for c in psutil.Process(tree.pid).children())]
        assert len(pids) == 2
        bench.limit_cpu(group, tree.pid, 0.25)
        assert sorted(int(x) for x in (group / "cgroup.procs").read_text().split()) == sorted(pids)
        before, t0 = _cpu_seconds(pids), time.monotonic()
        time.sleep(3.0)
        used = (_cpu_seconds(pids) - before) / (time.monotonic() - t0)
        # two spinning processes unlimited would use up to 2 cores; the quota is a hard cap
        # (a quarter core per 100 ms period), one period of slack for the edges of the window
        assert used <= 0.25 + 0.1, f"{used:.2f} cores used under a 0.25-core quota"
    finally:
        for p in psutil.Process(tree.pid).children(recursive=True):
            p.kill()
        tree.kill()
        tree.wait()
        bench.remove_group(group)
    assert not group.exists()


def test_kinds(bench):
    assert bench.KINDS["PRPO server x3"].trainings == 3 and bench.KINDS["PRPO server"].trainings == 1
    assert bench.KINDS["PRPO exact"].prm == "exact" and bench.KINDS["PRPO"].trainings == 0
    assert set(bench.DEFAULT_KINDS) <= set(bench.KINDS)
    runs = [{"step_total": [9.0, 10.0, 12.0, 11.0], "wait_s": [1.0, 1.0, 3.0, 1.1], "generation": [5.0] * 4}]
    s = bench.summary(runs, skip=1)
    assert s["step_s"] == 11.0 and s["wait_s"] == 1.1 and s["generation"] == 5.0 and "forward_responses" not in s
    assert s["wait_share"] == pytest.approx(0.1)


def test_concurrent_trainings_are_measured_while_all_of_them_train(bench):
    """Three trainings of 60-s steps started 0, 100 and 200 s apart: with one warm-up step left
    out, the window runs from the third one's first step end (260 s) to the first one's end (600 s)."""
    runs = [{"step_total": [60.0] * 10, "ended_at": [t0 + 60.0 * (i + 1) for i in range(10)]} for t0 in (0, 100, 200)]
    bench.common_window(runs, skip=1)
    # steps that start at or after 260 s and end by 600 s
    assert [r["window"] for r in runs] == [[5, 10], [3, 8], [1, 6]]
    s = bench.summary(runs, skip=1)
    assert s["n"] == 15 and s["per_run"] == [60.0, 60.0, 60.0]
    with pytest.raises(ValueError, match="measured step"):
        bench.summary([{"step_total": [1.0, 2.0], "window": [0, 0]}], skip=1)
