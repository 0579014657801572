"""Two prpo-eval runs on one output folder: the second is refused at once, naming the first.

Folders are hand-written (``test_report.hand_run``): every sample is stored, so no model loads.
The holder is a real second process that takes the folder's lock, as a running prpo-eval does.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from prpo_openrlhf.cli.evaluate import main

from .test_report import hand_run  # noqa: F401  (fixture)

HOLD = ("import sys, time\n"
        "from prpo_openrlhf.eval.lock import OutputLock\n"
        "lock = OutputLock(sys.argv[1])\n"
        "lock.acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n")


@pytest.fixture
def holder(hand_run):  # noqa: F811
    """A process holding ``hand_run``'s output folder; killed at the end."""
    out = hand_run[1]
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "--marker-of-the-holder"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        pytest.fail(f"the holder did not take the lock: {line!r} {proc.stderr.read()}")
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(hand_run, holder, capsys):  # noqa: F811
    data, out, argv = hand_run
    before = (out / "generations.jsonl").read_bytes()
    t0 = time.monotonic()
    # The other run's settings differ too: it must not get as far as recording them.
    assert main(argv + ["--temperature", "1.5"]) == 2
    assert time.monotonic() - t0 < 10  # at once: no waiting for the lock
    err = capsys.readouterr().err
    assert str(out) in err and "in use" in err
    assert f"pid {holder.pid}" in err and socket.gethostname() in err
    assert "--marker-of-the-holder" in err  # its command line
    assert (out / "generations.jsonl").read_bytes() == before
    assert not (out / "run_config.json").exists() and not (out / "results.json").exists()
    holder.send_signal(signal.SIGKILL)  # a holder that dies frees the folder with it
    holder.wait()
    assert main(argv) == 0


def test_the_lock_is_released_when_a_run_ends_and_held_against_this_process_too(hand_run):  # noqa: F811
    from prpo_openrlhf.eval.lock import OutputLock

    data, out, argv = hand_run
    assert main(argv) == 0
    assert main(argv + ["--temperature", "1.5"]) == 2  # refused on its settings: lock freed too
    with OutputLock(out):  # another open of the lock file, as another run would make
        assert main(argv) == 2
    assert main(argv) == 0


def test_a_resume_with_other_settings_is_refused_naming_every_differing_key(hand_run, capsys):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    stored = (out / "run_config.json").read_text()
    capsys.readouterr()
    assert main(argv + ["--temperature", "1.5", "--top_p", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--temperature: stored 0.7, now 1.5" in err and "--top_p: stored 0.9, now 0.5" in err
    assert "benchmark 'toy'" in err  # the greedy set 'toyg' has no temperature to differ
    assert (out / "run_config.json").read_text() == stored


def test_an_unreadable_run_config_is_a_named_error(hand_run, capsys):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    (out / "run_config.json").write_text('{"benchmarks": {"toy": ')
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out / 'run_config.json'}:1:" in err and "Traceback" not in err
    (out / "run_config.json").write_text(json.dumps({"benchmarks": {"toy": "not settings"}}))
    assert main(argv) == 2
    assert "run_config.json" in capsys.readouterr().err
