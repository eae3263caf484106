"""Run the real SAM translator over template.yaml and print the IAM roles it generates.

Runs under `.venv-sam/bin/python` (aws-sam-cli's environment, which holds `samtranslator`):
the translator pins a pydantic that the main environment cannot share. It imports nothing from
this project. Input on stdin: {"template": <the SAM template as plain JSON>, "parameters":
{...}}. Output on stdout: {"<role logical id>": <its AWS::IAM::Role Properties>} with the SAM
policy templates expanded exactly as CloudFormation receives them (intrinsic functions left in).

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


def iam_roles(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Translate; keep the AWS::IAM::Role resources (template-defined and SAM-generated)."""
    # The translator takes the pseudo parameters (AWS::Region, ...) from a boto3 session.
    session = boto3.Session(region_name=parameters.get("AWS::Region", "us-east-1"))
    translated = Translator(None, Parser(), boto_session=session).translate(
        with_placeholder_uris(template),
        parameter_values=parameters,
        get_managed_policy_map=lambda: {},
    )
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in translated.get("Resources", {}).items()
        if resource.get("Type") == "AWS::IAM::Role"
    }


def main() -> int:
    request = json.load(sys.stdin)
    json.dump(iam_roles(request["template"], request["parameters"]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
