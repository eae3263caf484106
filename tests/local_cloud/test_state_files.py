"""The local cloud's state files: crash-safe writes, damage detection, moto round trips, reset."""

from __future__ import annotations

import json
import os
import stat
import time

import boto3
import pytest
from moto import mock_aws
from moto.core.config import default_user_config

from mlops.local import paths, persistence
from mlops.local.moto_state import ALL_BUCKETS, STOPPED_ERROR, ChangeTracker, MotoState
from mlops.local.paths import write_private
from mlops.local.persistence import (
    Persister,
    SnapshotFile,
    Source,
    StateError,
    load_or_create_api_key,
)
from mlops.reset import reset_state
from tests.support.waiting import wait_for

ACCOUNT = "123456789012"
REGION = "us-east-1"


@pytest.fixture
def aws_env(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)


# -- files -----------------------------------------------------------------------------------------
def test_write_private_replaces_whole_file_private(tmp_path):
    path = tmp_path / "state" / "x.snapshot"
    write_private(path, b"one", sync=True)
    write_private(path, b"two", sync=True)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.snapshot"]


def test_write_private_crash_before_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.snapshot"
    write_private(path, b"old", sync=True)

    def crash(*args):
        raise OSError("power cut")

    monkeypatch.setattr(paths.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        write_private(path, b"new", sync=True)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.snapshot"]


def test_leftover_temp_files_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".s3.snapshot.abc.tmp").write_bytes(b"half")  # the older writer's name
    (tmp_path / ".logs.snapshot.12-ab.partial").write_bytes(b"half")
    (tmp_path / "s3.snapshot").write_bytes(b"whole")
    assert persistence.remove_leftover_temp_files(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s3.snapshot"]


def test_snapshot_file_round_trip_and_skips_identical_writes(tmp_path):
    file = SnapshotFile(tmp_path / "a.snapshot")
    assert file.read() is None
    assert file.write({"a": [1, 2]}) is True
    assert file.write({"a": [1, 2]}) is False
    assert SnapshotFile(file.path).read() == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-3], "checksum"),
        (lambda data: b"garbage" + data, "not a local cloud state file"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum"),
    ],
)
def test_damaged_snapshot_is_refused_naming_the_file(tmp_path, damage, message):
    file = SnapshotFile(tmp_path / "s3.snapshot")
    file.write({"buckets": 1})
    file.path.write_bytes(damage(file.path.read_bytes()))
    with pytest.raises(StateError, match=message) as raised:
        SnapshotFile(file.path).read()
    assert str(file.path) in str(raised.value) and "mlops reset" in str(raised.value)


def test_persister_writes_due_sources_and_all_on_stop(tmp_path):
    state = {"n": 0}
    due = {"yes": False}
    source = Source("counter", SnapshotFile(tmp_path / "c.snapshot"), lambda: dict(state))
    source.due = lambda: due["yes"]
    persister = Persister(interval_s=0.05, sources=[source])
    persister.start()
    state["n"] = 1
    time.sleep(0.2)
    assert not source.file.path.exists()  # not due: nothing written
    due["yes"] = True
    wait_for(source.file.path.exists, 5, "the due source's snapshot", interval=0.05)
    assert SnapshotFile(source.file.path).read() == {"n": 1}
    due["yes"] = False
    state["n"] = 2
    persister.stop()
    assert SnapshotFile(source.file.path).read() == {"n": 2}


def test_api_key_is_kept_and_private(tmp_path):
    key = load_or_create_api_key(tmp_path)
    assert load_or_create_api_key(tmp_path) == key
    path = tmp_path / "state" / "api_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_change_tracker_reads_the_service_from_the_signature():
    tracker = ChangeTracker(lambda environ, start: [b""])
    scope = "Credential=testing/20261202/us-east-1/{}/aws4_request, SignedHeaders=host"
    tracker({"REQUEST_METHOD": "PUT", "HTTP_AUTHORIZATION": scope.format("s3")}, None)
    tracker({"REQUEST_METHOD": "GET", "HTTP_AUTHORIZATION": scope.format("states")}, None)
    assert tracker.take("s3") and not tracker.take("s3")
    assert not tracker.take("states")
    tracker({"REQUEST_METHOD": "POST"}, None)  # unsigned: every service may have changed
    assert tracker.take("states") and tracker.take("logs")


