"""IAM on the local cloud: the roles template.yaml defines, enforced on every Lambda's AWS calls.

moto stores IAM but lets every request through, so a missing permission would only show on
AWS. Here:

- ``expand_roles`` runs the real SAM translator (``sam_translate.py`` under aws-sam-cli's
  environment) so each function's role holds exactly the policies CloudFormation would get
  (SAM policy templates expanded), then resolves their intrinsic functions like the deployment.
- The local deployment creates those roles in moto's IAM and gives each Lambda worker the
  credentials of an ``sts:AssumeRole`` session on its function's role, as Lambda does.
- ``PolicyEvaluator`` decides a request with moto's own policy evaluator
  (``moto.iam.access_control.IAMPolicy``) over the role's policies, read back from moto's IAM.
- ``install_moto_enforcement`` replaces one method of moto,
  ``ActionAuthenticatorMixin._authenticate_and_authorize_action`` (the hook every moto response
  calls before acting), so requests signed by a role session are checked: the signature with
  moto's SigV4 check, the action against the role's policies, the resource ARN named by the
  request. The local SageMaker asks the same evaluator (``mlops.local.sagemaker.auth``).

Requests signed with the deployer's keys (the CLI, tests, the local cloud itself) stand for an
administrator, as on an account, and are not restricted.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mlops.local.iam_request import Request
from mlops.packaging import REPO_ROOT

log = logging.getLogger(__name__)

SAM_PYTHON = REPO_ROOT / ".venv-sam" / "bin" / "python"
SAM_TRANSLATE = Path(__file__).with_name("sam_translate.py")


class IamSetupError(RuntimeError):
    """The roles could not be expanded from the template; names the cause and the fix."""


# -- expansion ---------------------------------------------------------------------------------


def translate_roles(
    template: dict[str, Any], parameters: Mapping[str, Any], python: Path = SAM_PYTHON
) -> dict[str, dict[str, Any]]:
    """Every AWS::IAM::Role of the translated template (Properties, intrinsics unresolved)."""
    translated = translate_template(template, parameters, ("AWS::IAM::Role",), python)
    return {
        logical_id: resource.get("Properties", {}) for logical_id, resource in translated.items()
    }


def translate_template(
    template: dict[str, Any],
    parameters: Mapping[str, Any],
    types: Iterable[str],
    python: Path = SAM_PYTHON,
) -> dict[str, dict[str, Any]]:
    """The translated template's resources of `types`: {logical id: {Type, Properties,
    Condition}}, intrinsic functions unresolved."""
    if not python.exists():
        raise IamSetupError(
            f"{python} is missing: the SAM translator that expands the roles lives in "
            "aws-sam-cli's environment. Run `make sam-venv`."
        )
    request = {"template": template, "parameters": dict(parameters), "types": list(types)}
    done = subprocess.run(
        [str(python), str(SAM_TRANSLATE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise IamSetupError(f"The SAM translator rejected the template: {last}")
    return json.loads(done.stdout)


@dataclass
class RoleSpec:
    """One role as CloudFormation would create it, every intrinsic function resolved."""

    logical_id: str
    trust_policy: dict[str, Any]
    policies: dict[str, dict[str, Any]]  # policy name -> document
    managed_policy_arns: list[str]

    def documents(self) -> list[dict[str, Any]]:
        return list(self.policies.values())


def role_specs(translated: Mapping[str, Any], resolve: Callable[[Any], Any]) -> dict[str, RoleSpec]:
    """RoleSpecs from ``translate_roles``' answer, resolved with the deployment's Resolver."""
    specs = {}
    for logical_id, props in translated.items():
        specs[logical_id] = RoleSpec(
            logical_id=logical_id,
            trust_policy=resolve(props.get("AssumeRolePolicyDocument", {})),
            policies={
                # SAM's documents carry no Version; IAM (and moto) take them as 2012-10-17.
                policy["PolicyName"]: {"Version": "2012-10-17", **resolve(policy["PolicyDocument"])}
                for policy in props.get("Policies", [])
            },
            managed_policy_arns=[str(arn) for arn in resolve(props.get("ManagedPolicyArns", []))],
        )
    return specs


# -- evaluation --------------------------------------------------------------------------------


def _normalised(document: Mapping[str, Any]) -> str:
    """IAM matches action names case-insensitively (moto's matcher does not): lower-case them."""
    statements = document.get("Statement", [])
    statements = statements if isinstance(statements, list) else [statements]
    fixed = []
    for statement in statements:
        statement = dict(statement)
        for key in ("Action", "NotAction"):
            if key in statement:
                value = statement[key]
                values = value if isinstance(value, list) else [value]
                statement[key] = [str(v).lower() for v in values]
        fixed.append(statement)
    return json.dumps({**document, "Statement": fixed})


def denied_resource(documents: Iterable[Mapping[str, Any]], request: Request) -> str | None:
    """The first resource of ``request`` the policies do not allow (None: all allowed).

    Each (action, resource) is decided by moto's IAMPolicy: an explicit Deny wins, otherwise
    some Allow must match, as IAM evaluates identity-based policies.
    """
    from moto.iam.access_control import IAMPolicy, PermissionResult

    policies = [IAMPolicy(_normalised(document)) for document in documents]
    action = request.action.lower()
    conditions = dict(request.conditions)
    for resource in request.resources:
        results = [p.is_action_permitted(action, resource, None, conditions) for p in policies]
        if PermissionResult.DENIED in results or PermissionResult.PERMITTED not in results:
            return resource
    return None


def denial_message(principal_arn: str, action: str, resource: str) -> str:
    """AWS's wording for an identity-based denial."""
    return (
        f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


@dataclass(frozen=True)
class Principal:
    """A role session: who signed a request."""

    role_name: str
    session_name: str
    account_id: str

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session_name}"


class PolicyEvaluator:
    """Decides requests signed by role sessions, from the roles stored in moto's IAM."""

    def __init__(self, account_id: str, partition: str = "aws") -> None:
        self.account_id = account_id
        self.partition = partition

    def principal(self, access_key_id: str, session_token: str | None) -> Principal | None:
        """The role session these keys belong to; None for keys that are not a session's."""
        from moto.sts.models import sts_backends

        if not session_token:
            return None
        for assumed in sts_backends[self.account_id][self.partition].assumed_roles:
            if assumed.access_key_id == access_key_id and assumed.session_token == session_token:
                role_name = assumed.role_arn.split("/")[-1]
                return Principal(role_name, assumed.session_name, self.account_id)
        return None

    def documents(self, role_name: str) -> list[dict[str, Any]]:
        """The role's inline and attached policy documents, as moto's IAM holds them now."""
        from moto.iam.models import iam_backends

        backend = iam_backends[self.account_id][self.partition]
        documents = []
        for name in backend.list_role_policies(role_name):
            _, document = backend.get_role_policy(role_name, name)
            documents.append(json.loads(document) if isinstance(document, str) else document)
        attached, _ = backend.list_attached_role_policies(role_name)
        for policy in attached:
            version = next(v for v in policy.versions if v.is_default)
            document = version.document
            documents.append(json.loads(document) if isinstance(document, str) else document)
        return documents

    def check(self, principal: Principal, request: Request) -> str | None:
        """None when allowed; otherwise AWS's AccessDenied message."""
        resource = denied_resource(self.documents(principal.role_name), request)
        if resource is None:
            return None
        message = denial_message(principal.arn, request.action, resource)
        log.warning("IAM denied: %s", message)
        return message


def session_keys(headers: Mapping[str, str]) -> tuple[str, str | None] | None:
    """(access key id, session token) of a SigV4-signed request; None when unsigned."""
    lowered = {k.lower(): v for k, v in headers.items()}
    authorization = lowered.get("authorization", "")
    marker = "Credential="
    if marker not in authorization:
        return None
    access_key = authorization.split(marker, 1)[1].split("/", 1)[0]
    return access_key, lowered.get("x-amz-security-token")


# -- moto's services ---------------------------------------------------------------------------


def moto_resources(
    service: str, operation: str, params: Mapping[str, Any], region: str, account: str
) -> tuple[str, ...]:
    """The resource ARNs an operation of moto's JSON services acts on, as IAM names them.

    Only what the Lambdas call is mapped; anything else is checked against "*", which a
    resource-scoped policy does not allow (the safe side).
    """
    if service == "states":
        for key in ("executionArn", "stateMachineArn"):
            if key in params:
                return (str(params[key]),)
    if service == "logs" and "logGroupName" in params:
        group = f"arn:aws:logs:{region}:{account}:log-group:{params['logGroupName']}"
        if "logStreamName" in params:
            return (f"{group}:log-stream:{params['logStreamName']}",)
        return (f"{group}:*",)
    if service == "sns" and "TopicArn" in params:
        return (str(params["TopicArn"]),)
    if service == "lambda" and "FunctionName" in params:  # from the URI (restJson1)
        name = unquote(str(params["FunctionName"]))
        qualified = name.split(":")
        if not name.startswith("arn:"):
            name = f"arn:aws:lambda:{region}:{account}:function:{name}"
        elif len(qualified) > 7:  # IAM names the unqualified function for $LATEST
            name = ":".join(qualified[:7])
        return (name,)
    if service == "monitoring":  # CloudWatch signs as "monitoring"; alarms are its resources
        names = params.get("AlarmNames") or [params.get("AlarmName")]
        if all(isinstance(name, str) for name in names):
            return tuple(f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}" for name in names)
    return ("*",)


# Services whose IAM action prefix is not their signing name.
IAM_PREFIXES = {"monitoring": "cloudwatch"}
# Operations whose IAM action is not their API name.
IAM_ACTIONS = {("lambda", "Invoke"): "lambda:InvokeFunction"}


def iam_action(service: str, operation: str) -> str:
    return IAM_ACTIONS.get(
        (service, operation), f"{IAM_PREFIXES.get(service, service)}:{operation}"
    )


def install_moto_enforcement(evaluator: PolicyEvaluator) -> Callable[[], None]:
    """Replace moto's authorisation hook; returns the function that puts the original back."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.iam.access_control import S3IAMRequest
    from moto.s3.exceptions import S3ClientError

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    class AccessDeniedException(JsonRESTError):
        code = 400

        def __init__(self, message: str) -> None:
            super().__init__("AccessDeniedException", message)

    class QueryAccessDenied(AccessDeniedError):
        """A query-protocol service (SNS, IAM, STS) answers in XML, with its own error code."""

        def __init__(self, code: str, message: str) -> None:
            super(AccessDeniedError, self).__init__(code, message)

    class S3AccessDenied(S3ClientError):
        code = 403

        def __init__(self, message: str) -> None:
            super().__init__("AccessDenied", message)

    def authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        keys = session_keys(self.headers)
        principal = evaluator.principal(*keys) if keys else None
        if principal is None:
            return original(self, iam_request_cls, resource)
        iam_request = iam_request_cls(
            account_id=self.current_account,
            method=self.method,
            path=_signed_path(self),
            data=self.data,
            body=self.raw_body,
            headers=self.headers,
            action=self._get_action(),
        )
        iam_request.check_signature()
        service, operation = iam_request._action.split(":", 1)
        if resource == "*":
            # Lambda's restJson1 names the function in the URI; its body is the payload.
            uri = getattr(self, "uri_match", None) or {}
            params = uri if service == "lambda" else _request_params(self)
            resources = moto_resources(
                service, operation, params, self.region, self.current_account
            )
        else:
            resources = (resource,)
        message = evaluator.check(principal, Request(iam_action(service, operation), resources))
        if message is not None:
            if iam_request_cls is S3IAMRequest:
                raise S3AccessDenied(message)
            if _is_query_protocol(self):
                raise QueryAccessDenied(QUERY_ACCESS_DENIED.get(service, "AccessDenied"), message)
            raise AccessDeniedException(message)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize  # type: ignore[method-assign]

    def uninstall() -> None:
        ActionAuthenticatorMixin._authenticate_and_authorize_action = original  # type: ignore[method-assign]

    return uninstall


def _signed_path(response: Any) -> str:
    """The path moto's SigV4 check recomputes the signature over (as moto builds it)."""
    from urllib.parse import urlparse

    parsed = urlparse(response.uri)
    path = response.raw_path
    return path + ("?" + parsed.query if parsed.query else "")


# The error code a query-protocol service gives a caller its policies do not allow.
QUERY_ACCESS_DENIED = {"sns": "AuthorizationError"}


def _is_query_protocol(response: Any) -> bool:
    """Form-encoded ``Action=...`` requests (SNS, IAM, STS) expect XML answers, errors too."""
    content_type = str(response.headers.get("Content-Type", ""))
    return content_type.startswith("application/x-www-form-urlencoded")


def _request_params(response: Any) -> dict[str, Any]:
    """The request's parameters: the JSON body, or a query-protocol request's form fields."""
    if _is_query_protocol(response):
        fields = getattr(response, "querystring", {}) or {}
        return {key: values[0] for key, values in fields.items() if values}
    try:
        body = json.loads(response.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


# -- sessions and the two enforcement points ---------------------------------------------------


class RoleSessions:
    """sts:AssumeRole sessions on the deployed roles (one per role, reused), from moto's STS."""

    def __init__(self, sts_client: Any) -> None:
        self.sts = sts_client
        self._sessions: dict[str, dict[str, str]] = {}

    def client_kwargs(self, role_arn: str) -> dict[str, str]:
        """boto3 client keyword arguments signed as a session on ``role_arn``."""
        if role_arn not in self._sessions:
            session_name = role_arn.rsplit("/", 1)[-1][:64]
            credentials = self.sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)[
                "Credentials"
            ]
            self._sessions[role_arn] = {
                "aws_access_key_id": credentials["AccessKeyId"],
                "aws_secret_access_key": credentials["SecretAccessKey"],
                "aws_session_token": credentials["SessionToken"],
            }
        return dict(self._sessions[role_arn])

    def environment(self, role_arn: str) -> dict[str, str]:
        """The variables Lambda sets in a function's sandbox for its execution role."""
        kwargs = self.client_kwargs(role_arn)
        return {
            "AWS_ACCESS_KEY_ID": kwargs["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": kwargs["aws_secret_access_key"],
            "AWS_SESSION_TOKEN": kwargs["aws_session_token"],
        }


def authorize_headers(
    evaluator: PolicyEvaluator, headers: Mapping[str, str], requests: Iterable[Request]
) -> str | None:
    """The local SageMaker's check: None when allowed (or not a role session's request)."""
    keys = session_keys(headers)
    principal = evaluator.principal(*keys) if keys else None
    if principal is None:
        return None
    for request in requests:
        message = evaluator.check(principal, request)
        if message is not None:
            return message
    return None


# -- what a boto3 call needs (the handler tests check every call they see against the role) ----

S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
}
S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
}


