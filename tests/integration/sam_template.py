"""Read template.yaml the way a deployment would, for tests.

Tests build their moto resources, function environments and the state machine's
DefinitionSubstitutions from the template's own definitions (never from a second copy), so
a renamed variable or a missing substitution fails a test. Only the intrinsic functions the
template is allowed to use in Environment and DefinitionSubstitutions are resolved: Ref,
Fn::GetAtt, Fn::Sub, Fn::If (with Fn::Equals / Fn::Not conditions) and Fn::Join.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
ASL_PATH = ROOT / "statemachine" / "pipeline.asl.json"
ALLOWED_INTRINSICS = frozenset({"Ref", "Fn::GetAtt", "Fn::Sub", "Fn::If", "Fn::Join"})
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "mlops-test",
}
SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


@cache
def load_template() -> dict[str, Any]:
    """template.yaml as plain dicts (cfn-lint's loader understands the !Tags)."""
    return _plain(cfn_yaml.load(str(TEMPLATE_PATH)))


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


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


@dataclass
class Resolver:
    """Resolves the allowed intrinsic functions with test values.

    ``refs`` answers Ref of a resource, ``attributes`` answers Fn::GetAtt; parameters come
    from the template's defaults overridden by ``parameters``.
    """

    parameters: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parameters = {**parameter_defaults(), **self.parameters}

    def ref(self, name: str) -> str:
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"no test value for Ref {name}")

    def get_att(self, logical_id: str, attribute: str) -> str:
        key = (logical_id, attribute)
        if key not in self.attributes:
            raise KeyError(f"no test value for Fn::GetAtt {logical_id}.{attribute}")
        return self.attributes[key]

    def condition(self, name: str) -> bool:
        return bool(self._condition(load_template()["Conditions"][name]))

    def _condition(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((fn, args),) = node.items()
            if fn == "Fn::Equals":
                return self.resolve(args[0]) == self.resolve(args[1])
            if fn == "Fn::Not":
                return not self._condition(args[0])
            if fn == "Condition":
                return self.condition(args)
        return self.resolve(node)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) != 1 or not next(iter(node)).startswith(("Fn::", "Ref")):
            return {k: self.resolve(v) for k, v in node.items()}
        ((fn, args),) = node.items()
        if fn == "Ref":
            return self.ref(args)
        if fn == "Fn::GetAtt":
            logical_id, attribute = args.split(".", 1) if isinstance(args, str) else args
            return self.get_att(logical_id, attribute)
        if fn == "Fn::Sub":
            return self._sub(args)
        if fn == "Fn::If":
            name, if_true, if_false = args
            return self.resolve(if_true if self.condition(name) else if_false)
        if fn == "Fn::Join":
            separator, values = args
            return separator.join(str(v) for v in self.resolve(values))
        raise ValueError(f"intrinsic function {fn} is not allowed here (only {ALLOWED_INTRINSICS})")

    def _sub(self, args: Any) -> str:
        text, variables = (args, {}) if isinstance(args, str) else (args[0], args[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name:
                return self.get_att(*name.split(".", 1))
            return self.ref(name)

        return SUB_VARIABLE.sub(replace, text)


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

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in substitutions:
            raise KeyError(
                f"pipeline.asl.json uses ${{{name}}} but template.yaml does not substitute it"
            )
        return substitutions[name]

    return SUB_VARIABLE.sub(replace, definition_text)


def intrinsic_names(node: Any) -> set[str]:
    """Every intrinsic function name used inside ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" or key.startswith("Fn::"):
                found.add(key)
            found |= intrinsic_names(value)
    elif isinstance(node, list):
        for value in node:
            found |= intrinsic_names(value)
    return found


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
    naming = Resolver(parameters=dict(parameters or {}))
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
    names = physical_names(parameters)
    refs: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    for logical_id, name in names.items():
        kind = resources()[logical_id]["Type"]
        arn = arn_of(kind, name)
        refs[logical_id] = (
            arn if kind in ("AWS::SNS::Topic", "AWS::Serverless::StateMachine") else name
        )
        attributes[(logical_id, "Arn")] = arn
        attributes[(logical_id, "Name")] = name
        attributes[(logical_id, "TopicName")] = name
    refs.update(overrides)
    return Resolver(parameters=dict(parameters or {}), refs=refs, attributes=attributes)
