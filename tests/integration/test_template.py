"""template.yaml and pipeline.asl.json checked as code: linters, SAM, IAM scope, wiring."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_common import errors

from tests.support import template as sam_template

ROOT = sam_template.ROOT
SAM = ROOT / ".venv-sam" / "bin" / "sam"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
requires_sam = pytest.mark.skipif(
    not SAM.exists(),
    reason=".venv-sam is missing: create it with `make venv-sam` (requirements/sam.txt)",
)
# Allow statements that may use Resource "*": AWS offers no resource-level permission for
# these actions (each is justified by a comment beside it in template.yaml).
UNSCOPABLE_SIDS = {
    "ListTuningJobsNoResourceScope": {"sagemaker:ListHyperParameterTuningJobs"},
    "EcrAuthTokenNoResourceScope": {"ecr:GetAuthorizationToken"},
    "PutSageMakerMetricsNoResourceScope": {"cloudwatch:PutMetricData"},
    "ReadModelQualityBaselineNoResourceScope": {"cloudwatch:GetMetricStatistics"},
}
SAGEMAKER_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:sagemaker:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
    r"(hyper-parameter-tuning-job|training-job|model-package-group|model-package|model|"
    r"endpoint-config|endpoint)/\$\{ProjectName\}-"
)


def definition() -> dict:
    return json.loads(sam_template.ASL_PATH.read_text())


def sam_environment() -> dict[str, str]:
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "PATH": f"{SAM.parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("AWS_PROFILE", None)
    return env


# ---------------------------------------------------------------- linters and SAM -------


def test_template_cfn_lint_is_clean():
    result = subprocess.run(
        [str(CFN_LINT), str(sam_template.TEMPLATE_PATH)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.sam
@requires_sam
def test_template_sam_validate_lint():
    result = subprocess.run(
        [
            str(SAM),
            "validate",
            "--lint",
            "--template-file",
            str(sam_template.TEMPLATE_PATH),
            "--region",
            "us-east-1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=sam_environment(),
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.sam
@requires_sam
@pytest.mark.skipif(shutil.which("python3.11") is None, reason="sam build needs python3.11 on PATH")
def test_template_sam_build(tmp_path):
    build_dir = tmp_path / "build"
    result = subprocess.run(
        [
            str(SAM),
            "build",
            "--template-file",
            str(sam_template.TEMPLATE_PATH),
            "--build-dir",
            str(build_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # sam keeps its dependency cache (.aws-sam/deps) under the working directory
        env=sam_environment(),
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (build_dir / "SharedLayer" / "python" / "pipeline_common" / "gate.py").exists()
    assert (build_dir / "SharedLayer" / "python" / "aws_lambda_powertools").is_dir()
    compiled = build_dir / "SharedLayer" / "python" / "pipeline_common" / "__pycache__"
    assert list(compiled.glob("gate.cpython-311.pyc")), "the layer ships without bytecode"
    assert (build_dir / "StartProfiledTrainingFunction" / "smdebug_rulesconfig").is_dir()
    for logical_id in sam_template.functions():
        assert (build_dir / logical_id / "app.py").exists(), logical_id
    # pip-installed from functions/report_layer/pyproject.toml, without the CLI or local cloud
    assert (build_dir / "ReportLayer" / "python" / "pipeline_report" / "build.py").exists()
    assert not (build_dir / "ReportLayer" / "python" / "mlops").exists()
    assert_imports_alone(build_dir, "WriteReportFunction", ["SharedLayer", "ReportLayer"])
    # validate_dataset decodes images with the layer's Pillow (a manylinux2014 wheel).
    assert (build_dir / "SharedLayer" / "python" / "PIL" / "Image.py").exists()
    assert_imports_alone(build_dir, "ValidateDatasetFunction", ["SharedLayer"])


def assert_imports_alone(build_dir, function: str, layers: list[str]) -> None:
    """The handler imports from the built function and layers only (no site-packages: -S),
    as in Lambda, where nothing of this repository's virtual environment exists."""
    path = [str(build_dir / function)] + [str(build_dir / layer / "python") for layer in layers]
    code = f"import sys; sys.path[:0] = {path!r}; import app; print(app.lambda_handler.__name__)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=build_dir,
        env={"AWS_DEFAULT_REGION": "us-east-1", "MPLCONFIGDIR": str(build_dir / "mpl")},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------- IAM -------------------


