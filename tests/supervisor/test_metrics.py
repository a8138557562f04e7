"""The supervisor's /metrics, scraped from the real daemon and parsed as Prometheus text."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .daemon import create_jokes, running, write_config

pytestmark = pytest.mark.timeout(120)


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}}."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return sum(v for k, v in samples.get(name, {}).items() if all((key, value) in k for key, value in labels.items()))


def test_metrics_move_as_sessions_tick(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running(config, tmp_path / "daemon.log") as daemon:
        status = daemon.status()
        assert status is not None and status["metrics"], status
        url = status["metrics"]
        assert url.startswith("http://127.0.0.1:")
        create_jokes(daemon.settings, 3)
        time.sleep(1.5)  # a heartbeat or more after the creates
        first = scrape(url)
        assert total(first, "agentd_sessions", status="running") == 3
        assert total(first, "agentd_sessions_by_type", type="joke") == 3
        assert total(first, "agentd_actions_total", kind="create", outcome="done") == 3
        assert total(first, "agentd_action_latency_seconds_count", kind="create") == 3
        assert total(first, "agentd_workers_ready") == 2
        assert total(first, "agentd_worker_rss_bytes") > 10_000_000
        assert "agentd_action_queue_depth" in first
        assert "agentd_action_queue_compactions_total" in first
        time.sleep(1.5)
        second = scrape(url)
        for name in ("agentd_ticks_total", "agentd_tick_duration_seconds_count", "agentd_writer_flush_rows_count"):
            assert total(second, name) > total(first, name), name
        assert total(second, "agentd_tick_lateness_seconds_bucket", le="+Inf") > 0
        # Anything but GET /metrics is a 404, and the daemon goes on.
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url.replace("/metrics", "/nope"), timeout=10)
        assert missing.value.code == 404
        assert daemon.proc.poll() is None


def test_the_daemon_compacts_the_actions_table_between_maintenance_passes(tmp_path: Path) -> None:
    """Every action adds fragments to ``actions``; the supervisor compacts it once it has
    ``[queue] compact_fragments`` (4 here); every create is still acknowledged done (the race
    itself, claim against compaction, is tests/test_queue_compaction.py)."""
    config = write_config(tmp_path)
    env = {"AGENTD_QUEUE__COMPACT_FRAGMENTS": "4", "AGENTD_MAINTENANCE__ENABLED": "false"}
    with running(config, tmp_path / "daemon.log", env=env) as daemon:
        for batch in range(4):  # separate appends: fragments, claims and acknowledgements
            create_jokes(daemon.settings, 2, prefix=f"c{batch}")
        deadline = time.monotonic() + 30
        status = daemon.status()
        while time.monotonic() < deadline:
            status = daemon.status()
            if status and status["queue_compaction"] and status["queue_compaction"]["compactions"]:
                break
            time.sleep(0.3)
        assert status is not None and status["queue_compaction"]["compactions"] >= 1, status
        assert total(scrape(status["metrics"]), "agentd_action_queue_compactions_total") >= 1
        assert daemon.proc.poll() is None