# -- moto round trips ------------------------------------------------------------------------------
def test_s3_versions_and_delete_markers_survive(tmp_path, aws_env):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data-bucket")
        s3.put_bucket_versioning(
            Bucket="data-bucket", VersioningConfiguration={"Status": "Enabled"}
        )
        for body in (b"v1", b"v2", b"v3"):
            s3.put_object(Bucket="data-bucket", Key="a/b.png", Body=body)
        s3.put_object(Bucket="data-bucket", Key="gone.txt", Body=b"x")
        s3.delete_object(Bucket="data-bucket", Key="gone.txt")
        before = s3.list_object_versions(Bucket="data-bucket")
        state = MotoState(tmp_path, ACCOUNT, REGION)
        [s3_source] = [s for s in state.sources() if s.name == "s3"]
        Persister(sources=[s3_source]).save()
    with mock_aws():  # a new, empty moto
        s3 = boto3.client("s3")
        assert s3.list_buckets()["Buckets"] == []
        counts = MotoState(tmp_path, ACCOUNT, REGION).restore_storage()
        assert counts["buckets"] == 1
        after = s3.list_object_versions(Bucket="data-bucket")
        assert [v["VersionId"] for v in after["Versions"]] == [
            v["VersionId"] for v in before["Versions"]
        ]
        assert len(after["DeleteMarkers"]) == 1
        assert s3.get_object(Bucket="data-bucket", Key="a/b.png")["Body"].read() == b"v3"
        [oldest] = [
            v["VersionId"] for v in before["Versions"] if v["Key"] == "a/b.png" and v["Size"] == 2
        ][-1:]
        old = s3.get_object(Bucket="data-bucket", Key="a/b.png", VersionId=oldest)
        assert old["Body"].read() == b"v1"
        s3.create_bucket(Bucket="data-bucket")  # the deployment's CreateBucket stays idempotent


def _wait_status(sfn, arn, timeout=20):
    return wait_for(
        lambda: sfn.describe_execution(executionArn=arn),
        timeout,
        f"execution {arn} to end",
        done=lambda described: described["status"] != "RUNNING",
        interval=0.05,
    )


def _machine(sfn, definition: dict) -> str:
    return sfn.create_state_machine(
        name="pipeline",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
    )["stateMachineArn"]


def test_step_functions_history_survives_and_running_ends_aborted(tmp_path, aws_env, monkeypatch):
    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", True)
    quick = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    slow = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 60, "End": True}}}
    with mock_aws():
        sfn = boto3.client("stepfunctions")
        machine = _machine(sfn, {**quick, "States": {**quick["States"], **slow["States"]}})
        sfn.update_state_machine(stateMachineArn=machine, definition=json.dumps(quick))
        done = sfn.start_execution(stateMachineArn=machine, name="run-1", input='{"a": 1}')
        described = _wait_status(sfn, done["executionArn"])
        history = sfn.get_execution_history(executionArn=done["executionArn"])["events"]
        sfn.update_state_machine(stateMachineArn=machine, definition=json.dumps(slow))
        running = sfn.start_execution(stateMachineArn=machine, name="run-2", input="{}")
        state = MotoState(tmp_path, ACCOUNT, REGION)
        source = state.execution_source()
        Persister(sources=[source]).save()
        sfn.stop_execution(executionArn=running["executionArn"])
    with mock_aws():
        sfn = boto3.client("stepfunctions")
        _machine(sfn, quick)  # the deployment creates the state machine again
        counts = MotoState(tmp_path, ACCOUNT, REGION).restore_executions()
        assert counts == {"executions": 2, "aborted": 1, "orphaned": 0}
        again = sfn.describe_execution(executionArn=done["executionArn"])
        for key in ("status", "input", "output", "startDate", "stopDate", "name"):
            assert again[key] == described[key], key
        assert sfn.get_execution_history(executionArn=done["executionArn"])["events"] == history
        listed = sfn.list_executions(stateMachineArn=machine)["executions"]
        assert sorted(e["name"] for e in listed) == ["run-1", "run-2"]
        aborted = sfn.describe_execution(executionArn=running["executionArn"])
        assert aborted["status"] == "ABORTED" and aborted["error"] == STOPPED_ERROR
        assert "local cloud stopped" in aborted["cause"]
        last = sfn.get_execution_history(executionArn=running["executionArn"])["events"][-1]
        assert last["type"] == "ExecutionAborted"
        with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
            sfn.start_execution(stateMachineArn=machine, name="run-1", input='{"a": 1}')


