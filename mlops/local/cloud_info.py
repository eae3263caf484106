"""Where a running local cloud answers (<root>/cloud.json), for the CLI, the tests and the
process that starts it; kept apart from the cloud itself so that reading it imports nothing
of moto or the local SageMaker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.local.identity import ProcessIdentity

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class CloudInfo:
    """Where the running local cloud answers; written to <root>/cloud.json for the CLI."""

    pid: int
    moto_url: str
    sagemaker_url: str
    api_url: str
    api_key: str
    region: str
    deployment: dict[str, Any]
    started: float = 0.0  # the process's start time (psutil), with pid: which process it is
    # Whether each Lambda's and job's calls are authorised against its role (mlops.local.iam).
    iam_enforced: bool = False

    def client_env(self) -> dict[str, str]:
        """Variables that point the aws CLI, boto3 and the sagemaker SDK at the local cloud."""
        return {
            **CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.sagemaker_url,
        }

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def identity(self) -> ProcessIdentity:
        return ProcessIdentity(self.pid, self.started)


def load_info(root: Path) -> CloudInfo | None:
    path = root / "cloud.json"
    if not path.exists():
        return None
    fields = set(CloudInfo.__dataclass_fields__)
    return CloudInfo(**{k: v for k, v in json.loads(path.read_text()).items() if k in fields})
