"""The soak (tools/soak.py), briefly: ~30 s of Checks while decryption keys rotate in a
Secret on a fake API server that drops, cuts, stalls, 410s, 504s, throttles, hangs and
restarts its watches.

The tool decides; this test runs it as ``make soak`` would (a subprocess, the real CLI
underneath) and asserts on its JSON report: no wrong decision (an allow of a token that
was not valid at that instant, with the tolerance the tool documents), no late deny,
every fault kind injected at least once, at least five rotations, bounded growth of the
service's RSS, threads and open fds, and exit 0 on SIGTERM. The figures are printed
(``-s``) and attached to the test report as a property.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 30
FAULT_EVERY = 2.2  # every kind of fault at least once in SECONDS
FAULT_KINDS = {
    "close", "abort", "gone-event", "gone-rewatch", "stall", "fail", "outage", "restart",
    "too-large", "throttle", "hang", "lose-history",
}  # fmt: skip


def test_soak_with_faults_makes_no_wrong_decision_and_does_not_grow(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    report_path = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--seconds", str(SECONDS),
         "--fault-every", str(FAULT_EVERY),
         "--json", str(report_path), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=SECONDS + 90, check=False,
    )  # fmt: skip
    print(run.stdout)
    assert report_path.exists(), run.stdout + run.stderr
    report = json.loads(report_path.read_text())
    summary = {
        key: report[key]
        for key in ("checks", "checks_per_second", "wrong_decisions", "late_denies",
                    "rotations", "faults", "propagation", "service_exit_code", "seed")
    }  # fmt: skip
    summary["resources"] = {
        name: {k: report["resources"][name][k] for k in ("min", "max", "last")}
        for name in ("rss", "threads", "fds")
    }
    record_property("soak", summary)
    assert report["wrong_decisions"] == 0, report["wrong_examples"]
    assert report["late_denies"] == 0, report["late_examples"]
    assert report["checks"] >= 20 * SECONDS, summary
    assert report["rotations"] >= 5, summary
    assert set(report["faults"]) == FAULT_KINDS, summary
    assert report["resources"]["within_bounds"], report["resources"]
    assert report["service_exit_code"] == 0
    assert report["client_errors"] == {}
    assert report["ok"]
    assert run.returncode == 0, run.stdout + run.stderr