def test_a_run_that_ends_is_saved_at_the_next_tick_whatever_the_spacing(
    tmp_path, aws_env, monkeypatch
):
    """CI: kill -9 a few seconds after a run SUCCEEDED brought it back ABORTED, because the
    last snapshot's CPU had spaced the next one past the kill. A start or an end of an
    execution now saves every service at the next tick."""
    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", True)
    short = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 1, "End": True}}}
    with mock_aws():
        sfn = boto3.client("stepfunctions")
        machine = _machine(sfn, short)
        state = MotoState(tmp_path, ACCOUNT, REGION)
        state.tracker = ChangeTracker(lambda environ, start: [])  # no request marks a service
        persister = Persister(sources=[*state.sources(), state.execution_source()])
        persister.milestone = state.execution_started_or_ended
        persister.save()
        run = sfn.start_execution(stateMachineArn=machine, name="run-1", input="{}")
        assert state.execution_started_or_ended()
        persister.save(only_due=True)
        assert not state.execution_started_or_ended()
        for source in persister.sources:  # as after a costly snapshot: 10 s until the next
            source.next_at = time.monotonic() + 3600
        assert _wait_status(sfn, run["executionArn"])["status"] == "SUCCEEDED"
        persister.save(only_due=True)  # the milestone, not the spacing, decides
        persister.save(only_due=True)
        # Two snapshots saw it ended: its record is final and moto is not asked again.
        monkeypatch.setattr("mlops.local.moto_state.execution_record", _not_called)
        persister.save()
    with mock_aws():
        sfn = boto3.client("stepfunctions")
        _machine(sfn, short)
        counts = MotoState(tmp_path, ACCOUNT, REGION).restore_executions()
        assert counts == {"executions": 1, "aborted": 0, "orphaned": 0}
        assert sfn.describe_execution(executionArn=run["executionArn"])["status"] == "SUCCEEDED"


def _not_called(*args):
    raise AssertionError("execution_record called for a final record")


def test_logs_survive(tmp_path, aws_env):
    with mock_aws():
        logs = boto3.client("logs")
        logs.create_log_group(logGroupName="/aws/lambda/f")
        logs.create_log_stream(logGroupName="/aws/lambda/f", logStreamName="s")
        stamp = int(time.time() * 1000)
        logs.put_log_events(
            logGroupName="/aws/lambda/f",
            logStreamName="s",
            logEvents=[{"timestamp": stamp, "message": "hello"}],
        )
        state = MotoState(tmp_path, ACCOUNT, REGION)
        state.tracker = ChangeTracker(lambda environ, start: [])  # no request since
        [source] = [s for s in state.sources() if s.name == "logs"]
        assert source.due()
        Persister(sources=[source]).save()
        assert not source.due()
    with mock_aws():
        MotoState(tmp_path, ACCOUNT, REGION).restore_storage()
        logs = boto3.client("logs")
        events = logs.get_log_events(logGroupName="/aws/lambda/f", logStreamName="s")["events"]
        assert [e["message"] for e in events] == ["hello"]


# -- reset -----------------------------------------------------------------------------------------
def test_reset_asks_refuses_while_running_and_deletes_only_state(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "s3.snapshot").write_bytes(b"x")
    (tmp_path / "sagemaker" / "jobs").mkdir(parents=True)
    (tmp_path / "lambda").mkdir()
    done, message = reset_state(tmp_path, running=True, assume_yes=True)
    assert not done and "mlops down" in message
    done, _ = reset_state(tmp_path, running=False, assume_yes=False, ask=lambda q: "n")
    assert not done and (tmp_path / "state").exists()
    questions = []
    done, _ = reset_state(
        tmp_path, running=False, assume_yes=False, ask=lambda q: questions.append(q) or "y"
    )
    assert done and "state" in questions[0]
    assert sorted(os.listdir(tmp_path)) == ["lambda"]
    done, message = reset_state(tmp_path, running=False, assume_yes=True)
    assert done and "Nothing to reset" in message


# -- S3 object bodies: one file each, written once -------------------------------------------------
def _s3_source(state: MotoState) -> Source:
    [source] = [s for s in state.sources() if s.name == "s3"]
    return source


def _bodies(tmp_path) -> dict[str, os.stat_result]:
    folder = tmp_path / "s3" / "objects"
    return {p.name: p.stat() for p in folder.glob("*.body")} if folder.is_dir() else {}


def test_large_object_body_is_written_once_and_snapshot_stays_small(tmp_path, aws_env):
    big = os.urandom(8 * 1024 * 1024)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bucket-b")
        s3.put_object(Bucket="bucket-b", Key="model.tar.gz", Body=big)
        state = MotoState(tmp_path, ACCOUNT, REGION)
        source = _s3_source(state)
        persister = Persister(sources=[source])
        persister.save()
        [(name, first)] = _bodies(tmp_path).items()
        for i in range(5):  # later changes rewrite the metadata, never the big body
            s3.put_object(Bucket="bucket-b", Key=f"records/{i}.json", Body=b"{}")
            persister.save()
        again = _bodies(tmp_path)
        assert again[name].st_ino == first.st_ino and again[name].st_mtime_ns == first.st_mtime_ns
        assert state.bodies.bytes_written == len(big) + 2  # the five "{}" share one file
        assert len(again) == 2
        assert (tmp_path / "s3.snapshot").stat().st_size < 64 * 1024
    with mock_aws():
        MotoState(tmp_path, ACCOUNT, REGION).restore_storage()
        s3 = boto3.client("s3")
        assert s3.get_object(Bucket="bucket-b", Key="model.tar.gz")["Body"].read() == big
        assert s3.get_object(Bucket="bucket-b", Key="records/4.json")["Body"].read() == b"{}"


