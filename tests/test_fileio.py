"""replace_atomically: a writer that dies leaves the old file whole and no temporary behind."""
import pytest

from prpo_openrlhf.fileio import replace_atomically


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    replace_atomically(path, lambda tmp: tmp.write_bytes(b"old"))

    def dies_half_way(tmp):
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, dies_half_way)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    replace_atomically(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new"


def test_a_full_disk_is_a_named_error_and_the_file_keeps_its_old_content(tmp_path, monkeypatch):
    """#24 item 6. A full disk cannot be made in a test: the writers raise what they raise on
    one (ENOSPC; torch's short-write RuntimeError; safetensors' StorageFull) after half a write."""
    import errno
    import os

    from prpo_openrlhf.fileio import DiskFullError, append_durably

    path = tmp_path / "checkpoint.pt"
    replace_atomically(path, lambda tmp: tmp.write_bytes(b"old"))
    for failure in (OSError(errno.ENOSPC, "No space left on device"),
                    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
                    RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                    RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")):
        def dies(tmp, failure=failure):
            tmp.write_bytes(b"ne")
            raise failure

        with pytest.raises(DiskFullError) as err:
            replace_atomically(path, dies)
        assert str(err.value).startswith(f"{path}: no space left on device (")
        assert "\n" not in str(err.value) and err.value.errno == errno.ENOSPC
        assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    with pytest.raises(RuntimeError, match="size mismatch"):  # any other failure passes unchanged
        replace_atomically(path, lambda tmp: (_ for _ in ()).throw(RuntimeError("size mismatch")))

    log = tmp_path / "metrics.jsonl"
    append_durably(log, '{"step": 0}\n')
    real = os.write

    def half_then_full(fd, data):
        real(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskFullError, match="metrics.jsonl: no space left on device .* earlier records are kept"):
        append_durably(log, '{"step": 1}\n')
    monkeypatch.undo()
    assert log.read_text() == '{"step": 0}\n'
