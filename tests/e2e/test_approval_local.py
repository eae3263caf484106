"""ApprovalMode manual on the local cloud: real training, a real wait on a task token, and the
`mlops` commands a person types. Two uploads of one data set make versions 1 and 2 of its
model package group: the first is approved and serves, the second is rejected and does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlops.cli import main
from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.models import list_versions
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import local_target
from tests.support.runs import WARN_ONLY_RULES, state_names, tiny_run, wait_for_state

PARAMETERS = tiny_run(max_jobs=1, epochs=2, GatePolicy=WARN_ONLY_RULES, ApprovalMode="manual")
TIMEOUT_S = 900

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("approval-cloud")
    process, _ = start_cloud_process(root, parameters=PARAMETERS)
    try:
        yield root, local_target(root)
    finally:
        stop_cloud_process(process)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data") / "digits"
    write_digits(directory, max_per_class=12, seed=3)
    return directory


def upload_and_wait_for_a_decision(target, directory: Path) -> str:
    execution = upload_dataset(target, directory, "approvals")
    view = wait_for_state(target, execution["executionArn"], "WaitForApproval", TIMEOUT_S)
    assert view.status == "RUNNING", f"{view.error}: {view.cause}"
    return execution["executionArn"]


def test_manual_approval_deploys_the_approved_version_and_rejection_ends_the_next(
    cloud, digits, tmp_path, capsys
):
    root, target = cloud
    sfn = target.client("stepfunctions")

    first = upload_and_wait_for_a_decision(target, digits)
    [pending] = list_versions(target, "approvals")
    assert (pending.version, pending.status, pending.serving) == (1, "PendingManualApproval", False)
    assert main(["approve", "1", "--dataset", "approvals", "--root", str(root)]) == 0
    view = follow(sfn, first, poll_s=1.0, timeout_s=TIMEOUT_S)
    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    assert state_names(view).index("WaitForApproval") < state_names(view).index("DeployEndpoint")

    again = tmp_path / "again"  # the same data set uploaded again: a new manifest version
    shutil.copytree(digits, again)
    second = upload_and_wait_for_a_decision(target, again)
    reject = ["reject", "2", "--dataset", "approvals", "--reason", "not this one"]
    assert main([*reject, "--root", str(root)]) == 0
    view = follow(sfn, second, poll_s=1.0, timeout_s=TIMEOUT_S)
    assert (view.status, view.error) == ("FAILED", "ModelRejected")
    assert "not this one" in view.cause

    versions = {v.version: v for v in list_versions(target, "approvals")}
    assert (versions[1].status, versions[1].serving) == ("Approved", True)
    assert (versions[2].status, versions[2].serving) == ("Rejected", False)
    capsys.readouterr()
    assert main(["models", "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "* serves on the endpoint" in printed and "Rejected" in printed
