"""The search space of a tuning job: SageMaker's ParameterRanges as optuna distributions.

Each tuned hyperparameter becomes a `Parameter`: its optuna distribution (Continuous ->
FloatDistribution, Integer -> IntDistribution, Categorical -> CategoricalDistribution; scaling
types map onto log=True) and how a sampled value travels to the training job as a string and
back (warm start reads the parents' TunedHyperParameters). AWS's checks on the ranges live here
too, as ValidationException with AWS's wording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from mlops.local.sagemaker.errors import ValidationException


@dataclass
class Parameter:
    """One tuned hyperparameter: its optuna distribution and how values become strings."""

    name: str
    distribution: BaseDistribution
    reverse_log: bool = False  # sampled as log(1 - x): dense near 1, as AWS's ReverseLogarithmic

    def to_string(self, sampled: Any) -> str:
        if isinstance(self.distribution, CategoricalDistribution):
            return str(sampled)
        if isinstance(self.distribution, IntDistribution):
            return str(int(sampled))
        value = 1.0 - sampled if self.reverse_log else float(sampled)
        return repr(value)

    def from_string(self, text: str) -> Any:
        """A parent trial's value back into this distribution (ValueError when it does not fit)."""
        distribution = self.distribution
        if isinstance(distribution, CategoricalDistribution):
            if text not in distribution.choices:
                raise ValueError(f"{text!r} is not one of {distribution.choices}")
            return text
        if isinstance(distribution, IntDistribution):
            value: float = int(float(text))
        else:
            value = 1.0 - float(text) if self.reverse_log else float(text)
        if not distribution.low <= value <= distribution.high:
            raise ValueError(f"{text} is outside [{distribution.low}, {distribution.high}]")
        return value


def build_search_space(ranges: dict[str, Any], strategy: str) -> list[Parameter]:
    """ParameterRanges -> parameters, rejecting what AWS rejects (with its reasons)."""
    parameters: list[Parameter] = []
    for item in ranges.get("CategoricalParameterRanges", []):
        parameters.append(Parameter(item["Name"], CategoricalDistribution(list(item["Values"]))))
    if strategy == "Grid" and (
        ranges.get("ContinuousParameterRanges") or ranges.get("IntegerParameterRanges")
    ):
        raise ValidationException(
            "The Grid search strategy supports only categorical hyperparameter ranges: replace "
            "ContinuousParameterRanges and IntegerParameterRanges with "
            "CategoricalParameterRanges, or use another strategy."
        )
    for item in ranges.get("ContinuousParameterRanges", []):
        parameters.append(_continuous(item))
    for item in ranges.get("IntegerParameterRanges", []):
        parameters.append(_integer(item))
    names = [p.name for p in parameters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationException(
            f"Hyperparameter names must be unique across parameter ranges: {', '.join(duplicates)}"
        )
    return parameters


def _bounds(item: dict[str, Any], cast: type) -> tuple[Any, Any]:
    try:
        low, high = cast(item["MinValue"]), cast(item["MaxValue"])
    except ValueError as error:
        raise ValidationException(
            f"Range of hyperparameter {item['Name']} must have numeric MinValue and MaxValue "
            f"(got {item['MinValue']!r}, {item['MaxValue']!r})"
        ) from error
    if cast is float and not (math.isfinite(low) and math.isfinite(high)):
        raise ValidationException(f"Range of hyperparameter {item['Name']} must be finite")
    if low > high:
        raise ValidationException(
            f"MinValue {low} of hyperparameter {item['Name']} is greater than MaxValue {high}"
        )
    return low, high


def _continuous(item: dict[str, Any]) -> Parameter:
    low, high = _bounds(item, float)
    scaling = item.get("ScalingType", "Auto")
    if scaling == "Auto":
        # AWS chooses for itself; locally: log scale when the range spans two decades.
        scaling = "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
    if scaling == "Logarithmic":
        if low <= 0:
            raise ValidationException(
                f"Logarithmic scaling of hyperparameter {item['Name']} needs MinValue > 0 "
                f"(got {low})"
            )
        return Parameter(item["Name"], FloatDistribution(low, high, log=True))
    if scaling == "ReverseLogarithmic":
        if not 0 <= low < high < 1:
            raise ValidationException(
                f"ReverseLogarithmic scaling of hyperparameter {item['Name']} needs "
                f"0 <= MinValue < MaxValue < 1 (got {low}, {high})"
            )
        return Parameter(item["Name"], FloatDistribution(1 - high, 1 - low, log=True), True)
    return Parameter(item["Name"], FloatDistribution(low, high))


def _integer(item: dict[str, Any]) -> Parameter:
    low, high = _bounds(item, int)
    scaling = item.get("ScalingType", "Auto")
    if scaling == "ReverseLogarithmic":
        raise ValidationException(
            f"ReverseLogarithmic scaling is for continuous ranges only (hyperparameter "
            f"{item['Name']} is an integer range)"
        )
    if scaling == "Auto":
        scaling = "Logarithmic" if low > 0 and high / low >= 100 else "Linear"
    if scaling == "Logarithmic" and low <= 0:
        raise ValidationException(
            f"Logarithmic scaling of hyperparameter {item['Name']} needs MinValue > 0 (got {low})"
        )
    return Parameter(item["Name"], IntDistribution(low, high, log=scaling == "Logarithmic"))


def grid_size(parameters: list[Parameter]) -> int:
    return math.prod(len(p.distribution.choices) for p in parameters)  # type: ignore[attr-defined]
