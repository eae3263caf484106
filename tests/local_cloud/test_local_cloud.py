"""The local cloud's deployment, Lambda runtime, trigger and API, on a toy template.

The cloud runs as its own process (as `mlops up` starts it) and is stopped at the end of the
module, also when a test fails.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from pipeline_report import executions

from mlops.local.process import start_cloud_process, stop_cloud_process
from tests.support.waiting import wait_for

TOY = Path(__file__).parent / "toy" / "template.yaml"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-cloud")
    process, info = start_cloud_process(root, template=TOY, parameters={"Setting": "overridden"})
    try:
        yield info
    finally:
        stop_cloud_process(process)


@pytest.fixture(scope="module")
def aws(cloud):
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=cloud.region
    )
    return lambda service: session.client(service, endpoint_url=cloud.moto_url)


def wait_for_executions(sfn, arn: str, count: int, timeout_s: float = 60) -> list[dict]:
    return wait_for(
        lambda: sfn.list_executions(stateMachineArn=arn)["executions"],
        timeout_s,
        f"{count} finished executions",
        done=lambda items: len(items) >= count and all(i["status"] != "RUNNING" for i in items),
        interval=0.3,
    )


def test_deployment_resolves_template_outputs_and_lists_what_is_not_emulated(cloud):
    outputs = cloud.deployment["outputs"]
    assert outputs["DataBucketName"] == "toy-data-123456789012"
    assert outputs["Greeting"] == "toy in us-east-1 (overridden)"
    assert cloud.deployment["not_emulated"] == [
        "ToyAlarm (AWS::CloudWatch::Alarm)",
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole (AWS managed policy: "
        "logs and X-Ray, which the local runtime does itself)",
    ]


def toy_function(cloud) -> str:
    return cloud.deployment["functions"]["ToyFunction"]


def test_function_runs_with_its_layer_environment_and_context(cloud, aws):
    function = cloud.deployment["functions"]["ToyFunction"]
    response = aws("lambda").invoke(FunctionName=function, Payload=b"{}")
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response
    assert payload["greeting"] == "hello from the layer"
    assert payload["setting"] == "overridden"
    assert 0 < payload["remaining_ms"] <= 2000


def test_function_error_comes_back_as_lambda_returns_it(cloud, aws):
    function = cloud.deployment["functions"]["ToyFunction"]
    response = aws("lambda").invoke(FunctionName=function, Payload=json.dumps({"fail": True}))
    payload = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ToyError"
    assert "asked to fail" in payload["errorMessage"]


def test_function_timeout_is_reported_and_the_environment_replaced(cloud, aws):
    function = cloud.deployment["functions"]["ToyFunction"]
    response = aws("lambda").invoke(FunctionName=function, Payload=json.dumps({"sleep": 5}))
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "Sandbox.Timedout"
    after = aws("lambda").invoke(FunctionName=function, Payload=b"{}")
    assert "FunctionError" not in after


def test_function_emf_log_lines_become_cloudwatch_metrics(cloud, aws):
    """As CloudWatch Logs extracts EMF on AWS (mlops/local/emf.py)."""
    function = cloud.deployment["functions"]["ToyFunction"]
    aws("lambda").invoke(FunctionName=function, Payload=json.dumps({"emf": True}))
    cloudwatch = aws("cloudwatch")
    now = datetime.datetime.now(datetime.UTC)

    def answers() -> float:
        points = cloudwatch.get_metric_statistics(
            Namespace="Toy",
            MetricName="Answers",
            Dimensions=[{"Name": "service", "Value": "toy"}],
            StartTime=now - datetime.timedelta(minutes=5),
            EndTime=now + datetime.timedelta(minutes=5),
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        return sum(p["Sum"] for p in points)

    assert wait_for(answers, 10, "the toy's EMF metric", done=lambda s: s == 2.0) == 2.0


def test_function_logs_reach_cloudwatch_logs(cloud, aws):
    function = cloud.deployment["functions"]["ToyFunction"]
    aws("lambda").invoke(FunctionName=function, Payload=b"{}")
    logs = aws("logs")
    group = f"/aws/lambda/{function}"

    def messages_of_the_group() -> list[str]:
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
        return [
            event["message"]
            for stream in streams
            for event in logs.get_log_events(
                logGroupName=group, logStreamName=stream["logStreamName"]
            )["events"]
        ]

    messages = wait_for(
        messages_of_the_group,
        10,
        f"the REPORT line in {group}",
        done=lambda found: any("REPORT RequestId" in m for m in found),
        interval=0.2,
    )
    assert any('"function"' in m for m in messages)
    assert any(m.startswith("REPORT RequestId") for m in messages)


def test_manifest_upload_triggers_the_state_machine_whose_retry_and_catch_apply(cloud, aws):
    bucket = cloud.deployment["outputs"]["DataBucketName"]
    arn = cloud.deployment["outputs"]["StateMachineArn"]
    aws("s3").put_object(Bucket=bucket, Key="datasets/a/other.txt", Body=b"not a trigger")
    aws("s3").put_object(Bucket=bucket, Key="datasets/a/manifest.json", Body=b"{}")
    sfn = aws("stepfunctions")
    [execution] = wait_for_executions(sfn, arn, 1)
    view = executions.describe(sfn, execution["executionArn"])
    assert view.status == "FAILED"
    assert view.error == "ToyFailed"
    assert [step.name for step in view.steps] == ["Greet", "FailTwice", "Failed"]
    fail_twice = view.steps[1]
    assert fail_twice.attempts == 2  # the first try and one retry
    assert fail_twice.status == "CAUGHT"
    assert fail_twice.error == "ToyError"


def test_api_requires_the_key_and_passes_binary_bodies_base64_encoded(cloud):
    url = f"{cloud.api_url}/echo"
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    denied = requests.post(url, data=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert denied.status_code == 403
    assert denied.json() == {"message": "Forbidden"}
    headers = {"Content-Type": "image/png", "x-api-key": cloud.api_key}
    answer = requests.post(url, data=png, headers=headers, timeout=30)
    assert answer.status_code == 200
    assert answer.json() == {"isBase64Encoded": True, "length": len(base64.b64encode(png))}


def test_api_unknown_route_gets_api_gateways_answer(cloud):
    response = requests.get(
        f"{cloud.api_url}/nowhere", headers={"x-api-key": cloud.api_key}, timeout=30
    )
    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}


def test_cloud_started_by_a_killed_process_stops_by_itself(tmp_path):
    """A test run killed mid-way (SIGKILL, timeout) must not leave a local cloud behind."""
    script = (
        "import sys, time; from pathlib import Path;"
        "from mlops.local.process import start_cloud_process;"
        f"process, _ = start_cloud_process(Path({str(tmp_path)!r}), template=Path({str(TOY)!r}));"
        "print(process.pid, flush=True); time.sleep(600)"
    )
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        cloud_pid = int(caller.stdout.readline())
        caller.kill()
        caller.wait(timeout=10)
        wait_for(lambda: not _alive(cloud_pid), 30, f"the orphaned cloud {cloud_pid} to stop")
        assert not _alive(cloud_pid)
    finally:
        caller.kill()
        caller.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a finished child that nobody reaped yet is a zombie, not a running cloud
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_function_role_holds_the_sam_policy_template_expanded(cloud, aws):
    """StepFunctionsExecutionPolicy, expanded by the real SAM translator, on the function's role."""
    role = aws("lambda").get_function(FunctionName=toy_function(cloud))["Configuration"]["Role"]
    name = role.rsplit("/", 1)[1]
    [policy] = aws("iam").list_role_policies(RoleName=name)["PolicyNames"]
    document = aws("iam").get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
    [statement] = document["Statement"]
    assert statement["Action"] == ["states:StartExecution"]
    assert statement["Resource"] == cloud.deployment["outputs"]["StateMachineArn"]


