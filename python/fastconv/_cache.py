"""fastconv's small on-disk caches (autotune winners, the bench CLI's machine peak).

They live in $FASTCONV_CACHE_DIR, else $XDG_CACHE_HOME/fastconv (~/.cache/fastconv).
A cache is a JSON object; a missing, corrupt or unwritable file never breaks a call: it
reads as empty and writing it is skipped. Writes go to a temporary file that replaces
the old one atomically (a reader never sees a torn file), after merging with what another
process may have written; the read-merge-replace holds an advisory lock (``<name>.lock``,
fcntl.flock where the OS has it) so that two processes writing at once both keep their entries.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; the atomic replace still keeps the file valid
    fcntl = None


def cache_dir():
    base = os.environ.get("FASTCONV_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastconv")
    return pathlib.Path(base)


def read(path):
    """The JSON object in path, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive lock on path's lock file, or nothing where it cannot be had."""
    lock = None
    if fcntl is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_name(path.name + ".lock"), "a")
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            if lock is not None:
                lock.close()
            lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.close()  # closing releases the flock


def update(path, entries):
    """Merge entries into the object in path and replace the file atomically (best effort)."""
    path = pathlib.Path(path)
    with _locked(path):
        return _merge_and_replace(path, entries)


def _merge_and_replace(path, entries):
    data = read(path)
    data.update(entries)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
    return data
