"""The local deployment's reading of templates: parameters, conditions, intrinsic functions."""

from pathlib import Path

import pytest

from mlops.local.cloud import usage_plan_throttle
from mlops.local.deploy import API
from mlops.local.template import (
    Resolver,
    TemplateError,
    load_template,
    parameter_values,
    read_parameter_overrides,
)

TOY = Path(__file__).parent / "toy" / "template.yaml"


@pytest.fixture
def resolver() -> Resolver:
    template = load_template(TOY)
    return Resolver(
        stack_name="stack",
        parameters=parameter_values(template, {"Setting": "given"}),
        refs={"Thing": "thing-name"},
        attributes={"Thing": {"Arn": "arn:thing"}},
        conditions=template["Conditions"],
    )


def test_resolver_sub_with_parameters_pseudo_parameters_and_attributes(resolver):
    value = resolver.resolve(
        {"Fn::Sub": "${ProjectName}-${AWS::AccountId}-${Thing.Arn}-${!Literal}"}
    )
    assert value == "toy-123456789012-arn:thing-${Literal}"


def test_resolver_sub_with_local_variables(resolver):
    assert (
        resolver.resolve({"Fn::Sub": ["${A}/${Setting}", {"A": {"Ref": "Thing"}}]})
        == "thing-name/given"
    )


def test_resolver_if_follows_the_condition(resolver):
    value = {"Fn::If": ["IsSlow", 30, 2]}
    assert resolver.resolve(value) == 2
    resolver.parameters["Slow"] = "true"
    assert resolver.resolve(value) == 30


def test_resolver_drops_no_value(resolver):
    value = {"A": {"Ref": "AWS::NoValue"}, "B": [1, {"Ref": "AWS::NoValue"}]}
    assert resolver.resolve(value) == {"B": [1]}


def test_resolver_join_select_split(resolver):
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Ref": "Thing"}]]}) == "a-thing-name"
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}) == "y"


def test_resolver_unknown_reference_names_it(resolver):
    with pytest.raises(TemplateError, match="Missing"):
        resolver.resolve({"Ref": "Missing"})
    with pytest.raises(TemplateError, match=r"Thing\.Nope"):
        resolver.resolve({"Fn::GetAtt": ["Thing", "Nope"]})


def test_parameter_values_rejects_unknown_and_disallowed_values():
    template = load_template(TOY)
    with pytest.raises(TemplateError, match="Unknown template parameters"):
        parameter_values(template, {"Nope": "1"})
    with pytest.raises(TemplateError, match="not one of"):
        parameter_values(template, {"Slow": "maybe"})


def test_parameter_overrides_read_from_samconfig_environment(tmp_path):
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        'version = 0.1\n[default.deploy.parameters]\nparameter_overrides = "A=1"\n'
        '[local.deploy.parameters]\nparameter_overrides = ["MaxJobs=2", "Name=\\"x y\\""]\n'
    )
    assert read_parameter_overrides(samconfig, "local") == {"MaxJobs": "2", "Name": "x y"}
    assert read_parameter_overrides(samconfig, "default") == {"A": "1"}
    assert read_parameter_overrides(tmp_path / "missing.toml", "local") == {}


# -- the usage plan's throttle, as the local API reads it from the deployed Api -----------------
def api_auth(overrides: dict[str, str]) -> dict:
    """The real template's Api properties, resolved with `overrides` as the deployment would."""
    template_path = Path(__file__).parents[2] / "template.yaml"
    template = load_template(template_path)
    images = {"TrainingImage": "training:1", "InferenceImage": "inference:1"}
    resolver = Resolver(
        stack_name="mlops-local",
        parameters=parameter_values(template, {**images, **overrides}),
        conditions=template.get("Conditions", {}),
    )
    (api,) = [r for r in template["Resources"].values() if r["Type"] == API]
    return {"Auth": resolver.resolve(api["Properties"]["Auth"])}


def test_usage_plan_throttle_is_the_templates_defaults() -> None:
    assert usage_plan_throttle(api_auth({})) == (20.0, 40)


def test_usage_plan_throttle_follows_parameter_overrides() -> None:
    overrides = {"ApiRateLimit": "1000", "ApiBurstLimit": "2000"}

    assert usage_plan_throttle(api_auth(overrides)) == (1000.0, 2000)


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"ApiKeyRequired": True},
        {"UsagePlan": {"CreateUsagePlan": "NONE", "Throttle": {"RateLimit": 1}}},
        {"UsagePlan": {"CreateUsagePlan": "PER_API", "Quota": {"Limit": 5, "Period": "DAY"}}},
    ],
)
def test_usage_plan_throttle_is_none_without_a_throttle(auth: dict) -> None:
    assert usage_plan_throttle({"Auth": auth}) is None


def test_usage_plan_throttle_with_a_rate_only_has_a_burst_of_the_rate() -> None:
    auth = {"UsagePlan": {"CreateUsagePlan": "SHARED", "Throttle": {"RateLimit": "2.5"}}}

    assert usage_plan_throttle({"Auth": auth}) == (2.5, 2)
