"""FastFile for the local SageMaker: files of a FastFile channel are fetched when first opened.

On SageMaker a FastFile channel is a POSIX view of the S3 prefix (a FUSE mount): names and
sizes are there when the script starts and each object's bytes come from S3 when it is read.
This machine has no FUSE library, so the local SageMaker lays the channel out as sparse
placeholder files (the objects' names and sizes, no bytes written) and puts this folder first
on the job's PYTHONPATH. Python imports ``sitecustomize`` at start-up in every process of the
job (the toolkit, torchrun, train.py, DataLoader workers); this one wraps ``open`` so that the
first open of a placeholder fetches the object from the job's channel server (the local
SageMaker, which reads S3 with the job's execution role) and swaps it in atomically. train.py
reads its files the same way in every mode.

Only Python's ``open`` (``builtins.open`` and ``io.open``, which PIL, torch.load and pathlib
use) is covered: a reader that opens files in C would see the placeholder's zeros.
It must not import the project: it runs in the training image's environment.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import threading
import urllib.parse
import urllib.request

# {"<channel folder>": "http://127.0.0.1:<port>/<job>/<channel>"}, set per host by the service.
ROOTS_ENV = "MLOPS_LOCAL_FASTFILE_CHANNELS"
_original_open = builtins.open


def _roots() -> dict[str, str]:
    try:
        roots = json.loads(os.environ.get(ROOTS_ENV, "") or "{}")
    except ValueError:
        return {}
    return {os.path.abspath(folder) + os.sep: url for folder, url in roots.items()}


_ROOTS = _roots()


def _placeholder_url(file: object) -> tuple[str, str] | None:
    """(path, object URL) when ``file`` is a not yet fetched file of a FastFile channel."""
    if not isinstance(file, (str, bytes, os.PathLike)):
        return None  # a file descriptor
    path = os.path.abspath(os.fsdecode(file))
    for root, url in _ROOTS.items():
        if path.startswith(root):
            try:
                status = os.stat(path)
            except OSError:
                return None  # open itself says what is wrong
            # A placeholder has the object's size and no blocks: nothing was written to it.
            if status.st_size > 0 and status.st_blocks == 0:
                relative = path[len(root) :].replace(os.sep, "/")
                return path, f"{url}/{urllib.parse.quote(relative)}"
            return None
    return None


def _fetch(path: str, url: str) -> None:
    """The object's bytes into a file beside the placeholder, then renamed over it: readers
    (other processes, other threads) see the placeholder or the whole object, never a part."""
    partial = f"{path}.fastfile-{os.getpid()}-{threading.get_ident()}"
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as answer,
            _original_open(partial, "wb") as out,
        ):
            while chunk := answer.read(1 << 20):
                out.write(chunk)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
    """``open`` that fetches a FastFile placeholder first (read modes only)."""
    if _ROOTS and "r" in mode and "+" not in mode:
        found = _placeholder_url(file)
        if found is not None:
            try:
                _fetch(*found)
            except OSError as error:
                raise OSError(
                    f"FastFile: could not read {found[0]} from S3 through the local "
                    f"SageMaker ({found[1]}): {error}"
                ) from error
    return _original_open(file, mode, *args, **kwargs)


if _ROOTS:
    builtins.open = _open
    io.open = _open