def test_kill_between_body_and_metadata_leaves_the_previous_state(tmp_path, aws_env, monkeypatch):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bucket-b")
        s3.put_object(Bucket="bucket-b", Key="first", Body=b"one")
        state = MotoState(tmp_path, ACCOUNT, REGION)
        source = _s3_source(state)
        Persister(sources=[source]).save()
        s3.put_object(Bucket="bucket-b", Key="second", Body=b"two")

        def killed(self, data):
            raise OSError("kill -9 before the metadata was replaced")

        with monkeypatch.context() as patch:
            patch.setattr(SnapshotFile, "write_encoded", killed)
            Persister(sources=[source]).save()  # logs the failure, keeps the old snapshot
        assert len(_bodies(tmp_path)) == 2  # the body was written first
    with mock_aws():
        restored = MotoState(tmp_path, ACCOUNT, REGION)
        restored.restore_storage()
        s3 = boto3.client("s3")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="bucket-b")["Contents"]] == ["first"]
        assert s3.get_object(Bucket="bucket-b", Key="first")["Body"].read() == b"one"
        source = _s3_source(restored)
        source.file.path.touch()  # the next snapshot is newer than the orphaned body
        time.sleep(0.05)
        Persister(sources=[source]).save()
        assert len(_bodies(tmp_path)) == 1  # the body no snapshot names is gone


def test_deleted_version_body_is_removed_and_missing_body_is_refused(tmp_path, aws_env):
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bucket-b")
        s3.put_object(Bucket="bucket-b", Key="keep", Body=b"keep")
        s3.put_object(Bucket="bucket-b", Key="gone", Body=b"gone")
        state = MotoState(tmp_path, ACCOUNT, REGION)
        persister = Persister(sources=[_s3_source(state)])
        persister.save()
        assert len(_bodies(tmp_path)) == 2
        s3.delete_object(Bucket="bucket-b", Key="gone")
        time.sleep(0.05)
        persister.save()
        [name] = _bodies(tmp_path)
    (tmp_path / "s3" / "objects" / name).unlink()
    with mock_aws():
        with pytest.raises(StateError, match="missing") as raised:
            MotoState(tmp_path, ACCOUNT, REGION).restore_storage()
        assert name in str(raised.value) and "mlops reset" in str(raised.value)


def test_change_tracker_names_the_bucket_of_a_path_style_request():
    tracker = ChangeTracker(lambda environ, start: [b""])
    scope = "Credential=testing/20261202/us-east-1/s3/aws4_request, SignedHeaders=host"
    put = {"REQUEST_METHOD": "PUT", "HTTP_AUTHORIZATION": scope, "HTTP_HOST": "127.0.0.1:5000"}
    tracker({**put, "PATH_INFO": "/bucket-a/records/1.json"}, None)
    assert tracker.take_buckets() == {"bucket-a"} and tracker.take_buckets() == set()
    tracker({**put, "HTTP_HOST": "bucket-a.s3.example.com", "PATH_INFO": "/x"}, None)
    assert tracker.take_buckets() == {ALL_BUCKETS}  # virtual-host style: any bucket


def test_s3_snapshot_reencodes_only_changed_buckets_and_keeps_the_others_bodies(tmp_path, aws_env):
    with mock_aws():
        s3 = boto3.client("s3")
        for bucket in ("bucket-a", "bucket-b"):
            s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key="first.png", Body=bucket.encode())
        state = MotoState(tmp_path, ACCOUNT, REGION)
        state.tracker = ChangeTracker(lambda environ, start: [b""])
        persister = Persister(sources=[_s3_source(state)])
        persister.save()
        assert state.buckets.reencoded == 2
        s3.put_object(Bucket="bucket-b", Key="second.json", Body=b"{}")
        state.tracker.mark("s3", "bucket-b")
        persister.save()
        assert state.buckets.reencoded == 3  # bucket-a came from the cache
        s3.put_object(Bucket="bucket-a", Key="unannounced.json", Body=b"[]")
        persister.save()  # no mark: its keys are not the cached ones, so it is re-encoded
        assert state.buckets.reencoded == 4
        persister.save()
        assert len(_bodies(tmp_path)) == 4  # no body of a cached bucket was collected
    with mock_aws():
        MotoState(tmp_path, ACCOUNT, REGION).restore_storage()
        s3 = boto3.client("s3")
        assert s3.get_object(Bucket="bucket-a", Key="first.png")["Body"].read() == b"bucket-a"
        assert s3.get_object(Bucket="bucket-a", Key="unannounced.json")["Body"].read() == b"[]"
        assert s3.get_object(Bucket="bucket-b", Key="second.json")["Body"].read() == b"{}"
