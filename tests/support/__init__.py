"""What the tests share: waiting on a condition, data sets, the Lambda environment, the
template's names, a model server. One place, so a fix reaches every test that uses it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"  # events as AWS sends them (S3, API Gateway), for the handlers
