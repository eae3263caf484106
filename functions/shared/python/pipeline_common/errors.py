"""The project's exception classes.

A Lambda function that raises reports the exception's class name as ``errorType``; the
state machine's Retry and Catch clauses match on that name. So the class names below are
part of the contract with ``statemachine/pipeline.asl.json``: rename one only together
with the definition. Every message names the object concerned, the limit or expectation
it broke and what a person can do about it.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure the pipeline reports to a person (SNS + a failed execution)."""


# --- failures that end the run (caught by the state machine and notified) -------------


class ConfigurationError(PipelineError):
    """The deployment is missing something it needs (an environment variable, the
    training source in the artifacts bucket, an image URI)."""


class DatasetInvalid(PipelineError):
    """The uploaded data set does not match its manifest or the expected layout."""


class DatasetTooLarge(PipelineError):
    """Reading every image would not finish within the validation Lambda's timeout."""


class TuningFailed(PipelineError):
    """The hyperparameter tuning job ended Failed or Stopped."""


class NoCompletedTrainingJob(PipelineError):
    """The tuning job ended without a single completed training job to pick from."""


class TrainingFailed(PipelineError):
    """The profiled retraining job ended Failed or Stopped."""


class EndpointFailed(PipelineError):
    """The endpoint did not reach InService with this run's configuration."""


class SmokeTestFailed(PipelineError):
    """The freshly deployed endpoint did not answer a real test image correctly shaped."""


class JobNotFound(PipelineError):
    """A SageMaker resource this run created cannot be found any more."""


class AwsCallFailed(PipelineError):
    """An AWS API call failed for a reason that retrying will not fix."""


# --- transient failures (retried by the state machine with backoff) --------------------


class TransientError(PipelineError):
    """Base class of errors the state machine retries with backoff."""


class SageMakerThrottled(TransientError):
    """SageMaker answered ThrottlingException: too many API calls per second."""


class ResourceLimitExceeded(TransientError):
    """An account quota (instances, concurrent jobs) is used up for now."""


class EndpointBusy(TransientError):
    """The endpoint is being created, updated or deleted by someone else right now."""
