"""Paths built from names that came from outside (a request, an S3 key) stay in their folder.

The local cloud runs as the user, often as root: an S3 key such as
``datasets/x/train/a/../../../../etc/cron.d/job`` joined naively onto a job folder writes
anywhere on the host. Every such join goes through `contained`, which resolves the result
(symlinks included) and refuses it unless it lies inside the folder. `write_private` creates
files that hold secrets (the API key) readable by their owner only, with no window in which
they are not.
"""

from __future__ import annotations

import os
from pathlib import Path


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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as mode 0600 from the first byte, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may only have taken bits away; make it exact
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            fd = -1
            stream.write(text)
        os.replace(partial, path)
    finally:
        if fd >= 0:
            os.close(fd)
        partial.unlink(missing_ok=True)
