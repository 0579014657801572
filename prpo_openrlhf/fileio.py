"""Durable file replacement: a crash leaves either the old file or the new one, whole.

A full disk is named, not dumped: writes of ours turn ENOSPC (and torch's and safetensors'
wrapped forms of it) into ``DiskFullError``, one line naming the file, which the CLIs print.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable, Iterator


class DiskFullError(OSError):
    """A write of ours that failed for want of space; its text is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


# torch's zip writer reports a short write as "PytorchStreamWriter failed writing file ..." or
# "[enforce fail at inline_container.cc] ... unexpected pos"; safetensors as "StorageFull".
_WRAPPED_NO_SPACE = ("no space left on device", "storagefull", "failed writing file", "unexpected pos")


def _no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in _WRAPPED_NO_SPACE)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name if it has none), cut at ``limit``."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def no_space_in(exc: BaseException) -> BaseException | None:
    """The no-space failure in ``exc``'s chain (its causes, and the ``cause`` of a Ray task error
    raised in an actor that ran out of space), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if _no_space(exc):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def naming_a_full_disk(path: str | os.PathLike, kept: str = "") -> Iterator[None]:
    """Re-raise a no-space failure inside the block as ``DiskFullError`` naming ``path``;
    ``kept`` says what survived (e.g. "the previous checkpoint is kept")."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:
        if not _no_space(exc):
            raise
        raise DiskFullError(f"{path}: no space left on device ({first_line(exc)})" + (f"; {kept}" if kept else "")
                            + "; free some space and run again") from exc


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary file next to ``path``; it is fsync'ed, renamed over
    ``path`` and the directory fsync'ed, so the rename itself survives a power loss."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    try:
        with naming_a_full_disk(path, kept):
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(path: str | os.PathLike, text: str) -> None:
    """Append ``text``, then fsync. A failed append is cut off again, so the file keeps exactly
    its earlier records (a half line would need a repair on the next read). Unbuffered: a
    buffered file would retry the failed bytes at close, after the cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    with naming_a_full_disk(path, "its earlier records are kept"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
