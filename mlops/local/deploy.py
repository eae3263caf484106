"""Deploy template.yaml onto the local cloud, the way `sam deploy` deploys it onto AWS.

Buckets, topics, roles, the layer, every function (its CodeUri zipped, as `sam build` would),
the state machine (its definition file with DefinitionSubstitutions filled in), the S3 trigger
and the API routes are created through the ordinary AWS APIs of the local moto server. Resource
types that have no local behaviour (alarms, usage plans, ...) are listed as not emulated, never
pretended.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from mlops.local.iam import RoleSpec, role_specs, translate_template
from mlops.local.schedule_expressions import ScheduleExpressionError, parse_schedule
from mlops.local.template import Resolver, load_template, parameter_values

log = logging.getLogger(__name__)

FUNCTION = "AWS::Serverless::Function"
LAYER = "AWS::Serverless::LayerVersion"
STATE_MACHINE = "AWS::Serverless::StateMachine"
BUCKET = "AWS::S3::Bucket"
BUCKET_POLICY = "AWS::S3::BucketPolicy"
TOPIC = "AWS::SNS::Topic"
ROLE = "AWS::IAM::Role"
API = "AWS::Serverless::Api"
# What the SAM translator makes of a function's Schedule and ScheduleV2 events.
EVENTS_RULE = "AWS::Events::Rule"
LAMBDA_PERMISSION = "AWS::Lambda::Permission"
SCHEDULER_SCHEDULE = "AWS::Scheduler::Schedule"
TRANSLATED_TYPES = (ROLE, EVENTS_RULE, LAMBDA_PERMISSION, SCHEDULER_SCHEDULE)
LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass
class ApiRoute:
    """One API Gateway route that a function's Api event defines."""

    method: str
    path: str
    function_name: str
    api_key_required: bool


@dataclass
class Deployment:
    """What the local deployment created: enough for the CLI, the API server and tests."""

    stack_name: str
    parameters: dict[str, Any]
    outputs: dict[str, str]
    functions: dict[str, str]  # logical id -> function name
    buckets: dict[str, str]  # logical id -> bucket name
    state_machines: dict[str, str]  # logical id -> ARN
    routes: list[ApiRoute] = field(default_factory=list)
    not_emulated: list[str] = field(default_factory=list)
    # logical id -> {kind: rule|schedule, name, arn, expression, state, targets}
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack_name": self.stack_name,
            "parameters": self.parameters,
            "outputs": self.outputs,
            "functions": self.functions,
            "buckets": self.buckets,
            "state_machines": self.state_machines,
            "routes": [route.__dict__ for route in self.routes],
            "not_emulated": self.not_emulated,
            "schedules": self.schedules,
        }


