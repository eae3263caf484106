"""Run the real SAM translator over template.yaml and print the resources the deployment reads.

Runs under `.venv-sam/bin/python` (aws-sam-cli's environment, which holds `samtranslator`):
the translator pins a pydantic that the main environment cannot share. It imports nothing from
this project. Input on stdin: {"template": <the SAM template as plain JSON>, "parameters":
{...}, "types": [...]}. Output on stdout: {"<logical id>": {"Type": ..., "Properties": ...,
"Condition": ...}} for each translated resource of those types (default: AWS::IAM::Role), with
the SAM policy templates expanded and the events (Schedule -> AWS::Events::Rule +
AWS::Lambda::Permission, ScheduleV2 -> AWS::Scheduler::Schedule + its role) exactly as
CloudFormation receives them (intrinsic functions left in).

Local CodeUri/ContentUri/DefinitionUri paths are replaced by S3 placeholders first, which is
what `sam validate` does: the translator only accepts S3 locations, and the policies do not
depend on where the code lives.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

PLACEHOLDER_S3 = {"Bucket": "sam-translate-placeholder", "Key": "code.zip"}
URI_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}


def with_placeholder_uris(template: dict[str, Any]) -> dict[str, Any]:
    """The template with every local code or definition path replaced by an S3 location."""
    for resource in template.get("Resources", {}).values():
        prop = URI_PROPERTIES.get(resource.get("Type", ""))
        props = resource.get("Properties", {})
        if prop and isinstance(props.get(prop), str) and not props[prop].startswith("s3://"):
            props[prop] = dict(PLACEHOLDER_S3)
    return template


DEFAULT_TYPES = ("AWS::IAM::Role",)


def translated_resources(
    template: dict[str, Any], parameters: dict[str, Any], types: tuple[str, ...] = DEFAULT_TYPES
) -> dict[str, Any]:
    """Translate; keep the resources of `types` (template-defined and SAM-generated)."""
    # The translator takes the pseudo parameters (AWS::Region, ...) from a boto3 session.
    session = boto3.Session(region_name=parameters.get("AWS::Region", "us-east-1"))
    translated = Translator(None, Parser(), boto_session=session).translate(
        with_placeholder_uris(template),
        parameter_values=parameters,
        get_managed_policy_map=lambda: {},
    )
    return {
        logical_id: {
            key: resource[key] for key in ("Type", "Properties", "Condition") if key in resource
        }
        for logical_id, resource in translated.get("Resources", {}).items()
        if resource.get("Type") in types
    }


def main() -> int:
    request = json.load(sys.stdin)
    types = tuple(request.get("types") or DEFAULT_TYPES)
    json.dump(translated_resources(request["template"], request["parameters"], types), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
