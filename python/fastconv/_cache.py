"""fastconv's small on-disk caches (autotune winners, the bench CLI's machine peak).

They live in $FASTCONV_CACHE_DIR, else $XDG_CACHE_HOME/fastconv (~/.cache/fastconv).
A cache is a JSON object; a missing, corrupt or unwritable file never breaks a call: it
reads as empty and writing it is skipped. Writes go to a temporary file that replaces
the old one atomically, after merging with what another process may have written.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile


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


def update(path, entries):
    """Merge entries into the object in path and replace the file atomically (best effort)."""
    path = pathlib.Path(path)
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
