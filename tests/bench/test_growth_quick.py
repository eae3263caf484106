"""`python -m bench --quick growth` still runs: every curve measured, every check judged.

Slow (a local cloud, two small data sets, a train.py data pass): about 2 minutes. The goals
themselves are judged by the full run (`make bench`), not here: at --quick sizes fixed costs
dominate and the growth exponents say little.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_growth_quick_measures_every_curve(tmp_path):
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench", "--quick", "growth"]
    command += ["--work-dir", str(tmp_path / "work"), "--output", str(output)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    finished = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=850,
    )

    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    growth = json.loads(output.read_text())["results"]["growth"]
    assert growth["status"] in ("pass", "fail"), growth
    metrics = {check["metric"]: check for check in growth["checks"]}
    curves = ("upload", "validation", "epoch data path (CPU s)")
    for curve in (*curves, "image check, train.py setup (CPU s)"):
        assert metrics[f"{curve}: growth exponent"]["value"] is not None, metrics
    upload = next(m for name, m in metrics.items() if name.startswith("upload files/s at"))
    assert upload["value"] > 0, upload
    assert [r["trials"] for r in growth["measurements"]["report"]] == [2, 50]
    assert len(growth["measurements"]["curve"]) == 2
