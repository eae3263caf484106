"""The docker-free local cloud: moto + the local Lambda runtime + a local SageMaker + the API.

One `LocalCloud` owns everything it starts and stops all of it in `stop()`:

- moto's ThreadedMotoServer on 127.0.0.1 (S3, Step Functions executing ASL, Lambda, Logs, SNS,
  IAM), with `LambdaFunction.invoke` replaced by `LambdaRuntime` (real handlers, real processes);
- the project's local SageMaker service (training, tuning and endpoints as local processes);
- template.yaml deployed onto them by `LocalDeployer`, with parameter overrides from the `local`
  environment of samconfig.toml, and the training source published to the artifacts bucket;
- a local API Gateway that turns HTTP requests into proxy events for the API's functions.

Lambdas find the services through the standard AWS_ENDPOINT_URL* variables, nothing else.

One cloud per state folder: `start()` takes <root>/cloud.lock (held until the process ends) and
refuses to start when another cloud holds it. cloud.json, which carries the API key, is written
0600; it records the cloud's PID with its start time, so the CLI signals only this process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.awslambda.utils import get_backend as lambda_backend
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

from mlops.images import image_parameters
from mlops.local import s3_events, stepfunctions_limits
from mlops.local.api import ApiConfig, LambdaInvokeError, LocalApiServer
from mlops.local.cloud_info import CREDENTIALS, CloudInfo
from mlops.local.cloud_state import CloudState
from mlops.local.deploy import API, Deployment, LocalDeployer
from mlops.local.iam import (
    PolicyEvaluator,
    RoleSessions,
    authorize_headers,
    install_moto_enforcement,
)
from mlops.local.identity import ProcessIdentity
from mlops.local.lambda_runtime import LambdaRuntime
from mlops.local.paths import write_private
from mlops.local.process import acquire_cloud_lock
from mlops.local.schedules import LocalScheduler, install_hook, speedup_from_environment
from mlops.local.template import ACCOUNT_ID, REGION, load_template, read_parameter_overrides
from mlops.packaging import REPO_ROOT, publish_training_source

log = logging.getLogger(__name__)

STACK_NAME = "mlops-local"
LAMBDA_MAX_TIMEOUT_S = 900


class LocalCloud:
    def __init__(
        self,
        root: Path,
        template: Path = REPO_ROOT / "template.yaml",
        config_env: str = "local",
        parameter_overrides: dict[str, str] | None = None,
        enforce_iam: bool = True,
    ) -> None:
        self.root = root.resolve()
        # Each Lambda's calls are authorised against its role from template.yaml (mlops.local.iam).
        self.enforce_iam = enforce_iam
        self._uninstall_iam: Callable[[], None] | None = None
        self._uninstall_limits: Callable[[], None] | None = None
        self.role_sessions: RoleSessions | None = None
        self.template = template
        overrides = read_parameter_overrides(template.parent / "samconfig.toml", config_env)
        self.overrides = {**overrides, **(parameter_overrides or {})}
        self._add_image_parameters()
        self.moto: ThreadedMotoServer | None = None
        self.lambdas: LambdaRuntime | None = None
        self.sagemaker: Any = None
        self.api: LocalApiServer | None = None
        self.schedules: LocalScheduler | None = None
        self.info: CloudInfo | None = None
        self._lock_fd: int | None = None
        # State that lasts (docs/local-cloud.md): restored at start, saved while running.
        self.state = CloudState(self.root)

    def _add_image_parameters(self) -> None:
        """Image URIs the template asks for, resolved with the sagemaker SDK as for AWS.

        Locally they are recorded on the jobs and models (the local runtime runs the repository's
        training/ code instead of pulling the image).
        """
        declared = load_template(self.template).get("Parameters", {})
        if "TrainingImage" in declared and "TrainingImage" not in self.overrides:
            images = image_parameters(REGION, inference_instance_type="ml.m5.large")
            self.overrides.update({k: v for k, v in images.items() if k in declared})

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> CloudInfo:
        """Start every service; CloudLockedError (before anything starts) when the state
        folder already has a running cloud."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = acquire_cloud_lock(self.root)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> CloudInfo:
        moto_url = self._start_moto()
        evaluator = self._start_iam(moto_url)
        self.state.restore_storage(self.moto)
        sagemaker_url = self._start_sagemaker(moto_url, evaluator)
        self.state.restore_sagemaker(self.sagemaker.backend)
        endpoint_env = {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": sagemaker_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": sagemaker_url,
        }
        self.lambdas = LambdaRuntime(self.root, endpoint_env)
        if self.role_sessions is not None:
            self.lambdas.role_environment = self.role_sessions.environment
        self.lambdas.install()
        session = boto3.Session(region_name=REGION, **_lower(CREDENTIALS))
        deployer = LocalDeployer(self.template, STACK_NAME, self.overrides, session, moto_url)
        deployment = deployer.deploy()
        self.state.restore_executions()
        self._start_schedules(session, moto_url, deployment)
        self.lambdas.logical_ids = {name: logical for logical, name in deployment.functions.items()}
        self._prewarm_functions(deployment)
        artifacts = deployment.outputs.get("ArtifactsBucketName")
        if artifacts:
            publish_training_source(session.client("s3", endpoint_url=moto_url), artifacts)
        api_key = self.state.api_key()
        api_config = _api_config(deployer, deployment, api_key)
        self.api = LocalApiServer(api_config, invoke=self._invoke_function(session, moto_url))
        self.api.start()
        _point_outputs_at_local_api(deployment, api_config.api_id, self.api.base_url)
        me = ProcessIdentity.of(os.getpid())
        self.info = CloudInfo(
            pid=me.pid,
            started=me.started,
            moto_url=moto_url,
            sagemaker_url=sagemaker_url,
            api_url=self.api.url,
            api_key=api_key,
            region=REGION,
            deployment=deployment.to_json(),
            iam_enforced=self.role_sessions is not None,
        )
        self.state.start()
        write_private(self.root / "cloud.json", json.dumps(self.info.to_json(), indent=2))
        return self.info

    def _prewarm_functions(self, deployment: Deployment) -> None:
        """One warm environment per deployed function, in the background (provisioned
        concurrency's effect: the first execution's steps find their handlers imported)."""
        backend = lambda_backend(ACCOUNT_ID, REGION)
        self.lambdas.prewarm([backend.get_function(n) for n in deployment.functions.values()])

    def _start_moto(self) -> str:
        default_user_config["stepfunctions"]["execute_state_machine"] = True
        self._uninstall_limits = stepfunctions_limits.install()  # AWS's terminal errors, 25k events
        s3_events.install()  # versionId in S3 events, as on AWS (a re-upload is a new run)
        for key, value in {**CREDENTIALS, "AWS_DEFAULT_REGION": REGION}.items():
            os.environ.setdefault(key, value)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        # moto's ASL interpreter calls Lambda (and SNS) at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(port)
        return f"http://{host}:{port}"

    def _start_iam(self, moto_url: str) -> PolicyEvaluator | None:
        """Enforce the template's roles on moto's services; sessions for the Lambdas and jobs."""
        if not self.enforce_iam:
            return None
        evaluator = PolicyEvaluator(ACCOUNT_ID)
        self._uninstall_iam = install_moto_enforcement(evaluator)
        session = boto3.Session(region_name=REGION, **_lower(CREDENTIALS))
        self.role_sessions = RoleSessions(session.client("sts", endpoint_url=moto_url))
        return evaluator

    def _start_sagemaker(self, moto_url: str, evaluator: PolicyEvaluator | None = None) -> str:
        from mlops.local.sagemaker.config import SageMakerConfig
        from mlops.local.sagemaker.service import LocalSageMakerService

        config = SageMakerConfig(
            state_dir=self.root / "sagemaker",
            region=REGION,
            aws_endpoint_urls={"s3": moto_url, "logs": moto_url, "cloudwatch": moto_url},
            # The account the template is deployed to has Debugger only if it says so.
            debugger_available=self.overrides.get("DebuggerAvailable", "false").lower() == "true",
        )
        if evaluator is not None and self.role_sessions is not None:
            config.authorizer = functools.partial(authorize_headers, evaluator)
            config.role_credentials = self.role_sessions.client_kwargs
        self.sagemaker = LocalSageMakerService(config).start()
        return self.sagemaker.url

    def _start_schedules(
        self, session: boto3.Session, moto_url: str, deployment: Deployment
    ) -> None:
        """Scheduled rules and schedules fire from now on (mlops/local/schedules.py)."""
        clients: dict[str | None, Any] = {None: session.client("lambda", endpoint_url=moto_url)}

        def invoke(function_arn: str, payload: Any, role_arn: str | None) -> None:
            """An asynchronous Invoke on moto; a schedule's is signed as its role."""
            key = role_arn if role_arn and self.role_sessions is not None else None
            if key not in clients:
                kwargs = self.role_sessions.client_kwargs(key)  # type: ignore[union-attr]
                clients[key] = boto3.client(
                    "lambda", endpoint_url=moto_url, region_name=REGION, **kwargs
                )
            clients[key].invoke(
                FunctionName=function_arn,
                InvocationType="Event",
                Payload=json.dumps(payload).encode(),
            )

        self.schedules = LocalScheduler(
            ACCOUNT_ID, REGION, invoke=invoke, speedup=speedup_from_environment()
        )
        self.schedules.deployed_states = {
            item["arn"]: item["state"] for item in deployment.schedules.values()
        }
        self.state.restore_schedules(self.schedules)
        install_hook(self.moto, self.schedules)
        self.schedules.start()

    @staticmethod
    def _invoke_function(session: boto3.Session, moto_url: str):
        """The API's integration: Lambda's Invoke API, once (API Gateway does not retry), with
        a connection per concurrent request and no client timeout before Lambda's own 900 s."""
        config = Config(
            max_pool_connections=64,
            read_timeout=LAMBDA_MAX_TIMEOUT_S + 60,
            retries={"total_max_attempts": 1},
        )
        client = session.client("lambda", endpoint_url=moto_url, config=config)

        def invoke(function_name: str, event: dict[str, Any]) -> tuple[Any, bool]:
            try:
                response = client.invoke(
                    FunctionName=function_name, Payload=json.dumps(event).encode()
                )
            except ClientError as error:
                details = error.response.get("Error", {})
                code, message = details.get("Code", ""), details.get("Message", "")
                raise LambdaInvokeError(code, message) from error
            payload = json.loads(response["Payload"].read() or b"null")
            return payload, "FunctionError" in response

        return invoke

    def stop(self) -> None:
        """Stop everything this cloud started; safe to call twice and after a failed start."""
        for stop in (
            lambda: self.schedules and self.schedules.stop(),  # nothing fires while stopping
            self.state.stop,  # the last snapshot, before jobs and servers stop
            lambda: self.api and self.api.stop(),
            lambda: self.sagemaker and self.sagemaker.shutdown(),
            lambda: self.lambdas and self.lambdas.shutdown(),
            lambda: self.moto and self.moto.stop(),
            lambda: self._uninstall_iam and self._uninstall_iam(),
            lambda: self._uninstall_limits and self._uninstall_limits(),
        ):
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                log.warning("while stopping the local cloud: %s", exc)
        self.api = self.sagemaker = self.lambdas = self.moto = self.schedules = None
        self._uninstall_iam = self.role_sessions = self._uninstall_limits = None
        if self._lock_fd is not None:  # cloud.json is ours only while we hold the lock
            (self.root / "cloud.json").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


