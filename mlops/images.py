"""Container image URIs, resolved with the sagemaker SDK rather than a hand-kept table.

The template takes TrainingImage, InferenceImage and RuleEvaluatorImage as parameters; `make
deploy` and the local cloud fill them from here. PyTorch 2.6 is the newest version for which
sagemaker-core 2.27 knows both a training and an inference image.
"""

from __future__ import annotations

PYTORCH_VERSION = "2.6"
PY_VERSION = "py312"


def image_parameters(
    region: str,
    training_instance_type: str = "ml.g4dn.xlarge",
    inference_instance_type: str = "ml.m5.large",
) -> dict[str, str]:
    """Template parameter overrides for the three image URIs in `region`."""
    from sagemaker.core import image_uris

    def pytorch(scope: str, instance_type: str) -> str:
        return image_uris.retrieve(
            "pytorch",
            region=region,
            version=PYTORCH_VERSION,
            py_version=PY_VERSION,
            instance_type=instance_type,
            image_scope=scope,
        )

    return {
        "TrainingImage": pytorch("training", training_instance_type),
        "InferenceImage": pytorch("inference", inference_instance_type),
        "RuleEvaluatorImage": image_uris.retrieve("debugger", region=region),
    }
