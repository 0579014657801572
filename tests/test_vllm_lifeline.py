"""vllm_lifeline: a child started with multiprocessing (spawned, or forked by a process that loaded
the plugin) exits when its parent is SIGKILLed; a process nobody started with multiprocessing
is never armed. (vLLM's own engine core, orphaned by a killed Ray actor: the dead-engine test
of tests/trainer/test_real_pipeline.py.)"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent("""
    import multiprocessing, os, sys, time
    from prpo_openrlhf import vllm_lifeline

    def spawned_child():
        vllm_lifeline.register()  # what vLLM does on loading its plugins in a new process
        time.sleep(120)

    def forked_child():
        time.sleep(120)

    if __name__ == "__main__":
        method = sys.argv[1]
        if method == "fork":
            vllm_lifeline.register()  # the parent is a vLLM process: its plugins are loaded
            print("parent armed:", vllm_lifeline.arm(), flush=True)
        ctx = multiprocessing.get_context(method)
        child = ctx.Process(target=spawned_child if method == "spawn" else forked_child, daemon=True)
        child.start()
        print(child.pid, flush=True)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its (new) parent is gone too
        return f.read().split(") ")[1][0] != "Z"


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_child_exits_when_its_parent_is_killed(method, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE, text=True)
    try:
        if method == "fork":
            assert parent.stdout.readline().strip() == "parent armed: False"  # not started by multiprocessing
        child = int(parent.stdout.readline())
        time.sleep(2.0 if method == "spawn" else 0.5)  # the spawned child imports and arms
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), f"{method} child {child} outlived its killed parent"
    finally:
        parent.kill()


def test_a_process_not_started_by_multiprocessing_is_never_armed():
    out = subprocess.run([sys.executable, "-c", "from prpo_openrlhf import vllm_lifeline as v; v.register(); "
                          "print(v.arm(), v._armed_in)"], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "None"], out.stderr
