"""`mlops upload` then `mlops wait` follow the run of that upload, by its name, not by search.

"dogs" is a substring of "hotdogs": a CLI that looked for an execution whose name contains the
data set name could follow the other run. Both data sets are uploaded at the same moment by two
`mlops` processes on the local cloud (real S3 notification, real trigger Lambda); each
process must print, and then follow, the execution the trigger named after its own manifest
version. The data sets are tiny and have too few training images per class, so both runs stop
in ValidateDataset within seconds: the point is which execution is followed, not training.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_common.naming import (
    execution_arn,
    execution_name,
    manifest_key,
    manifest_version_token,
)
from pipeline_report import executions as ex

from mlops import cli
from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.sample_data import write_digits
from mlops.target import local_target

REPO = Path(__file__).resolve().parents[2]
# Images a class before the split: at most 4 train images a class, fewer than the template's
# MinTrainImagesPerClass (5), so DatasetInvalid. "dogs" has more files, so its upload ends
# last and the "hotdogs" run is already the newest execution containing "dogs" when the dogs
# CLI looks for its own: the race a substring match loses.
PER_CLASS = {"dogs": 6, "hotdogs": 4}
DATASETS = tuple(PER_CLASS)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cloud_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-cloud")
    process, _ = start_cloud_process(root)
    try:
        yield root
    finally:
        stop_cloud_process(process)


def mlops_processes(root: Path, commands: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Run `python -m mlops.cli COMMAND --root ROOT` for every key at once; (exit code, output)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    started = {
        key: subprocess.Popen(
            [sys.executable, "-m", "mlops.cli", *command, "--root", str(root)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for key, command in commands.items()
    }
    printed = {key: process.communicate(timeout=300)[0] for key, process in started.items()}
    return {key: (process.returncode, printed[key]) for key, process in started.items()}


def test_upload_then_wait_follow_their_own_execution(cloud_root, tmp_path):
    for index, name in enumerate(DATASETS):
        write_digits(tmp_path / name, max_per_class=PER_CLASS[name], size=8, seed=index)

    uploads = mlops_processes(
        cloud_root, {name: ["upload", str(tmp_path / name), "--name", name] for name in DATASETS}
    )

    target = local_target(cloud_root)
    s3, sfn = target.client("s3"), target.client("stepfunctions")
    started = {}
    for name, (code, printed) in uploads.items():
        assert code == 1 and "Validation failed: DatasetInvalid" in printed, printed
        [started[name]] = re.findall(r"^Started execution (\S+)$", printed, re.MULTILINE)
        # the name the trigger derives from the manifest version now in S3
        head = s3.head_object(Bucket=target.data_bucket, Key=manifest_key(name))
        token = manifest_version_token(head.get("VersionId"), head.get("ETag"))
        assert started[name] == execution_name(name, token), (name, started[name], token)
    assert started["dogs"] != started["hotdogs"]
    listed = {e["name"] for e in ex.list_executions(sfn, target.state_machine_arn)}
    assert listed == set(started.values()), listed

    waits = mlops_processes(
        cloud_root, {name: ["wait", started[name], "--poll", "0.5"] for name in DATASETS}
    )

    for name, (code, printed) in waits.items():
        assert code == 1, printed
        assert f"Execution {started[name]}: FAILED" in printed, printed
        other = started["hotdogs" if name == "dogs" else "dogs"]
        assert other not in printed, printed
        assert "Failed with DatasetInvalid" in printed, printed
        arn = execution_arn(target.state_machine_arn, started[name])
        run_input = json.loads(sfn.describe_execution(executionArn=arn)["input"])
        assert run_input["dataset"] == name, run_input


def test_wait_for_a_name_that_is_only_a_substring_is_an_error(cloud_root, capsys):
    """`wait dogs` names no execution: it must not pick "dogs-..." or "hotdogs-..." runs."""
    code = cli.main(["wait", "dogs", "--root", str(cloud_root)])
    printed = capsys.readouterr().err
    assert code == 2, printed
    assert "No execution named 'dogs'" in printed, printed