def _lower(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
    }


def _api_config(deployer: LocalDeployer, deployment: Deployment, api_key: str) -> ApiConfig:
    """Routes from the functions' Api events; stage, binary media types and the usage plan's
    throttle from the Api, with the deployment's parameters resolved (ApiRateLimit, ...)."""
    apis = {
        logical_id: deployer.resolver.resolve(resource.get("Properties", {}))
        for logical_id, resource in deployer.resources.items()
        if resource["Type"] == API
    }
    config = ApiConfig(routes=deployment.routes, api_key=api_key, binary_media_types=[])
    for logical_id, props in apis.items():
        config.binary_media_types.extend(props.get("BinaryMediaTypes", []))
        config.stage = props.get("StageName", config.stage)
        config.api_id = deployer.resolver.refs[logical_id]
        throttle = usage_plan_throttle(props)
        if throttle is not None:
            config.rate_limit, config.burst_limit = throttle
    return config


def usage_plan_throttle(api_props: dict[str, Any]) -> tuple[float, int] | None:
    """(RateLimit, BurstLimit) of an Api's `Auth.UsagePlan.Throttle`, or None without one.

    API Gateway takes RateLimit as a double and BurstLimit as an integer; a Throttle that sets
    only one of them is completed with the other (a bucket of at least one request)."""
    plan = (api_props.get("Auth") or {}).get("UsagePlan") or {}
    throttle = plan.get("Throttle") or {}
    if plan.get("CreateUsagePlan", "NONE") == "NONE" or not throttle:
        return None
    rate = float(throttle.get("RateLimit", throttle.get("BurstLimit", 0)))
    burst = int(float(throttle.get("BurstLimit", max(1.0, rate))))
    if rate <= 0 or burst < 1:
        raise ValueError(
            f"Api usage plan throttle needs RateLimit > 0 and BurstLimit >= 1: {throttle}"
        )
    return rate, burst


def _point_outputs_at_local_api(deployment: Deployment, api_id: str, base_url: str) -> None:
    """Outputs built as https://<api id>.execute-api.<region>.amazonaws.com/... -> local URL."""
    public = f"https://{api_id}.execute-api.{REGION}.amazonaws.com"
    for key, value in deployment.outputs.items():
        deployment.outputs[key] = value.replace(public, base_url)


__all__ = ["Deployment", "LocalCloud"]
