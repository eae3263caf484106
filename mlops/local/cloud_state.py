"""The local cloud's state across restarts: what `LocalCloud` calls, in the order it starts.

    state = CloudState(root)             # MLOPS_LOCAL_PERSISTENCE=off: empty, saves nothing
    state.restore_storage(moto_server)   # buckets + log groups, before template.yaml is deployed
    state.restore_sagemaker(backend)     # jobs, models, endpoint configs, endpoints
    state.restore_executions()           # after the deployment created the state machine
    state.restore_schedules(scheduler)   # rate anchors, last ticks, States set at run time
    api_key = state.api_key()
    state.start()                        # the writer thread; restored endpoints serving again
    ...
    state.stop()                         # a last write of everything, before services stop

What is restored is logged and kept in <root>/state/restored.json (the CLI prints it).
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from mlops.local.moto_state import MotoState
from mlops.local.paths import write_private
from mlops.local.persistence import (
    Persister,
    SnapshotFile,
    Source,
    load_or_create_api_key,
    persistence_enabled,
    remove_leftover_temp_files,
    state_dir,
)
from mlops.local.template import ACCOUNT_ID, REGION

log = logging.getLogger(__name__)

# Within mlops.local.process.START_TIMEOUT_S (180 s) together with the rest of the start.
ENDPOINT_RESTART_TIMEOUT_S = 120.0


class CloudState:
    def __init__(self, root: Path, enabled: bool | None = None) -> None:
        self.root = root
        self.enabled = persistence_enabled() if enabled is None else enabled
        self.directory = state_dir(root)
        self.moto = MotoState(self.directory, ACCOUNT_ID, REGION)
        self.sagemaker_file = SnapshotFile(self.directory / "sagemaker.snapshot")
        self.schedules_file = SnapshotFile(self.directory / "schedules.snapshot")
        self.persister = Persister()
        self.restored: dict[str, Any] = {}
        self._sagemaker_backend: Any = None
        self._respawn: list[Any] = []
        self._started = False
        if self.enabled:
            removed = remove_leftover_temp_files(self.directory)
            if removed:
                log.info("removed %d temporary files of interrupted writes", removed)

    def api_key(self) -> str:
        return load_or_create_api_key(self.root) if self.enabled else secrets.token_urlsafe(24)

    # -- restore, in start order -----------------------------------------------------------------
    def restore_storage(self, moto_server: Any) -> None:
        if not self.enabled:
            return
        self.restored.update(self.moto.restore_storage())
        self.moto.track(moto_server)
        for source in self.moto.sources():
            self.persister.add(source)

    def restore_sagemaker(self, backend: Any) -> None:
        if not self.enabled:
            return
        from mlops.local.sagemaker import store

        self._sagemaker_backend = backend
        data = self.sagemaker_file.read()
        if data:
            self._respawn = store.restore(backend, data)
            self.restored.update(
                training_jobs=len(backend.training_jobs),
                tuning_jobs=len(backend.tuning_jobs),
                models=len(backend.models),
                endpoints=len(backend.endpoints),
            )
        self.persister.add(
            Source("sagemaker", self.sagemaker_file, lambda: store.snapshot(backend))
        )

    def restore_executions(self) -> None:
        """After the deployment; saved after storage and SageMaker, and at once when an
        execution starts or ends."""
        if not self.enabled:
            return
        self.restored.update(self.moto.restore_executions())
        self.persister.add(self.moto.execution_source())
        self.persister.milestone = self.moto.execution_started_or_ended

    def restore_schedules(self, scheduler: Any) -> None:
        """After the deployment created the template's rules and schedules again."""
        if not self.enabled:
            return
        counts = scheduler.restore(self.schedules_file.read())
        self.restored.update(counts)
        self.persister.add(Source("schedules", self.schedules_file, scheduler.snapshot))

    # -- running ---------------------------------------------------------------------------------
    def start(self, endpoint_timeout_s: float = ENDPOINT_RESTART_TIMEOUT_S) -> None:
        """Serve the restored endpoints again (waiting for them), then save from now on."""
        if not self.enabled:
            return
        if self._respawn:
            from mlops.local.sagemaker import store

            store.respawn_endpoints(self._sagemaker_backend, self._respawn)
            statuses = store.wait_in_service(self._respawn, endpoint_timeout_s)
            self.restored["endpoint_statuses"] = statuses
        self.persister.save()
        self.persister.start()
        self._started = True
        log.info("local cloud state restored from %s: %s", self.directory, self.restored)
        write_private(
            self.directory / "restored.json",
            json.dumps(self.restored, indent=1, default=str),
            sync=True,
        )

    def stop(self) -> None:
        """A last write of every snapshot; nothing is written if the start never finished.

        (A start that failed while restoring must not overwrite good snapshots with the
        half-empty state it had reached.)
        """
        if self._started:
            self._started = False
            self.persister.stop()


__all__ = ["CloudState"]
