"""The state machine and the handlers agree on every step's input and output.

Each Lambda Task of statemachine/*.asl.* names its function (``${XFunctionArn}``), builds the
function's event in ``Parameters.Payload`` and keeps part of the answer with
``ResultSelector`` under ``ResultPath``. The handlers declare both ends: ``@step(InputModel)``
and the output model they return. Here every Payload key must be a field of the input model
(and every required field supplied), every ResultSelector path a field of the output model,
and every later reference into a step's result (the next step's Payload, a Choice) a key that
step's ResultSelector keeps, with all the fields a nested input model requires.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from tests.support import template as sam_template

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = sorted((ROOT / "statemachine").glob("*.asl.*"))
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"


def load_definition(path: Path) -> dict[str, Any]:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def all_states(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state, also inside Parallel branches and Map iterators."""
    found = dict(states)
    for state in states.values():
        for branch in state.get("Branches", []):
            found.update(all_states(branch["States"]))
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                found.update(all_states(state[key]["States"]))
    return found


def lambda_tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: state
        for name, state in all_states(definition["States"]).items()
        if state["Type"] == "Task" and state.get("Resource") == LAMBDA_INVOKE
    }


def folder_of(function_arn: str) -> str:
    """``${ValidateDatasetFunctionArn}`` -> ``validate_dataset`` (CodeUri in template.yaml)."""
    logical_id = function_arn.removeprefix("${").removesuffix("Arn}")
    return Path(sam_template.functions()[logical_id]["CodeUri"]).name


