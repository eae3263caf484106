"""A thread pool's results with a bounded backlog: for work over 100k S3 objects.

``Executor.map`` submits every item at once, so 100k objects mean 100k futures (and their
results) held before the first is read. :func:`bounded_map` keeps at most ``limit`` submitted
and not yet read, so memory stays flat however large the data set is, and a caller can stop
early (a deadline, an error) without a queue of work still to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def bounded_map(
    pool: Executor, work: Callable[[Item], Result], items: Iterable[Item], limit: int
) -> Iterator[tuple[Item, Result]]:
    """(item, result) in the order they finish, with at most `limit` in flight.

    An exception in `work` is raised here, for its item; closing the generator early cancels
    what has not started yet.
    """
    pending: dict[Future[Result], Item] = {}
    try:
        for item in items:
            if len(pending) >= limit:
                yield from _collect(pending)
            pending[pool.submit(work, item)] = item
        while pending:
            yield from _collect(pending)
    finally:
        for future in pending:
            future.cancel()


def _collect(pending: dict[Future[Result], Item]) -> Iterator[tuple[Item, Result]]:
    """Wait for at least one future, then hand over every finished one."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        yield pending.pop(future), future.result()
