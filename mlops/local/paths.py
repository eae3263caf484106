"""Paths built from names that came from outside (a request, an S3 key) stay in their folder.

The local cloud runs as the user, often as root: an S3 key such as
``datasets/x/train/a/../../../../etc/cron.d/job`` joined naively onto a job folder writes
anywhere on the host. Every such join goes through `contained`, which resolves the result
(symlinks included) and refuses it unless it lies inside the folder. `write_private` creates
files readable by their owner only, with no window in which they are not, and replaces them
atomically: the API key, cloud.json, and every state snapshot (persistence.py), which also
asks for the data to be on disk before the rename (``sync=True``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # a write in progress; persistence removes leftovers at start


class PathEscapeError(ValueError):
    """A name from outside would put a path outside its folder; the message names both."""

    def __init__(self, name: str, base: Path) -> None:
        super().__init__(f"{name!r} resolves outside {base}: refused")
        self.name = name
        self.base = base


def contained(base: Path, *names: str) -> Path:
    """``base / names...``, resolved, if it lies inside ``base`` (and is not ``base`` itself);
    raise PathEscapeError otherwise. Absolute names, ``..`` and symlinks that lead out count."""
    root = base.resolve()
    joined = "/".join(names)
    if not joined or "\x00" in joined:
        raise PathEscapeError(joined, root)
    candidate = root.joinpath(*names).resolve()
    if candidate == root or not candidate.is_relative_to(root):
        raise PathEscapeError(joined, root)
    return candidate


def write_private(path: Path, data: str | bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` as mode 0600 from the first byte, replacing it atomically.

    A crash at any moment leaves the previous file or the new one, never a mix: the data goes
    to a partial file in the same folder that `os.replace` puts in place. ``sync=True`` fsyncs
    the data before the rename (one fsync), so after a power cut the new name never points at
    a file whose data was not written; the rename itself is made durable by whoever needs that
    (`persistence.fsync_dir`), once for many files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may only have taken bits away; make it exact
        with os.fdopen(fd, "wb") as stream:
            fd = -1
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            if sync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(partial, path)
    finally:
        if fd >= 0:
            os.close(fd)
        partial.unlink(missing_ok=True)
