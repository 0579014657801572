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
