"""A local SageMaker: control plane and runtime that run jobs and endpoints as local processes.

moto's SageMaker stores jobs but runs nothing; this service runs them for real (see
shared/DESIGN.md, "The local cloud"). Entry points: ``LocalSageMakerService`` and
``SageMakerConfig``.
"""

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.service import LocalSageMakerService

__all__ = ["LocalSageMakerService", "SageMakerConfig"]