def field_names(model: type[BaseModel]) -> dict[str, Any]:
    """The keys an event or answer carries for ``model``: alias where one is set."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def required(model: type[BaseModel]) -> set[str]:
    return {key for key, f in field_names(model).items() if f.is_required()}


def members(annotation: Any) -> list[Any]:
    """``A | B`` -> [A, B]; ``A | None`` -> [A]; anything else -> [it]."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def model_in(annotation: Any) -> type[BaseModel] | None:
    found = [a for a in members(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if found else None


def payload(state: dict[str, Any]) -> dict[str, Any]:
    return state["Parameters"]["Payload"]


def static_values(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload(state).items() if not k.endswith(".$")}


def output_for(handler: Any, state: dict[str, Any]) -> type[BaseModel]:
    """The output model this Task gets: for ``A | B``, the one whose Literal fields (``kind``,
    ``action``) accept the Payload's fixed values, or its defaults where the Payload is silent."""
    candidates = members(handler.output_model)
    if len(candidates) == 1:
        return candidates[0]
    fixed = static_values(state)
    matching = [model for model in candidates if accepts(model, fixed)]
    assert len(matching) == 1, f"{state['Parameters']['FunctionName']}: {matching} for {fixed}"
    return matching[0]


def accepts(model: type[BaseModel], fixed: dict[str, Any]) -> bool:
    """Whether the Literal fields with a default (the kind of answer) fit the fixed values."""
    kinds = {
        name: f
        for name, f in model.model_fields.items()
        if typing.get_origin(f.annotation) is typing.Literal and not f.is_required()
    }
    return all(fixed.get(n, f.default) in typing.get_args(f.annotation) for n, f in kinds.items())


def result_path(state: dict[str, Any]) -> str | None:
    path = state.get("ResultPath", "$")
    return path[2:] if path and path.startswith("$.") else None


def reference(value: str) -> list[str]:
    """``$.validated.sample_image`` -> ["validated", "sample_image"]; context paths -> []."""
    return value[2:].split(".") if value.startswith("$.") else []


@pytest.fixture(scope="module", params=DEFINITIONS, ids=lambda p: p.name)
def definition(request) -> dict[str, Any]:
    return load_definition(request.param)


NOT_YET_FRAMED: set[str] = set()  # every step handler declares its input and output model


@pytest.fixture
def handlers(definition, load_handler) -> dict[str, Any]:
    """Task name -> the handler it invokes (framed with @step), loaded with its environment."""
    modules: dict[str, Any] = {}
    found, unframed = {}, set()
    for name, state in lambda_tasks(definition).items():
        folder = folder_of(state["Parameters"]["FunctionName"])
        if folder not in modules:
            modules[folder] = load_handler(folder)
        handler = modules[folder].lambda_handler
        if hasattr(handler, "input_model"):
            found[name] = handler
        else:
            unframed.add(folder)
    assert unframed <= NOT_YET_FRAMED, f"{sorted(unframed)} declare no input and output model"
    return {name: handler for name, handler in found.items()}


def tasks(definition: dict[str, Any], handlers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: state for name, state in lambda_tasks(definition).items() if name in handlers}


def test_every_task_payload_matches_its_input_model(definition, handlers):
    checked = 0
    for name, state in tasks(definition, handlers).items():
        model = handlers[name].input_model
        keys = {k.removesuffix(".$") for k in payload(state)}
        fields = field_names(model)
        assert keys <= fields.keys(), f"{name} sends {sorted(keys - fields.keys())} unknown"
        assert required(model) <= keys, f"{name} omits {sorted(required(model) - keys)}"
        for key, value in static_values(state).items():
            try:
                TypeAdapter(fields[key].annotation).validate_python(value)
            except ValidationError as e:
                pytest.fail(f"{name}: {key}={value!r} is not a valid {model.__name__}.{key}: {e}")
        checked += 1
    assert checked >= 10  # every step of the pipeline that runs a Lambda function


def test_every_result_selector_reads_fields_of_the_output_model(definition, handlers):
    checked = 0
    for name, state in tasks(definition, handlers).items():
        handler = handlers[name]
        assert handler.output_model is not None, f"{name}: the handler declares no output model"
        model = output_for(handler, state)
        for key, path in state.get("ResultSelector", {}).items():
            assert key.endswith(".$"), f"{name}: ResultSelector {key} is a fixed value"
            steps = reference(path)
            assert steps[0] == "Payload", f"{name}: {path} does not read the function's answer"
            current: type[BaseModel] | None = model
            for part in steps[1:]:
                assert current is not None, f"{name}: {path} goes into a value, not an object"
                assert part in field_names(current), f"{name}: {current.__name__} has no {part}"
                current = model_in(field_names(current)[part].annotation)
            checked += 1
    assert checked >= 30


def kept_results(definition, handlers) -> dict[str, tuple[dict[str, str], type[BaseModel]]]:
    """ResultPath -> (the keys ResultSelector keeps with their answer paths, output model)."""
    kept = {}
    for name, state in tasks(definition, handlers).items():
        path = result_path(state)
        if path and "ResultSelector" in state:
            model = output_for(handlers[name], state)
            previous = kept.get(path)
            selector = {k.removesuffix(".$"): v for k, v in state["ResultSelector"].items()}
            assert previous is None or previous[0] == selector, f"{path} is kept twice, differently"
            kept[path] = (selector, model)
    return kept


def test_each_step_reads_what_an_earlier_step_keeps(definition, handlers):
    kept = kept_results(definition, handlers)
    checked = 0
    for name, state in tasks(definition, handlers).items():
        fields = field_names(handlers[name].input_model)
        for key, value in payload(state).items():
            steps = reference(value) if key.endswith(".$") else []
            if not steps or steps[0] not in kept:
                continue  # the execution input or the context object
            selector, _ = kept[steps[0]]
            target = model_in(fields[key.removesuffix(".$")].annotation)
            if len(steps) == 1:
                assert target is not None, f"{name}: {key} gets the whole {value}, not a model"
                missing = required(target) - selector.keys()
                assert not missing, f"{name}: {value} lacks {sorted(missing)} of {target.__name__}"
                unknown = selector.keys() - field_names(target).keys()
                assert not unknown or target.model_config.get("extra") == "ignore", unknown
            else:
                assert steps[1] in selector, f"{name}: {value} is not kept by its step"
            checked += 1
    assert checked >= 10


def test_choices_read_what_the_steps_keep(definition, handlers):
    kept = kept_results(definition, handlers)
    checked = 0
    for name, state in all_states(definition["States"]).items():
        if state["Type"] != "Choice":
            continue
        rules = list(state["Choices"])
        while rules:
            rule = rules.pop()
            rules += (
                rule.get("And", []) + rule.get("Or", []) + ([rule["Not"]] if "Not" in rule else [])
            )
            steps = reference(rule.get("Variable", ""))
            if len(steps) >= 2 and steps[0] in kept:
                assert steps[1] in kept[steps[0]][0], f"{name}: {rule['Variable']} is not kept"
                checked += 1
    assert checked >= 6


def test_the_first_step_reads_what_the_trigger_starts_executions_with(definition, load_handler):
    trigger = load_handler("trigger")
    execution_input = trigger.execution_input("bucket", "datasets/d/manifest.json", "d", "v:1")
    first = definition["States"][definition["StartAt"]]
    starts = [s for s in lambda_tasks(definition).values() if s is not first]
    read = {
        reference(v)[0]
        for state in starts
        for k, v in payload(state).items()
        if k.endswith(".$") and reference(v)
    }
    checked = {"bucket", "manifest_key", "dataset"} & read
    assert checked == {"bucket", "manifest_key", "dataset"}
    assert checked <= execution_input.keys()