class UnmappedCall(KeyError):
    """A call whose IAM action and resources are not mapped yet: add it here."""


def call_permissions(
    service: str, operation: str, params: Mapping[str, Any], region: str, account: str
) -> list[Request]:
    """The permissions a boto3 call (signing name, operation, parameters) needs on AWS."""
    if service == "s3":
        bucket = f"arn:aws:s3:::{params.get('Bucket', '*')}"
        if operation in S3_OBJECT_ACTIONS:
            action = S3_OBJECT_ACTIONS[operation]
            if action == "s3:GetObject" and params.get("VersionId"):
                action = "s3:GetObjectVersion"
            return [Request(action, (f"{bucket}/{params['Key']}",))]
        if operation in S3_BUCKET_ACTIONS:
            return [Request(S3_BUCKET_ACTIONS[operation], (bucket,))]
        raise UnmappedCall(f"s3:{operation}")
    if service == "sagemaker":
        from mlops.local.sagemaker.auth import required

        def arn(kind: str, name: str) -> str:
            return f"arn:aws:sagemaker:{region}:{account}:{kind}/{name.lower()}"

        return required(operation, params, arn)
    if service in {"states", "logs", "sns", "monitoring"}:
        return [
            Request(
                iam_action(service, operation),
                moto_resources(service, operation, params, region, account),
            )
        ]
    raise UnmappedCall(f"{service}:{operation}")
