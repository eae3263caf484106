"""template.yaml for tests: its functions, names and environments, resolved by the local cloud.

Tests build their moto resources, function environments and the state machine's
DefinitionSubstitutions from the template's own definitions (never from a second copy), so a
renamed variable or a missing substitution fails a test. The intrinsic functions are resolved
by mlops/local/template.py, the one resolver the local deployment uses too; this module only
supplies test values for what a deployment would create (names, ARNs). The template may use
only ALLOWED_INTRINSICS in Environment and DefinitionSubstitutions (checked by a test).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from mlops.local import template as cfn
from mlops.local.template import ACCOUNT_ID as ACCOUNT
from mlops.local.template import REGION, SUB_VARIABLE, Resolver, intrinsic_names

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
ASL_PATH = ROOT / "statemachine" / "pipeline.asl.json"
ALLOWED_INTRINSICS = frozenset({"Ref", "Fn::GetAtt", "Fn::Sub", "Fn::If", "Fn::Join"})
STACK_NAME = "mlops-test"

__all__ = [
    "ACCOUNT",
    "ALLOWED_INTRINSICS",
    "ASL_PATH",
    "REGION",
    "ROOT",
    "SUB_VARIABLE",
    "TEMPLATE_PATH",
    "intrinsic_names",
]


@cache
def load_template() -> dict[str, Any]:
    """template.yaml as plain dicts (cfn-lint's loader understands the !Tags)."""
    return cfn.load_template(TEMPLATE_PATH)


def resources() -> dict[str, dict[str, Any]]:
    return load_template()["Resources"]


def parameter_defaults() -> dict[str, str]:
    return {
        name: str(spec["Default"])
        for name, spec in load_template()["Parameters"].items()
        if "Default" in spec
    }


def functions() -> dict[str, dict[str, Any]]:
    """Logical id -> properties of every AWS::Serverless::Function."""
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in resources().items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def function_for_folder(folder: str) -> str:
    """``validate_dataset`` -> ``ValidateDatasetFunction`` (matched on CodeUri)."""
    for logical_id, props in functions().items():
        if Path(props["CodeUri"]).name == folder:
            return logical_id
    raise KeyError(f"no function in template.yaml has CodeUri functions/{folder}/")


def layer_path() -> Path:
    """The folder of the shared layer that Lambda puts on sys.path (``<ContentUri>/python``)."""
    for resource in resources().values():
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            return ROOT / resource["Properties"]["ContentUri"] / "python"
    raise KeyError("template.yaml defines no AWS::Serverless::LayerVersion")


def resolver(
    parameters: dict[str, str] | None = None,
    refs: dict[str, str] | None = None,
    attributes: dict[str, dict[str, str]] | None = None,
) -> Resolver:
    """The local deployment's resolver with the template's defaults overridden by `parameters`."""
    return Resolver(
        stack_name=STACK_NAME,
        parameters={**parameter_defaults(), **(parameters or {})},
        refs=dict(refs or {}),
        attributes=dict(attributes or {}),
        conditions=load_template().get("Conditions", {}),
    )


def function_environment(logical_id: str, resolver: Resolver) -> dict[str, str]:
    """Globals' variables merged with the function's own, resolved (as SAM merges them)."""
    template = load_template()
    shared = template.get("Globals", {}).get("Function", {}).get("Environment", {})
    own = functions()[logical_id].get("Environment", {})
    variables = {**shared.get("Variables", {}), **own.get("Variables", {})}
    return {name: str(resolver.resolve(value)) for name, value in variables.items()}


def definition_substitutions(resolver: Resolver) -> dict[str, str]:
    props = resources()["PipelineStateMachine"]["Properties"]
    return {k: str(resolver.resolve(v)) for k, v in props["DefinitionSubstitutions"].items()}


def substitute(definition_text: str, substitutions: dict[str, str]) -> str:
    """Fill ``${Name}`` placeholders as CloudFormation does; unknown names are an error."""
    return cfn.substitute_definition(definition_text, substitutions)


NAME_PROPERTIES = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Serverless::StateMachine": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Serverless::Api": "Name",
}


def physical_names(parameters: dict[str, str] | None = None) -> dict[str, str]:
    """Logical id -> the physical name the template gives the resource."""
    naming = resolver(parameters)
    names = {}
    for logical_id, resource in resources().items():
        prop = NAME_PROPERTIES.get(resource["Type"])
        if prop and prop in resource.get("Properties", {}):
            names[logical_id] = str(naming.resolve(resource["Properties"][prop]))
    return names


def arn_of(resource_type: str, name: str) -> str:
    arns = {
        "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
        "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}",
        "AWS::Serverless::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}",
        "AWS::CloudWatch::Alarm": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
    }
    return arns.get(resource_type, name)


def template_resolver(parameters: dict[str, str] | None = None, **overrides: str) -> Resolver:
    """A resolver whose Ref / GetAtt answers are the names and ARNs the template implies.

    Ref of a topic or state machine is its ARN, of other resources its name (as in
    CloudFormation); ``overrides`` replace a Ref answer (e.g. a moto ARN).
    """
    refs: dict[str, str] = {}
    attributes: dict[str, dict[str, str]] = {}
    for logical_id, name in physical_names(parameters).items():
        kind = resources()[logical_id]["Type"]
        arn = arn_of(kind, name)
        refs[logical_id] = (
            arn if kind in ("AWS::SNS::Topic", "AWS::Serverless::StateMachine") else name
        )
        attributes[logical_id] = {"Arn": arn, "Name": name, "TopicName": name}
    refs.update(overrides)
    return resolver(parameters, refs, attributes)
