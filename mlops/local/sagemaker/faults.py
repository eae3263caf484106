"""The local SageMaker's faults: the shared seam lives in ``mlops.local.faults``.

Kept so that ``from mlops.local.sagemaker.faults import Faults`` goes on working; the local Lambda
runtime uses the same seam (``lambda_hang``), so it is no longer SageMaker's alone.
"""

from mlops.local.faults import FAULTS_ENV, KNOWN_FAULTS, Faults, parse_faults

__all__ = ["FAULTS_ENV", "KNOWN_FAULTS", "Faults", "parse_faults"]