def allow_statements() -> list[tuple[str, dict]]:
    """(owner, statement) for every Allow statement the template writes itself."""
    found = []
    for logical_id, resource in sam_template.resources().items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                found += [(logical_id, s) for s in policy["PolicyDocument"]["Statement"]]
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            for policy in props.get("Policies", []):
                if isinstance(policy, dict) and "Statement" in policy:
                    found += [(logical_id, s) for s in policy["Statement"]]
    return [(owner, s) for owner, s in found if s.get("Effect") == "Allow"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_template_iam_has_no_wildcard_actions():
    for owner, statement in allow_statements():
        for action in as_list(statement["Action"]):
            assert action != "*" and not action.endswith(":*"), f"{owner} allows {action}"


def test_template_iam_wildcard_resources_only_where_aws_cannot_scope():
    text = sam_template.TEMPLATE_PATH.read_text()
    for owner, statement in allow_statements():
        if "*" not in as_list(statement["Resource"]):
            continue
        sid = statement.get("Sid", "")
        assert sid in UNSCOPABLE_SIDS, f"{owner} statement {sid or statement} uses Resource '*'"
        assert set(as_list(statement["Action"])) <= UNSCOPABLE_SIDS[sid]
        after_sid = text[text.index(f"Sid: {sid}") :].splitlines()[1]
        assert after_sid.strip().startswith("#"), f"justify {sid} with a comment in template.yaml"


def test_template_iam_sagemaker_actions_are_scoped_to_the_project_prefix():
    for owner, statement in allow_statements():
        actions = [a for a in as_list(statement["Action"]) if a.startswith("sagemaker:")]
        if not actions or statement.get("Sid") in UNSCOPABLE_SIDS:
            continue
        for resource in as_list(statement["Resource"]):
            assert "Fn::Sub" in resource, f"{owner}: {resource}"
            assert SAGEMAKER_ARN.match(resource["Fn::Sub"]), f"{owner}: {resource['Fn::Sub']}"


def test_template_iam_pass_role_only_for_sagemaker():
    passing = [(o, s) for o, s in allow_statements() if "iam:PassRole" in as_list(s["Action"])]

    assert {o for o, _ in passing} == {
        "StartTuningFunction",
        "StartProfiledTrainingFunction",
        "DeployEndpointFunction",
    }
    for owner, statement in passing:
        assert as_list(statement["Action"]) == ["iam:PassRole"], owner
        assert statement["Resource"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}, owner
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
        }


def test_template_predict_may_only_invoke_the_project_endpoint():
    statements = [s for o, s in allow_statements() if o == "PredictFunction"]
    [statement] = [s for s in statements if s["Sid"] == "InvokeProjectEndpoint"]

    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert statement["Resource"]["Fn::Sub"].endswith(":endpoint/${ProjectName}-${EndpointName}")
    # No other right: its model-quality metrics are EMF log lines, which need no permission.
    assert statements == [statement]


