"""A stand-in inference.py for the local SageMaker's tests (the SageMaker serving contract).

It uses the toolkit's plain input_fn/predict_fn/output_fn contract and raises the toolkit's own
error type, so the tests see what the real toolkit makes of that: the status it carries and a
body of message plus traceback (training/inference.py answers through the context instead).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sagemaker_inference.errors import GenericInferenceToolkitError as InputError


def model_fn(model_dir: str) -> dict[str, Any]:
    info = json.loads((Path(model_dir) / "model_info.json").read_text())
    time.sleep(info.get("load_seconds", 0))
    if info.get("crash_on_load"):
        raise RuntimeError("model weights are corrupt")
    return info


def input_fn(body: bytes, content_type: str) -> Any:
    if content_type != "application/json":
        raise InputError(415, f"unsupported content type {content_type}")
    if not body:
        raise InputError(400, "empty body")
    return json.loads(body)


def predict_fn(data: Any, model: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Echoes the request; with CustomAttributes (the header the toolkit's context holds), echoes
    them too, so a test sees what reached the container."""
    if isinstance(data, dict) and data.get("boom"):
        raise RuntimeError("kaboom: a bug in predict_fn")
    answer = {"version": model["version"], "echo": data}
    headers = context.get_all_request_header(0) if context is not None else {}
    for key, value in (headers or {}).items():
        if key.lower() == "x-amzn-sagemaker-custom-attributes":
            answer["custom_attributes"] = value
    return answer


def output_fn(prediction: dict[str, Any], accept: str) -> tuple[str, str]:
    return json.dumps(prediction), "application/json"
