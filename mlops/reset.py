"""`mlops reset`: the one way to start the local cloud empty.

The local cloud keeps its buckets, executions, jobs, endpoints, logs and API key across
`mlops down`/`up`, crashes and reboots (docs/local-cloud.md). Reset deletes that state: the
snapshots under <root>/state/ and the SageMaker job and endpoint folders under
<root>/sagemaker/. The Lambda package cache and the cloud's own log stay.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from mlops.local.persistence import STATE_DIR

STATE_FOLDERS = (STATE_DIR, "sagemaker")


def state_paths(root: Path) -> list[Path]:
    """What reset deletes: only the folders the local cloud itself creates under its root."""
    return [root / name for name in STATE_FOLDERS if (root / name).exists()]


def describe_state(root: Path) -> str:
    """A one-line summary of what would be lost (sizes), for the confirmation question."""
    parts = []
    for path in state_paths(root):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        parts.append(f"{path}/ ({size / 1e6:.1f} MB)")
    return ", ".join(parts)


def reset_state(
    root: Path,
    running: bool,
    assume_yes: bool,
    ask: Callable[[str], str] = input,
) -> tuple[bool, str]:
    """Delete the state folders; (done, message). Refuses while a cloud runs on this root."""
    if running:
        return False, f"The local cloud on {root}/ is running: stop it with `mlops down` first"
    paths = state_paths(root)
    if not paths:
        return True, f"Nothing to reset: {root}/ holds no local cloud state"
    if not assume_yes:
        answer = ask(
            f"Delete the local cloud's state ({describe_state(root)}): every bucket, object, "
            "execution, job, endpoint, log and the API key? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            return False, "Nothing deleted"
    for path in paths:
        shutil.rmtree(path)
    return True, f"Deleted the local cloud's state in {root}/: the next `mlops up` starts empty"


__all__ = ["reset_state", "state_paths"]