def test_function_call_fails_with_access_denied_once_its_permission_is_removed(cloud, aws):
    """The function signs as its role: with the policy gone, StartExecution is AccessDenied."""
    function = toy_function(cloud)
    iam = aws("iam")
    role = aws("lambda").get_function(FunctionName=function)["Configuration"]["Role"]
    name = role.rsplit("/", 1)[1]
    [policy] = iam.list_role_policies(RoleName=name)["PolicyNames"]
    document = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
    event = {"Records": [{"s3": {"object": {"key": "iam/one/manifest.json"}}}]}
    allowed = aws("lambda").invoke(FunctionName=function, Payload=json.dumps(event))
    assert "FunctionError" not in allowed, allowed["Payload"].read()
    iam.delete_role_policy(RoleName=name, PolicyName=policy)
    try:
        event["Records"][0]["s3"]["object"]["key"] = "iam/two/manifest.json"
        refused = aws("lambda").invoke(FunctionName=function, Payload=json.dumps(event))
    finally:
        iam.put_role_policy(RoleName=name, PolicyName=policy, PolicyDocument=json.dumps(document))
    assert refused.get("FunctionError") == "Unhandled"
    message = json.loads(refused["Payload"].read())["errorMessage"]
    assert "(AccessDeniedException) when calling the StartExecution operation" in message
    assert f"assumed-role/{name}/" in message and "states:StartExecution" in message


def test_query_protocol_calls_are_judged_on_their_form_fields_and_refused_in_xml(cloud, aws):
    """SNS (form-encoded, XML answers): Publish is judged on its TopicArn, and a refusal is the
    AuthorizationError botocore parses, as AWS sends it, not a JSON body it cannot read."""
    sns, iam = aws("sns"), aws("iam")
    allowed = sns.create_topic(Name="allowed")["TopicArn"]
    other = sns.create_topic(Name="other")["TopicArn"]
    role = iam.create_role(RoleName="publisher", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": allowed}],
    }
    iam.put_role_policy(RoleName="publisher", PolicyName="p", PolicyDocument=json.dumps(policy))
    credentials = aws("sts").assume_role(RoleArn=role, RoleSessionName="publisher")["Credentials"]
    as_role = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=cloud.region,
    ).client("sns", endpoint_url=cloud.moto_url)

    assert as_role.publish(TopicArn=allowed, Message="hello")["MessageId"]
    with pytest.raises(ClientError) as refused:
        as_role.publish(TopicArn=other, Message="hello")
    error = refused.value.response["Error"]
    assert error["Code"] == "AuthorizationError"
    assert f"sns:Publish on resource: {other}" in error["Message"]
