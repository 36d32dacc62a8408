"""The learning benchmark's smoke run (``bench/learning_bench.py --quick``) completes and reports.

It runs in a subprocess with its own data directory (SQLite, whatever the suite runs on), its own
simulator and gateway on free ports; a few seconds. Two rounds of 150 requests are too few to
learn anything: only the harness and the baselines' plain facts are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_quick_run_reports_rounds_against_the_baselines(tmp_path: Path) -> None:
    report = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "learning_bench.py"), "--quick",
         "--dir", str(tmp_path), "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "| always large" in out and "| always fast" in out and "| round 2" in out
    assert "PASS  target" in out or "FAIL  target" in out

    data = json.loads(report.read_text())
    large, fast = data["baselines"]
    assert large["failed"] == fast["failed"] == 0
    assert large["answered_by"] == {"summarize": {"large": 60}, "extract": {"large": 60},
                                    "code": {"large": 30}}  # fmt: skip
    # The fast tier is far cheaper and, on extract and code, far more often wrong.
    assert fast["cost_per_1k_requests_usd"] < large["cost_per_1k_requests_usd"] / 10
    assert fast["approval_rate"] < large["approval_rate"] - 0.05
    first = data["rounds"][0]
    assert first["start_tiers"] == {"summarize": "large", "extract": "large", "code": "large"}
    # Exploration sends some of it one tier down, and every explored answer is reviewed.
    assert first["explored"] > 0
    assert first["reviewed"].get("explored") == first["explored"]
    assert first["failed"] == 0
