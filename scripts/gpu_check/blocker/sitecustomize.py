"""Import blocker: makes this Python look like the GPU image, where some packages are absent.

Put this folder on PYTHONPATH and list top-level module names in ``GPU_CHECK_BLOCK`` and
distribution names in ``GPU_CHECK_BLOCK_DISTS`` (comma-separated). A listed module is then not
found (``import`` raises ModuleNotFoundError, ``importlib.util.find_spec`` returns None) and a
listed distribution has no metadata, exactly as if it were not installed, unless it lies in one
of the folders of ``GPU_CHECK_ALLOW_DIRS`` (os.pathsep-separated): where the carried wheels were
installed, so carried packages import from there and nowhere else. Child processes inherit the
variables and PYTHONPATH, hence this file.
"""
import importlib.machinery
import os
import re
import sys


def _names(var):
    return frozenset(n.strip() for n in os.environ.get(var, "").split(",") if n.strip())


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


_BLOCK = _names("GPU_CHECK_BLOCK")
_BLOCK_DISTS = frozenset(_norm(n) for n in _names("GPU_CHECK_BLOCK_DISTS"))
_ALLOW = [os.path.abspath(d) for d in os.environ.get("GPU_CHECK_ALLOW_DIRS", "").split(os.pathsep) if d]
_PathFinder = importlib.machinery.PathFinder


class BlockingPathFinder(_PathFinder):
    """sys.meta_path's PathFinder, blind to blocked packages outside the allowed folders."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name in _BLOCK:
            return _PathFinder.find_spec(name, _ALLOW) if _ALLOW else None
        return _PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        for dist in _PathFinder.find_distributions(*args, **kwargs):
            name = dist.metadata["Name"] if dist.metadata else None
            if name and _norm(name) in _BLOCK_DISTS:
                where = os.path.abspath(str(getattr(dist, "_path", "")))
                if not any(where.startswith(d + os.sep) for d in _ALLOW):
                    continue
            yield dist


if _BLOCK or _BLOCK_DISTS:
    sys.meta_path[:] = [BlockingPathFinder if f is _PathFinder else f for f in sys.meta_path]
    for _mod in [m for m in sys.modules if m.partition(".")[0] in _BLOCK]:
        del sys.modules[_mod]  # anything a .pth file imported before this ran
