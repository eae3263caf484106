"""Hooks for the whole suite: disk hygiene, and how pytest-xdist splits the suite.

A module-scoped local cloud keeps gigabytes under pytest's base temp (models, Debugger tensors,
the local S3), and pytest keeps every such folder to the end of the run: a CI run of the slow
tests filled the disk half-way and every later test failed with ENOSPC. So a folder that a
module-scoped fixture made with `tmp_path_factory` is removed once that fixture is torn down,
unless a test failed meanwhile (then it stays for whoever reads the failure). Function-scoped
`tmp_path` folders go by pytest's own `tmp_path_retention_policy = "failed"` (pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

# A module named so starts its own local cloud and shares no fixture with its package: it is
# scheduled on its own, so two of them may run at once.
OWN_CLOUD_MODULE = "test_*_local.py"

# fixturedef -> (the folders it made, failures counted when it was set up)
_made: dict[int, tuple[list[Path], int]] = {}


def _entries(base: Path) -> set[Path]:
    return set(base.iterdir()) if base.is_dir() else set()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    if fixturedef.scope != "module" or "tmp_path_factory" not in fixturedef.argnames:
        return (yield)
    base = request.getfixturevalue("tmp_path_factory").getbasetemp()
    before = _entries(base)
    try:
        return (yield)
    finally:
        _made[id(fixturedef)] = (sorted(_entries(base) - before), request.session.testsfailed)


def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest
) -> None:
    made, failures_then = _made.pop(id(fixturedef), ([], 0))
    if request.session.testsfailed != failures_then:
        return
    for path in made:
        if path.is_symlink():
            path.unlink(missing_ok=True)  # pytest's "<name>current" link
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker gets its own share of the cores (CPU affinity, inherited by
    every process it starts: the local cloud, its Lambdas, trainings and model servers, which
    size their thread pools from it). Unpinned, both workers trained with one thread per core
    at once: spinning OpenMP threads on oversubscribed cores made a 16-pixel ResNet step 3x
    slower than alone, and the end-to-end modules took 10 minutes instead of 3."""
    worker = getattr(config, "workerinput", None)
    if worker is None:
        return
    cores = sorted(os.sched_getaffinity(0))
    count = int(worker["workercount"])
    if count < 2 or len(cores) < count:
        return
    share = len(cores) // count
    index = int(worker["workerid"].removeprefix("gw"))
    os.sched_setaffinity(0, cores[index * share : (index + 1) * share])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` and `make test-slow` run on two pytest-xdist workers: on 2 cores about half
    of the suite's time is spent waiting on the local cloud. A test package goes to one worker
    whole, in file order, as in one process: its session- and package-scoped fixtures (a local
    cloud with finished runs, a trained model, a moto server) are built once, and no other
    package's module runs between two of its modules. (Split by module, moto's in-process
    `mock_aws` of a tests/functions module reset the buckets of tests/local_sagemaker's moto
    server on the same worker: 50 tests failed.)

    A `test_*_local.py` module goes on its own instead, and before the packages: it starts its
    own local cloud, shares nothing, and is among the longest units (longest first keeps the
    tail short). Together, the end-to-end ones were a third of `make test`'s time on one worker.
    """
    from xdist.scheduler import LoadScopeScheduling

    class PackageScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if own_cloud(module):
                return module
            parts = module.split("/")
            return "/".join(parts[:2]) if len(parts) > 2 else parts[0]

        def _assign_work_unit(self, node: Any) -> None:
            # xdist queues the scopes with the most tests first; an own-cloud module has few
            # tests but runs minutes, so queued last it was the run's tail (28 min, not 13).
            for scope in [s for s in reversed(self.workqueue) if own_cloud(s)]:
                self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return PackageScheduling(config, log)


def own_cloud(path: str) -> bool:
    return fnmatch(path.rsplit("/", 1)[-1], OWN_CLOUD_MODULE)
