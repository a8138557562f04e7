"""The chaos suite: the real daemon under random faults, then the guarantees checked from storage.

Short run (default ``pytest``): ~60 sessions, >= 20 faults, under 3 minutes.
Long run: ``pytest -m chaos_long tests/chaos`` (>= 200 faults, a few hundred sessions).
Replay a schedule with ``CHAOS_SEED=<seed printed at the start>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import LONG, SHORT, ChaosRun


def _run(tmp_path: Path, profile: object) -> None:
    run = ChaosRun(tmp_path, profile)  # type: ignore[arg-type]
    report = run.run()
    assert report.stats["faults_total"] >= min(20, run.profile.min_faults), report.stats["faults"]
    assert not report.violations, f"{len(report.violations)} violations (seed {run.seed}):\n" + "\n".join(
        report.violations[:60]
    )


@pytest.mark.timeout(300)
def test_chaos_short(tmp_path: Path) -> None:
    _run(tmp_path, SHORT)


@pytest.mark.chaos_long
@pytest.mark.timeout(3600)
def test_chaos_long(tmp_path: Path) -> None:
    _run(tmp_path, LONG)
