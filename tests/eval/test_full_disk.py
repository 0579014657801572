"""#24 item 6: a full disk during prpo-eval is one line naming the file, and loses nothing.

A full disk cannot be made in a test: the low-level write (``os.write`` on the one file, or
``os.replace`` of a file rewritten whole) raises ENOSPC instead, after part of the bytes for
``os.write``. Folders are hand-written (``test_report.hand_run``), so no model loads.
"""
import errno
import os

import pytest

from prpo_openrlhf.cli.evaluate import main

from .test_report import hand_run  # noqa: F401  (fixture)


def _fail_writes_to(monkeypatch, name):
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            real(fd, bytes(data)[:7])  # half a record reached the disk, then it was full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("prpo-eval")]
    return line


def test_a_full_disk_while_appending_grades_keeps_the_earlier_records(hand_run, monkeypatch, capsys):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    before = (out / "grades.jsonl").read_bytes()
    capsys.readouterr()
    _fail_writes_to(monkeypatch, "grades.jsonl")
    assert main(argv + ["--regrade"]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"prpo-eval: error: {out / 'grades.jsonl'}: no space left on device (")
    assert "its earlier records are kept" in line
    assert (out / "grades.jsonl").read_bytes() == before  # the half record was cut off again
    monkeypatch.undo()
    assert main(argv) == 0  # and the folder goes on as before


@pytest.mark.parametrize("name", ["run_config.json", "results.json", "results.md"])
def test_a_full_disk_while_rewriting_a_file_keeps_the_old_one(hand_run, monkeypatch, capsys, name):  # noqa: F811
    data, out, argv = hand_run
    assert main(argv) == 0
    before = (out / name).read_bytes()
    capsys.readouterr()
    real = os.replace

    def replace(src, dst, *a, **kw):
        if str(dst).endswith(name):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    assert main(argv + ["--regrade"]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"prpo-eval: error: {out / name}: no space left on device (")
    assert f"the previous {name} is kept" in line
    assert (out / name).read_bytes() == before
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # no temporary left behind
