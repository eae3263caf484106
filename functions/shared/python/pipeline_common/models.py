"""Typed pieces of the state that flow between steps (kept small: 256 KB state limit)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StepModel(BaseModel):
    """Base for step inputs: unknown keys are ignored so the state can grow."""

    model_config = ConfigDict(extra="ignore")


class SampleImage(StepModel):
    """One real test image, used by the smoke test."""

    key: str
    class_index: int
    class_name: str


class ValidatedDataset(StepModel):
    """What validate_dataset found: where the splits are and how big they are."""

    name: str
    bucket: str
    prefix: str
    manifest_key: str
    class_count: int
    counts: dict[str, int]
    channels: dict[str, str]
    sample_image: SampleImage


class BestTrial(StepModel):
    """The tuning job's best training job (the configuration to retrain)."""

    training_job_name: str
    objective_value: float | None = None
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    model_uri: str | None = None
    leaderboard_uri: str | None = None