def test_template_rollback_alarms_are_the_ones_deploy_endpoint_names():
    """The 5XX alarm is the template's; the model-quality alarm is put by DeployEndpoint for
    each update, so its role may put, reset and read exactly that one alarm."""
    resources = sam_template.resources()
    error_alarm = resources["EndpointErrorAlarm"]["Properties"]["AlarmName"]["Fn::Sub"]
    function = resources["DeployEndpointFunction"]["Properties"]
    variables = function["Environment"]["Variables"]
    quality_alarm = variables["QUALITY_ALARM_NAME"]["Fn::Sub"]
    statements = {
        s["Sid"]: s for policy in function["Policies"] for s in policy.get("Statement", [])
    }

    assert variables["ROLLBACK_ALARM_NAME"]["Fn::Sub"] == error_alarm
    assert quality_alarm == "${ProjectName}-${EndpointName}-model-quality"
    assert variables["DEPLOYMENT_STRATEGY"] == {"Ref": "DeploymentStrategy"}
    put = statements["PutModelQualityAlarm"]
    assert put["Action"] == ["cloudwatch:PutMetricAlarm", "cloudwatch:SetAlarmState"]
    assert put["Resource"]["Fn::Sub"].endswith(f":alarm:{quality_alarm}")
    assert statements["ReadModelQualityBaselineNoResourceScope"]["Action"] == (
        "cloudwatch:GetMetricStatistics"
    )
    assert "ModelQualityAlarm" not in resources


def test_template_write_report_only_reads_records():
    invoking = {
        o for o, s in allow_statements() if "sagemaker:InvokeEndpoint" in as_list(s["Action"])
    }
    policies = sam_template.resources()["WriteReportFunction"]["Properties"]["Policies"]

    assert "WriteReportFunction" not in invoking, "the report must not call the endpoint"
    assert not [p for p in policies if isinstance(p, dict) and "S3ReadPolicy" in p], (
        "the report reads the run's records, not the data set"
    )


# ---------------------------------------------------------------- storage and API -------


@pytest.mark.parametrize("bucket", ["DataBucket", "ArtifactsBucket"])
def test_template_buckets_are_private_encrypted_and_tls_only(bucket):
    resources = sam_template.resources()
    props = resources[bucket]["Properties"]

    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    [policy] = [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    [deny] = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }


def test_template_api_requires_a_key_and_accepts_binary_images():
    props = sam_template.resources()["PredictApi"]["Properties"]

    assert props["Auth"]["ApiKeyRequired"] is True
    assert props["Auth"]["UsagePlan"]["Throttle"] == {
        "RateLimit": {"Ref": "ApiRateLimit"},
        "BurstLimit": {"Ref": "ApiBurstLimit"},
    }
    assert {
        "image~1jpeg",
        "image~1png",
        "application~1octet-stream",
        "application~1x-image",
    } <= set(props["BinaryMediaTypes"])
    event = sam_template.functions()["PredictFunction"]["Events"]["Predict"]["Properties"]
    assert (event["Path"], event["Method"]) == ("/predict", "post")


def test_template_predict_times_out_before_api_gateways_integration_timeout():
    """API Gateway REST gives up after 29 s (504); the function must answer first."""
    from mlops.local.api import INTEGRATION_TIMEOUT_S

    timeout = sam_template.functions()["PredictFunction"]["Timeout"]

    assert isinstance(timeout, int) and timeout < INTEGRATION_TIMEOUT_S


def test_template_outputs_what_the_cli_needs():
    outputs = sam_template.load_template()["Outputs"]

    needed = {"DataBucketName", "ArtifactsBucketName", "StateMachineArn", "ApiUrl", "ApiKeyId"}
    assert needed | {"SnsTopicArn", "PredictUrl"} <= set(outputs)
    assert outputs["ApiUrl"]["Value"]["Fn::Sub"].endswith("/v1"), "the CLI appends /predict"
    assert outputs["PredictUrl"]["Value"]["Fn::Sub"].endswith("/v1/predict")


def test_template_trigger_listens_to_manifests_only():
    event = sam_template.functions()["TriggerFunction"]["Events"]["ManifestUploaded"]["Properties"]

    assert event["Events"] == "s3:ObjectCreated:*"
    assert {r["Name"]: r["Value"] for r in event["Filter"]["S3Key"]["Rules"]} == {
        "prefix": "datasets/",
        "suffix": "manifest.json",
    }


# ---------------------------------------------------------------- intrinsics ------------


