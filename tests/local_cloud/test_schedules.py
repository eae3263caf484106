"""Scheduled Lambdas on the local cloud: the toy template's Schedule and ScheduleV2 events.

The cloud runs with MLOPS_LOCAL_SCHEDULE_SPEEDUP=30, so the toy monitor's rate(1 minute) ticks
every 2 seconds; `mlops schedule run NAME` fires the others now. The monitor prints every event
it gets, so its CloudWatch log is the record of what EventBridge sent.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest

from mlops import cli
from mlops.local.process import start_cloud_process, stop_cloud_process
from tests.local_cloud.test_local_cloud import TOY
from tests.support.waiting import wait_for

SPEEDUP = 30
TICK_S = 60 / SPEEDUP
MONITOR_RULE = "toy-monitor-every-minute"
SILENT_RULE = "toy-silent-every-minute"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("schedule-cloud")


@pytest.fixture(scope="module")
def cloud(root):
    started = {}

    def start():
        started["process"], info = start_cloud_process(
            root, template=TOY, extra_env={"MLOPS_LOCAL_SCHEDULE_SPEEDUP": str(SPEEDUP)}
        )
        return info

    holder = {"start": start, "info": start()}
    try:
        yield holder
    finally:
        stop_cloud_process(started["process"])


@pytest.fixture
def aws(cloud):
    """Clients of the cloud that runs now (a test below restarts it)."""
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return lambda service: session.client(service, endpoint_url=cloud["info"].moto_url)


def deployed(cloud, logical_id: str) -> dict:
    return cloud["info"].deployment["schedules"][logical_id]


def function_arn(cloud, logical_id: str) -> str:
    name = cloud["info"].deployment["functions"][logical_id]
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


def received(aws, cloud, logical_id: str) -> list:
    """The events the function printed (its log group), oldest first."""
    logs = aws("logs")
    group = f"/aws/lambda/{cloud['info'].deployment['functions'][logical_id]}"
    try:
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    events = []
    for stream in streams:
        for line in logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])[
            "events"
        ]:
            if '"scheduled_event"' in line["message"]:
                events.append((line["timestamp"], json.loads(line["message"])["scheduled_event"]))
    return [event for _, event in sorted(events, key=lambda pair: pair[0])]


def schedule_cli(root, *args: str) -> int:
    return cli.main(["schedule", *args, "--root", str(root)])


def test_schedule_rules_exist_in_the_events_and_scheduler_apis(cloud, aws):
    events = aws("events")
    rules = {rule["Name"]: rule for rule in events.list_rules()["Rules"]}
    assert rules[MONITOR_RULE]["ScheduleExpression"] == "rate(1 minute)"
    assert rules[MONITOR_RULE]["State"] == "ENABLED"
    assert rules[SILENT_RULE]["State"] == "DISABLED"
    weekdays = deployed(cloud, "MonitorFunctionWeekdays")
    assert rules[weekdays["name"]]["ScheduleExpression"] == "cron(0 3 ? * MON-FRI *)"
    [target] = events.list_targets_by_rule(Rule=weekdays["name"])["Targets"]
    assert target["Arn"] == function_arn(cloud, "MonitorFunction")
    assert json.loads(target["Input"]) == {"check": "weekdays"}
    scheduler = aws("scheduler")
    hourly = scheduler.get_schedule(Name="MonitorFunctionHourly")
    assert hourly["ScheduleExpression"] == "rate(1 hour)"
    assert hourly["Target"]["Arn"] == function_arn(cloud, "MonitorFunction")
    assert scheduler.get_schedule(Name="SilentFunctionDisabledToo")["State"] == "DISABLED"
    # SAM's AWS::Lambda::Permission: EventBridge may invoke the monitor for its rules
    policy = json.loads(
        aws("lambda").get_policy(FunctionName=function_arn(cloud, "MonitorFunction"))["Policy"]
    )
    assert {s["Principal"]["Service"] for s in policy["Statement"]} == {"events.amazonaws.com"}


def test_schedule_rate_tick_invokes_the_function_with_eventbridges_event(cloud, aws):
    events = wait_for(
        lambda: [e for e in received(aws, cloud, "MonitorFunction") if "source" in e],
        10 * TICK_S + 20,
        "two ticks of the monitor's rate(1 minute) rule",
        done=lambda found: len(found) >= 2,
        interval=0.5,
    )
    event = events[0]
    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert event["version"] == "0"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == "123456789012"
    assert event["region"] == "us-east-1"
    assert event["resources"] == [deployed(cloud, "MonitorFunctionEveryMinute")["arn"]]
    assert event["detail"] == {}
    assert time.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    assert events[0]["id"] != events[1]["id"]


def test_schedule_run_now_sends_the_rules_input(cloud, aws, root):
    assert schedule_cli(root, "run", deployed(cloud, "MonitorFunctionWeekdays")["name"]) == 0
    wait_for(
        lambda: received(aws, cloud, "MonitorFunction"),
        30,
        "the Weekdays rule's Input",
        done=lambda found: {"check": "weekdays"} in found,
        interval=0.3,
    )


def test_schedule_v2_run_now_sends_its_input_with_context_attributes(cloud, aws, root):
    assert schedule_cli(root, "run", "MonitorFunctionHourly") == 0
    expected = {"check": "hourly", "schedule": deployed(cloud, "MonitorFunctionHourly")["arn"]}
    wait_for(
        lambda: received(aws, cloud, "MonitorFunction"),
        30,
        "the Hourly schedule's Input",
        done=lambda found: expected in found,
        interval=0.3,
    )


def test_schedule_disabled_never_runs_and_cannot_be_run_now(cloud, aws, root, capsys):
    wait_for(
        lambda: [e for e in received(aws, cloud, "MonitorFunction") if "source" in e],
        10 * TICK_S + 20,
        "three ticks of the enabled rule (the disabled one has had as many chances)",
        done=lambda found: len(found) >= 3,
        interval=0.5,
    )
    assert received(aws, cloud, "SilentFunction") == []
    assert schedule_cli(root, "run", SILENT_RULE) == 2
    error = capsys.readouterr().err
    assert f"rule {SILENT_RULE} is DISABLED" in error
    assert f"aws events enable-rule --name {SILENT_RULE}" in error
    assert received(aws, cloud, "SilentFunction") == []


def test_schedule_unknown_name_is_refused_naming_the_ones_there_are(root, capsys):
    assert schedule_cli(root, "run", "no-such-rule") == 2
    error = capsys.readouterr().err
    assert "no scheduled rule or schedule is called 'no-such-rule'" in error
    assert MONITOR_RULE in error


def test_schedule_disable_rule_at_run_time_stops_it(cloud, aws):
    aws("events").disable_rule(Name=MONITOR_RULE)
    time.sleep(1.5)  # the scheduler reads the State each second; a tick may be on its way
    before = len([e for e in received(aws, cloud, "MonitorFunction") if "source" in e])
    time.sleep(3 * TICK_S)  # three ticks of the rate: none may come
    after = len([e for e in received(aws, cloud, "MonitorFunction") if "source" in e])
    assert after == before


def test_schedule_state_set_at_run_time_lasts_across_a_restart(cloud, aws, root):
    """The rule disabled above stays disabled after `mlops down` + `up`: the template's State
    did not change (CloudFormation keeps such drift too); the rules are there again."""
    assert aws("events").describe_rule(Name=MONITOR_RULE)["State"] == "DISABLED"
    cli.main(["down", "--root", str(root)])
    cloud["info"] = cloud["start"]()
    events = aws("events")
    assert events.describe_rule(Name=MONITOR_RULE)["State"] == "DISABLED"
    assert events.describe_rule(Name=SILENT_RULE)["State"] == "DISABLED"
    restored = json.loads((root / "state" / "restored.json").read_text())
    assert restored["schedules"] == 5 and restored["state_kept"] == 1
