"""The run records: each step's account of a run, under ``runs/<execution>/`` (docs/contracts.md).

Writers (the handlers) and readers (the report, the CLI, the demo) name a record only through
these constants, so a renamed record cannot leave a reader looking for the old name.
"""

from __future__ import annotations

from datetime import datetime

from pipeline_common.naming import run_prefix

VALIDATION = "validation.json"  # ValidateDataset: counts, skipped files, smoke-test images
LEADERBOARD = "leaderboard.json"  # FindBest: the tuning job's trials, best first
GATE = "gate.json"  # EvaluateRules: rule findings, quality figures, the decision
REGISTRATION = "model_package.json"  # RegisterModel: the model package version of the run
APPROVAL_REQUEST = "approval_request.json"  # RequestApproval: the waiting run's task token
DEPLOYMENT = "deployment.json"  # DeployEndpoint: what serves, created or updated
SMOKE_TEST = "smoke_test.json"  # SmokeTest: the requests sent to the new endpoint
# RegisterModel: the retrain's monitoring baseline (pipeline_common.baseline), out of its
# output.tar.gz, named by the registry version's DriftCheckBaselines
MONITORING_BASELINE = "baseline.json"
REPORT = "report.html"  # WriteReport: the human-readable report of the run

RUN_RECORDS = (VALIDATION, LEADERBOARD, GATE, REGISTRATION, DEPLOYMENT, SMOKE_TEST)


def record_key(execution: str, name: str) -> str:
    """The S3 key of one record of a run, e.g. ``runs/digits-1a2b/gate.json``."""
    return f"{run_prefix(execution)}{name}"


# The drift monitor's records (functions/monitor_endpoint), per endpoint:
# monitoring/<endpoint>/state.json (how far it has checked, when it last retrained) and
# monitoring/<endpoint>/<UTC time>/findings.json (one per check).
MONITORING_PREFIX = "monitoring"
MONITOR_STATE = "state.json"
FINDINGS = "findings.json"


def monitoring_key(endpoint: str, *parts: str) -> str:
    return "/".join((MONITORING_PREFIX, endpoint, *parts))


def findings_key(endpoint: str, moment: datetime) -> str:
    """``monitoring/mlops-classifier/2026-12-03T10-30-00Z/findings.json``: sorts by time."""
    return monitoring_key(endpoint, f"{moment:%Y-%m-%dT%H-%M-%SZ}", FINDINGS)
