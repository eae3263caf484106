"""Fuzz POST /predict from docs/openapi.yaml with schemathesis, against the real local API.

A bounded number of generated requests (valid and invalid by the description, every declared
media type: real PNGs, random bytes, JSON documents of any shape) goes through the local API
Gateway, the predict Lambda and the endpoint. None may answer 5xx, every answer is JSON, and no
body may carry a traceback. The strategies come from schemathesis; hypothesis drives them
(schemathesis' own pytest loader does not run under pytest 9).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from .conftest import ServingCloud

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MAX_EXAMPLES = 100
PREDICT = schemathesis.openapi.from_path(OPENAPI)["/predict"]["POST"]
REQUESTS = st.one_of(
    PREDICT.as_strategy(GenerationMode.POSITIVE), PREDICT.as_strategy(GenerationMode.NEGATIVE)
)

pytestmark = pytest.mark.timeout(900)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=REQUESTS)
def test_api_fuzz_predict_never_answers_5xx_or_a_traceback(
    serving_cloud: ServingCloud, case: schemathesis.Case
) -> None:
    api = serving_cloud.api
    response = case.call(base_url=api.url, headers={"x-api-key": api.key}, timeout=60)

    body = response.text
    assert response.status_code < 500, f"{response.status_code}: {body[:500]}"
    assert "Traceback" not in body and 'File "' not in body, body[:2000]
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: lists
    assert content_type.startswith("application/json"), body[:200]
    document = response.json()
    if response.status_code == 200:
        assert 0 <= document["class_index"] < 10, document
    else:
        assert document.get("message"), document
