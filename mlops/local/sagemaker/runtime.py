"""InvokeEndpoint: forward a request to the endpoint's active model server, map its answer.

The container's 2xx answer is returned as is (Body, ContentType, InvokedProductionVariant). A
4xx/5xx from the container becomes SageMaker's ModelError (HTTP 424) carrying the container's
status and body in OriginalStatusCode/OriginalMessage, worded as AWS words it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import urllib3

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.endpoint_state import Endpoint
from mlops.local.sagemaker.endpoints import EndpointManager
from mlops.local.sagemaker.errors import ModelError, RuntimeValidationError, ServiceUnavailable

logger = logging.getLogger(__name__)


@dataclass
class Invocation:
    body: bytes
    content_type: str
    variant: str


def endpoint_not_found(name: str, config: SageMakerConfig) -> RuntimeValidationError:
    return RuntimeValidationError(f"Endpoint {name} of account {config.account_id} not found.")


def invoke_endpoint(
    manager: EndpointManager,
    endpoint: Endpoint | None,
    name: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
    target_variant: str | None = None,
    inference_id: str | None = None,
) -> Invocation:
    config = manager.config
    if endpoint is None:
        raise endpoint_not_found(name, config)
    try:
        server = manager.route(endpoint, target_variant)
    except KeyError as error:
        raise RuntimeValidationError(
            f"Variant {target_variant} not found for endpoint {name} of account "
            f"{config.account_id}."
        ) from error
    if server is None:
        raise RuntimeValidationError(
            f"Endpoint {name} of account {config.account_id} is not in service "
            f"(status {endpoint.status}); invoke it once DescribeEndpoint says InService."
        )
    try:
        response = manager.forward(server, body, content_type, accept)
    except urllib3.exceptions.HTTPError as error:
        logger.warning("model server of %s unreachable: %s", name, error)
        raise ServiceUnavailable(
            f"The model server of endpoint {name} (variant {server.variant_name}) did not "
            f"answer: {type(error).__name__}. See its log in CloudWatch Logs group "
            f"/aws/sagemaker/Endpoints/{name}."
        ) from error
    finally:
        server.release()
    if response.status >= 400:
        manager.record_errors(name, server.variant_name, response.status)
        raise model_error(response, name, config, server.variant_name)
    invocation = Invocation(
        body=response.data,
        content_type=response.headers.get("Content-Type", "application/json"),
        variant=server.variant_name,
    )
    manager.capture.capture(
        server.data_capture,
        name,
        server.variant_name,
        (body, content_type or "application/octet-stream"),
        (invocation.body, invocation.content_type),
        inference_id,
    )
    return invocation


def model_error(
    response: urllib3.BaseHTTPResponse, name: str, config: SageMakerConfig, variant: str
) -> ModelError:
    status = response.status
    original = response.data.decode("utf-8", errors="replace")
    kind = "client" if status < 500 else "server"
    region, account = config.region, config.account_id
    group = f"/aws/sagemaker/Endpoints/{name}"
    return ModelError(
        f'Received {kind} error ({status}) from primary with message "{original}". See '
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logEventViewer:group={group} in account {account} for more information.",
        OriginalStatusCode=status,
        OriginalMessage=original,
        LogStreamArn=f"arn:aws:logs:{region}:{account}:log-group:{group}",
    )