def test_template_environment_and_substitutions_use_only_resolvable_intrinsics():
    template = sam_template.load_template()
    used = sam_template.intrinsic_names(template["Globals"]["Function"]["Environment"])
    for props in sam_template.functions().values():
        used |= sam_template.intrinsic_names(props.get("Environment", {}))
    used |= sam_template.intrinsic_names(
        sam_template.resources()["PipelineStateMachine"]["Properties"]["DefinitionSubstitutions"]
    )

    assert used <= sam_template.ALLOWED_INTRINSICS


def test_template_every_handler_is_app_lambda_handler():
    template = sam_template.load_template()
    assert template["Globals"]["Function"]["Handler"] == "app.lambda_handler"
    for logical_id, props in sam_template.functions().items():
        assert props.get("Handler", "app.lambda_handler") == "app.lambda_handler", logical_id
        assert (ROOT / props["CodeUri"] / "app.py").exists(), logical_id
        assert (ROOT / props["CodeUri"] / "requirements.txt").exists(), logical_id


# ---------------------------------------------------------------- state machine ---------


def task_states() -> dict[str, dict]:
    return {name: s for name, s in definition()["States"].items() if s["Type"] == "Task"}


def test_asl_placeholders_match_definition_substitutions():
    placeholders = set(sam_template.SUB_VARIABLE.findall(sam_template.ASL_PATH.read_text()))
    substitutions = set(
        sam_template.resources()["PipelineStateMachine"]["Properties"]["DefinitionSubstitutions"]
    )

    assert placeholders == substitutions


def test_asl_calls_sagemaker_only_through_lambda():
    for name, state in task_states().items():
        assert state["Resource"] in (
            "arn:aws:states:::lambda:invoke",
            "arn:aws:states:::lambda:invoke.waitForTaskToken",  # WaitForApproval
            "arn:aws:states:::sns:publish",
        ), name


LAMBDA_INVOKE_ERRORS = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)


def test_asl_every_task_retries_transient_errors_and_catches_the_rest():
    for name, state in task_states().items():
        retried = {error for retrier in state.get("Retry", []) for error in retrier["ErrorEquals"]}
        assert retried, f"{name} has no Retry"
        if state["Resource"].endswith("lambda:invoke"):
            assert "Lambda.TooManyRequestsException" in retried, name
            # The report is best effort: any error gets one more try, none changes the outcome.
            assert ("States.ALL" if name == "WriteReport" else "SageMakerThrottled") in retried
        if state["Resource"].endswith("waitForTaskToken"):
            # Only failed invocations are retried: a retry after the function ran would ask
            # for a second decision; the wait's own timeout has its own outcome.
            assert retried == set(LAMBDA_INVOKE_ERRORS), name
            timeout, *_ = state["Catch"]
            assert (timeout["ErrorEquals"], timeout["Next"]) == (
                ["States.Timeout"],
                "ApprovalTimedOut",
            )
        *_, catch = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        assert catch["Next"] in (
            "NotifyFailure",
            "RollbackEndpoint",
            "WriteReport",
            "Outcome",
        ), name


def test_asl_retried_and_caught_error_names_are_project_exceptions():
    project = {
        name
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception)
    }
    for name, state in task_states().items():
        for retrier in state.get("Retry", []):
            for error in retrier["ErrorEquals"]:
                if not error.startswith(("Lambda.", "States.", "Sandbox.")):
                    assert error in project, f"{name} retries unknown error {error}"
                    assert issubclass(getattr(errors, error), errors.TransientError), error


def test_asl_failure_states_name_their_error():
    states = definition()["States"]
    for name, state in states.items():
        if state["Type"] == "Fail":
            assert ("Error" in state or "ErrorPath" in state) and (
                "Cause" in state or "CausePath" in state
            ), name
    assert states["ModelRejected"]["Error"] == "ModelRejected"


def test_asl_wait_states_use_the_poll_setting():
    for name, state in definition()["States"].items():
        if state["Type"] == "Wait":
            assert state["SecondsPath"] == "$.config.poll_seconds", name
