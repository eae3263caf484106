"""Waiting on a condition instead of sleeping a fixed time.

A fixed sleep is either too short on a busy machine (a flaky failure) or too long everywhere
(a slow suite); polling the condition the test actually needs is neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    done: Callable[[T], object] = bool,
    interval: float = 0.1,
) -> T:
    """Call `condition` until `done(value)` holds (by default: until the value is truthy).

    Returns the value that satisfied it; after `timeout` seconds fails with an AssertionError
    naming `what` was awaited and the last value seen, so a timeout says what was missing.
    """
    deadline = time.monotonic() + timeout
    value = condition()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        time.sleep(interval)
        value = condition()
    return value
