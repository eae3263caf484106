"""Reading template.yaml the way CloudFormation does, for the local deployment.

The local cloud deploys from the same template.yaml that `sam deploy` uses, so it must resolve
the template's parameters, conditions and intrinsic functions itself (there is no CloudFormation
engine to do it). This module does exactly that for the functions CloudFormation defines:
Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or, Fn::Select,
Fn::Split and the pseudo parameters.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
NO_VALUE = object()  # AWS::NoValue: the property is removed
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class TemplateError(ValueError):
    """The template uses something the local deployment cannot resolve; names what and where."""


def load_template(path: Path) -> dict[str, Any]:
    """Parse template.yaml, short-form tags (!Ref, !Sub...) included, into plain dicts."""
    return _plain(cfn_yaml.load(str(path)))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def read_parameter_overrides(samconfig: Path, config_env: str) -> dict[str, str]:
    """`parameter_overrides` of `[<env>.deploy.parameters]` in samconfig.toml, as sam reads it."""
    if not samconfig.exists():
        return {}
    config = tomllib.loads(samconfig.read_text())
    raw = config.get(config_env, {}).get("deploy", {}).get("parameters", {})
    overrides = raw.get("parameter_overrides", [])
    items = shlex.split(overrides) if isinstance(overrides, str) else list(overrides)
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TemplateError(f"{samconfig}: parameter override {item!r} is not Key=Value")
        pairs[key] = value.strip('"')
    return pairs


def parameter_values(template: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Template parameter defaults with overrides applied; unknown or missing ones are errors."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"Unknown template parameters {unknown}; declared: {sorted(declared)}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in overrides:
            value: Any = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"Template parameter {name} has no default: give it a value")
        allowed = spec.get("AllowedValues")
        if allowed and str(value) not in [str(a) for a in allowed]:
            raise TemplateError(f"Parameter {name}={value!r} is not one of {allowed}")
        if spec.get("Type") == "CommaDelimitedList":
            value = [v.strip() for v in str(value).split(",")] if value != "" else []
        else:
            value = str(value)
        values[name] = value
    return values


@dataclass
class Resolver:
    """Evaluates intrinsic functions against known references and attributes."""

    stack_name: str
    parameters: dict[str, Any]
    refs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    region: str = REGION
    account_id: str = ACCOUNT_ID

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local"
            ),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        for source in (self.pseudo(), self.parameters, self.refs):
            if name in source:
                return source[name]
        raise TemplateError(f"Ref to unknown name {name!r}")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        try:
            return self.attributes[logical_id][attribute]
        except KeyError:
            raise TemplateError(
                f"Fn::GetAtt {logical_id}.{attribute}: the local deployment does not know it"
            ) from None

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise TemplateError(f"Unknown condition {name!r}")
        return bool(self.resolve(self.conditions[name]))

    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic function inside `value`; AWS::NoValue entries are dropped."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = self._functions().get(key)
            if handler is not None:
                return handler(arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": lambda arg: self.ref(arg),
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": lambda arg: str(arg[0]).join(str(v) for v in self.resolve(arg[1])),
            "Fn::If": self._if,
            "Fn::Equals": lambda arg: str(self.resolve(arg[0])) == str(self.resolve(arg[1])),
            "Fn::Not": lambda arg: not self.resolve(arg[0]),
            "Fn::And": lambda arg: all(self.resolve(v) for v in arg),
            "Fn::Or": lambda arg: any(self.resolve(v) for v in arg),
            "Fn::Select": lambda arg: self.resolve(arg[1])[int(self.resolve(arg[0]))],
            "Fn::Split": lambda arg: str(self.resolve(arg[1])).split(arg[0]),
            "Condition": lambda arg: self.condition(arg),
        }

    def _get_att(self, arg: Any) -> Any:
        logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
        return self.get_att(logical_id, self.resolve(attribute))

    def _if(self, arg: list[Any]) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self.resolve(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in local:
                return str(local[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return _SUB_VARIABLE.sub(replace, text).replace("${!", "${")


SUB_VARIABLE = _SUB_VARIABLE  # `${Name}` in Fn::Sub and in a state machine's definition


def substitute_definition(definition: str, substitutions: Mapping[str, Any]) -> str:
    """Fill a definition's `${Name}` placeholders from DefinitionSubstitutions.

    A placeholder without a substitution is an error that names it (CloudFormation would
    leave it in and the state machine would fail at run time, far from the cause).
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in substitutions:
            raise TemplateError(
                f"the definition uses ${{{name}}} but DefinitionSubstitutions does not give it"
            )
        return str(substitutions[name])

    return _SUB_VARIABLE.sub(replace, definition)


def intrinsic_names(node: Any) -> set[str]:
    """Every intrinsic function name (Ref, Fn::...) used inside `node`."""
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