def zip_directory(directory: Path) -> bytes:
    """Zip a CodeUri/ContentUri directory deterministically (what `sam build` packages)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(
                    str(path.relative_to(directory)), date_time=(2020, 1, 1, 0, 0, 0)
                )
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


class LocalDeployer:
    """Creates a template's resources on the local moto server."""

    def __init__(
        self,
        template_path: Path,
        stack_name: str,
        overrides: dict[str, str],
        session: boto3.Session,
        endpoint_url: str,
    ) -> None:
        self.template_path = template_path
        self.base_dir = template_path.parent
        self.template = load_template(template_path)
        self.stack_name = stack_name
        self.resources: dict[str, dict[str, Any]] = self.template.get("Resources", {})
        self.globals = self.template.get("Globals", {})
        self.resolver = Resolver(
            stack_name=stack_name,
            parameters=parameter_values(self.template, overrides),
            conditions=self.template.get("Conditions", {}),
        )
        self.client = lambda service: session.client(service, endpoint_url=endpoint_url)
        # Every role as CloudFormation gets it from the SAM translator (filled in by deploy()).
        self.roles: dict[str, RoleSpec] = {}
        # The translated template's rules, permissions and schedules (filled in by deploy()).
        self.translated: dict[str, dict[str, Any]] = {}
        self._not_attached: set[str] = set()

    # -- naming (phase 1: every reference is known before anything is created) ------------------
    def _default_name(self, logical_id: str, limit: int = 64) -> str:
        digest = hashlib.sha1(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:12].upper()
        return f"{self.stack_name}-{logical_id}-{digest}"[:limit]

    def _name(self, logical_id: str, prop: str, limit: int = 64) -> str:
        given = self.resources[logical_id].get("Properties", {}).get(prop)
        return str(self.resolver.resolve(given)) if given else self._default_name(logical_id, limit)

    def _assign_references(self) -> None:
        region, account = self.resolver.region, self.resolver.account_id
        refs, attrs = self.resolver.refs, self.resolver.attributes
        for logical_id, resource in self.resources.items():
            kind = resource["Type"]
            if kind == BUCKET:
                name = self._name(logical_id, "BucketName", 63).lower()
                refs[logical_id] = name
                attrs[logical_id] = {
                    "Arn": f"arn:aws:s3:::{name}",
                    "DomainName": f"{name}.s3.amazonaws.com",
                }
            elif kind == TOPIC:
                name = self._name(logical_id, "TopicName", 256)
                arn = f"arn:aws:sns:{region}:{account}:{name}"
                refs[logical_id] = arn
                attrs[logical_id] = {"TopicName": name, "TopicArn": arn}
            elif kind == ROLE:
                name = self._name(logical_id, "RoleName")
                refs[logical_id] = name
                attrs[logical_id] = {"Arn": f"arn:aws:iam::{account}:role/{name}", "RoleId": name}
            elif kind == FUNCTION:
                name = self._name(logical_id, "FunctionName")
                refs[logical_id] = name
                attrs[logical_id] = {"Arn": f"arn:aws:lambda:{region}:{account}:function:{name}"}
                self._implicit_role(logical_id)
            elif kind == LAYER:
                name = self._name(logical_id, "LayerName")
                refs[logical_id] = f"arn:aws:lambda:{region}:{account}:layer:{name}:1"
            elif kind == STATE_MACHINE:
                name = self._name(logical_id, "Name", 80)
                arn = f"arn:aws:states:{region}:{account}:stateMachine:{name}"
                refs[logical_id] = arn
                attrs[logical_id] = {"Arn": arn, "Name": name}
                self._implicit_role(logical_id)
            elif kind == API:
                refs[logical_id] = hashlib.sha1(logical_id.encode()).hexdigest()[:10]
                attrs[logical_id] = {"RootResourceId": "root"}
                # What SAM generates beside an Api (stage, key and usage plan of its Auth).
                for suffix in ("ApiKey", "UsagePlan", "UsagePlanKey", "Deployment", "Stage"):
                    refs.setdefault(
                        f"{logical_id}{suffix}", self._default_name(logical_id + suffix)
                    )
            else:
                refs[logical_id] = self._default_name(logical_id)
                attrs[logical_id] = {"Arn": f"arn:aws:local:{region}:{account}:{logical_id}"}

    def _implicit_role(self, logical_id: str) -> None:
        """The `<LogicalId>Role` that SAM generates for a function or state machine."""
        self._generated_role(f"{logical_id}Role")

    def _generated_role(self, role: str) -> None:
        """A role that SAM generates (a function's, a state machine's, a ScheduleV2's)."""
        name = f"{self.stack_name}-{role}"[:64]
        self.resolver.refs.setdefault(role, name)
        arn = f"arn:aws:iam::{self.resolver.account_id}:role/{name}"
        self.resolver.attributes.setdefault(role, {"Arn": arn})

    # -- creation (phase 2) ------------------------------------------------------------------------
    def expand_roles(self) -> dict[str, RoleSpec]:
        """The template's roles with SAM policy templates expanded by the real translator; the
        scheduled events' rules, permissions and schedules kept in `self.translated`."""
        parameters = {**self.resolver.parameters, **self.resolver.pseudo()}
        translated = translate_template(self.template, parameters, TRANSLATED_TYPES)
        self.translated = {k: r for k, r in translated.items() if r["Type"] != ROLE}
        roles = {k: r.get("Properties", {}) for k, r in translated.items() if r["Type"] == ROLE}
        return role_specs(roles, self.resolver.resolve)

    def deploy(self) -> Deployment:
        self._assign_references()
        self.roles = self.expand_roles()
        self._assign_schedule_references()
        deployment = Deployment(
            stack_name=self.stack_name,
            parameters=self.resolver.parameters,
            outputs={},
            functions={},
            buckets={},
            state_machines={},
        )
        order = [ROLE, TOPIC, BUCKET, BUCKET_POLICY, LAYER, FUNCTION, STATE_MACHINE, API]
        creators = {
            ROLE: self._create_role,
            TOPIC: self._create_topic,
            BUCKET: self._create_bucket,
            BUCKET_POLICY: self._create_bucket_policy,
            LAYER: self._create_layer,
            FUNCTION: self._create_function,
            STATE_MACHINE: self._create_state_machine,
            API: lambda logical_id, props, deployment: None,  # served by the local API server
        }
        for kind in order:
            for logical_id, resource in self.resources.items():
                if resource["Type"] == kind and self._wanted(resource):
                    props = self.resolver.resolve(resource.get("Properties", {}))
                    creators[kind](logical_id, props, deployment)
        deployment.not_emulated = sorted(
            deployment.not_emulated
            + [
                f"{arn} (AWS managed policy: logs and X-Ray, which the local runtime does itself)"
                for arn in sorted(self._not_attached)
            ]
            + [
                f"{logical_id} ({resource['Type']})"
                for logical_id, resource in self.resources.items()
                if resource["Type"] not in order
            ]
        )
        self._connect_events(deployment)
        self._create_schedules(deployment)
        deployment.outputs = {
            name: str(self.resolver.resolve(output["Value"]))
            for name, output in self.template.get("Outputs", {}).items()
            if "Condition" not in output or self.resolver.condition(output["Condition"])
        }
        return deployment

    def _wanted(self, resource: dict[str, Any]) -> bool:
        return "Condition" not in resource or self.resolver.condition(resource["Condition"])

    def _create_role(self, logical_id: str, props: dict[str, Any], deployment: Deployment) -> None:
        self._create_role_with_policies(logical_id, self.resolver.refs[logical_id], props)

    def _create_role_with_policies(
        self, logical_id: str, name: str, props: dict[str, Any] | None = None
    ) -> None:
        """The role and its inline policies, as the SAM translator expanded them."""
        spec = self.roles.get(logical_id)
        trust = spec.trust_policy if spec else (props or {}).get("AssumeRolePolicyDocument")
        iam = self.client("iam")
        iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trust or LAMBDA_TRUST_POLICY)
        )
        if spec is None:
            return
        for policy_name, document in spec.policies.items():
            iam.put_role_policy(
                RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document)
            )
        for arn in spec.managed_policy_arns:
            try:
                iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            except iam.exceptions.NoSuchEntityException:
                self._not_attached.add(arn)  # moto loads no AWS managed policies by default

    def _create_topic(self, logical_id: str, props: dict[str, Any], deployment: Deployment) -> None:
        self.client("sns").create_topic(Name=self.resolver.attributes[logical_id]["TopicName"])

    def _create_bucket(
        self, logical_id: str, props: dict[str, Any], deployment: Deployment
    ) -> None:
        s3 = self.client("s3")
        name = self.resolver.refs[logical_id]
        s3.create_bucket(Bucket=name)
        deployment.buckets[logical_id] = name
        if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if "BucketEncryption" in props:
            rules = [
                # CloudFormation's key is ServerSideEncryptionByDefault; the S3 API's is
                # ApplyServerSideEncryptionByDefault.
                {
                    "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                    **{k: v for k, v in rule.items() if k != "ServerSideEncryptionByDefault"},
                }
                for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(
                Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules}
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )

    def _create_bucket_policy(
        self, logical_id: str, props: dict[str, Any], deployment: Deployment
    ) -> None:
        statements = props["PolicyDocument"].get("Statement", [])
        if any("Condition" in statement for statement in statements):
            # moto evaluates a bucket policy's Deny statements but ignores their Conditions,
            # so the TLS-only policy (Deny unless aws:SecureTransport) would deny every request.
            deployment.not_emulated.append(
                f"{logical_id} ({BUCKET_POLICY}: conditional statements; moto ignores Conditions)"
            )
            return
        self.client("s3").put_bucket_policy(
            Bucket=props["Bucket"], Policy=json.dumps(props["PolicyDocument"])
        )

    def _create_layer(self, logical_id: str, props: dict[str, Any], deployment: Deployment) -> None:
        content = self.base_dir / props["ContentUri"]
        response = self.client("lambda").publish_layer_version(
            LayerName=self.resolver.refs[logical_id].split(":")[-2],
            Content={"ZipFile": zip_directory(content)},
            CompatibleRuntimes=props.get("CompatibleRuntimes", []),
        )
        self.resolver.refs[logical_id] = response["LayerVersionArn"]

    def _function_properties(self, props: dict[str, Any]) -> dict[str, Any]:
        """Globals.Function merged under the function's own properties, as SAM merges them."""
        merged = dict(self.resolver.resolve(self.globals.get("Function", {})))
        for key, value in props.items():
            if key == "Environment":
                variables = {
                    **merged.get("Environment", {}).get("Variables", {}),
                    **value.get("Variables", {}),
                }
                merged["Environment"] = {"Variables": variables}
            elif key == "Layers":
                merged["Layers"] = [*merged.get("Layers", []), *value]
            else:
                merged[key] = value
        return merged

    def _create_function(
        self, logical_id: str, props: dict[str, Any], deployment: Deployment
    ) -> None:
        props = self._function_properties(props)
        name = self.resolver.refs[logical_id]
        role_arn = props.get("Role") or self._execution_role(f"{logical_id}Role")
        self.client("lambda").create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", "python3.11"),
            Role=role_arn,
            Handler=props["Handler"],
            Code={"ZipFile": zip_directory(self.base_dir / props["CodeUri"])},
            Timeout=int(props.get("Timeout", 3)),
            MemorySize=int(props.get("MemorySize", 128)),
            Environment={
                "Variables": {
                    k: str(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()
                }
            },
            Layers=[str(layer) for layer in props.get("Layers", [])],
        )
        if "ReservedConcurrentExecutions" in props:  # the local runtime bounds its pool by it
            self.client("lambda").put_function_concurrency(
                FunctionName=name,
                ReservedConcurrentExecutions=int(props["ReservedConcurrentExecutions"]),
            )
        deployment.functions[logical_id] = name

    def _execution_role(self, role_logical_id: str) -> str:
        arn = self.resolver.attributes[role_logical_id]["Arn"]
        self._create_role_with_policies(role_logical_id, arn.rsplit("/", 1)[1])
        return arn

    def _create_state_machine(
        self, logical_id: str, props: dict[str, Any], deployment: Deployment
    ) -> None:
        definition = (self.base_dir / props["DefinitionUri"]).read_text()
        for key, value in props.get("DefinitionSubstitutions", {}).items():
            definition = definition.replace("${" + key + "}", str(value))
        json.loads(definition)  # a substitution that breaks the JSON fails here, by name
        arn = self.resolver.refs[logical_id]
        role = props.get("Role") or self._execution_role(f"{logical_id}Role")
        self.client("stepfunctions").create_state_machine(
            name=arn.rsplit(":", 1)[1], definition=definition, roleArn=role
        )
        deployment.state_machines[logical_id] = arn

    # -- events ------------------------------------------------------------------------------------
    def _connect_events(self, deployment: Deployment) -> None:
        """S3 events become bucket notifications; Api events become local API routes."""
        notifications: dict[str, list[dict[str, Any]]] = {}
        api_auth = self._api_auth()
        for logical_id, resource in self.resources.items():
            if resource["Type"] != FUNCTION or not self._wanted(resource):
                continue
            function_arn = self.resolver.attributes[logical_id]["Arn"]
            for event_id, event in resource.get("Properties", {}).get("Events", {}).items():
                props = self.resolver.resolve(event.get("Properties", {}))
                if event["Type"] == "S3":
                    events = (
                        props["Events"] if isinstance(props["Events"], list) else [props["Events"]]
                    )
                    config = {
                        "Id": f"{logical_id}{event_id}",
                        "LambdaFunctionArn": function_arn,
                        "Events": events,
                    }
                    if "Filter" in props:
                        rules = props["Filter"]["S3Key"]["Rules"]
                        config["Filter"] = {"Key": {"FilterRules": rules}}
                    notifications.setdefault(props["Bucket"], []).append(config)
                elif event["Type"] == "Api":
                    api_id = event.get("Properties", {}).get("RestApiId", {}).get("Ref", "")
                    required = props.get("Auth", {}).get(
                        "ApiKeyRequired", api_auth.get(api_id, False)
                    )
                    deployment.routes.append(
                        ApiRoute(
                            method=props["Method"].upper(),
                            path=props["Path"],
                            function_name=deployment.functions[logical_id],
                            api_key_required=bool(required),
                        )
                    )
        for bucket, configs in notifications.items():
            self.client("s3").put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": configs}
            )

    def _api_auth(self) -> dict[str, bool]:
        """ApiKeyRequired set on each AWS::Serverless::Api's Auth, keyed by logical id."""
        return {
            logical_id: bool(
                self.resolver.resolve(resource.get("Properties", {}).get("Auth", {})).get(
                    "ApiKeyRequired"
                )
            )
            for logical_id, resource in self.resources.items()
            if resource["Type"] == API
        }

    # -- schedules ---------------------------------------------------------------------------------
    def _assign_schedule_references(self) -> None:
        """Names and ARNs of the translated rules and schedules, as CloudFormation gives them."""
        region, account = self.resolver.region, self.resolver.account_id
        for logical_id, resource in self.translated.items():
            props = resource.get("Properties", {})
            if resource["Type"] == EVENTS_RULE:
                name = str(
                    self.resolver.resolve(props.get("Name") or self._default_name(logical_id))
                )
                self.resolver.refs[logical_id] = name
                arn = f"arn:aws:events:{region}:{account}:rule/{name}"
                self.resolver.attributes[logical_id] = {"Arn": arn}
            elif resource["Type"] == SCHEDULER_SCHEDULE:
                name = str(
                    self.resolver.resolve(props.get("Name") or self._default_name(logical_id))
                )
                group = str(self.resolver.resolve(props.get("GroupName", "default")))
                self.resolver.refs[logical_id] = name
                arn = f"arn:aws:scheduler:{region}:{account}:schedule/{group}/{name}"
                self.resolver.attributes[logical_id] = {"Arn": arn}
        for logical_id in self.roles:  # a ScheduleV2's role; the others are known already
            self._generated_role(logical_id)

    def _create_schedules(self, deployment: Deployment) -> None:
        """Schedule events: EventBridge rules with their targets and the functions' resource
        policies; ScheduleV2 events: EventBridge Scheduler schedules with their roles. The local
        cloud's scheduler (mlops/local/schedules.py) fires them."""
        order = [EVENTS_RULE, LAMBDA_PERMISSION, SCHEDULER_SCHEDULE]
        for kind in order:
            for logical_id, resource in self.translated.items():
                if resource["Type"] != kind or not self._wanted(resource):
                    continue
                if kind == LAMBDA_PERMISSION and not _for_events(resource):
                    continue  # S3's and the API's: the local S3 and API call the function
                props = self.resolver.resolve(resource.get("Properties", {}))
                if kind == EVENTS_RULE:
                    self._create_rule(logical_id, props, deployment)
                elif kind == LAMBDA_PERMISSION:
                    statement = {
                        "FunctionName": str(props["FunctionName"]),
                        "StatementId": logical_id,
                        "Action": props["Action"],
                        "Principal": props["Principal"],
                    }
                    if "SourceArn" in props:
                        statement["SourceArn"] = str(props["SourceArn"])
                    self.client("lambda").add_permission(**statement)
                else:
                    self._create_schedule(logical_id, props, deployment)

    def _check_expression(self, logical_id: str, expression: Any, timezone: str = "UTC") -> str:
        try:
            parse_schedule(expression, timezone)
        except ScheduleExpressionError as exc:
            raise ValueError(f"{logical_id}: {exc}") from exc
        return str(expression)

    def _create_rule(self, logical_id: str, props: dict[str, Any], deployment: Deployment) -> None:
        name = self.resolver.refs[logical_id]
        expression = self._check_expression(logical_id, props.get("ScheduleExpression"))
        state = str(props.get("State", "ENABLED"))
        events = self.client("events")
        events.put_rule(Name=name, ScheduleExpression=expression, State=state)
        targets = [
            {k: str(v) if k in ("Arn", "Id", "Input") else v for k, v in target.items()}
            for target in props.get("Targets", [])
        ]
        if targets:
            events.put_targets(Rule=name, Targets=targets)
        deployment.schedules[logical_id] = {
            "kind": "rule",
            "name": name,
            "arn": self.resolver.attributes[logical_id]["Arn"],
            "expression": expression,
            "state": state,
            "targets": [target["Arn"] for target in targets],
        }

    def _create_schedule(
        self, logical_id: str, props: dict[str, Any], deployment: Deployment
    ) -> None:
        name = self.resolver.refs[logical_id]
        timezone = str(props.get("ScheduleExpressionTimezone", "UTC"))
        expression = self._check_expression(logical_id, props.get("ScheduleExpression"), timezone)
        target = {k: str(v) if isinstance(v, str | int) else v for k, v in props["Target"].items()}
        role_arn = target.get("RoleArn", "")
        role_id = next(
            (
                rid
                for rid in self.roles
                if self.resolver.attributes.get(rid, {}).get("Arn") == role_arn
            ),
            None,
        )
        if role_id is not None:  # SAM's role for the schedule: the scheduler signs as it
            self._create_role_with_policies(role_id, role_arn.rsplit("/", 1)[1])
        state = str(props.get("State", "ENABLED"))
        request: dict[str, Any] = {
            "Name": name,
            "ScheduleExpression": expression,
            "FlexibleTimeWindow": props.get("FlexibleTimeWindow", {"Mode": "OFF"}),
            "Target": target,
            "State": state,
        }
        for key in ("GroupName", "Description", "ScheduleExpressionTimezone"):
            if key in props:
                request[key] = str(props[key])
        self.client("scheduler").create_schedule(**request)
        deployment.schedules[logical_id] = {
            "kind": "schedule",
            "name": name,
            "arn": self.resolver.attributes[logical_id]["Arn"],
            "expression": expression,
            "state": state,
            "targets": [target["Arn"]],
        }


def _for_events(permission: dict[str, Any]) -> bool:
    """Whether a translated AWS::Lambda::Permission is a Schedule event's (EventBridge's)."""
    return permission.get("Properties", {}).get("Principal") == "events.amazonaws.com"
