"""Fixtures for the agentctl tests.

One daemon serves all these tests (starting one costs seconds on two cores); tests that
stop or restart a daemon start their own with ``ctlkit.start_daemon``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ctlkit import Ctl, Daemon, start_daemon, write_config


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    config = write_config(tmp_path_factory.mktemp("agentctl-daemon"))
    running = start_daemon(config)
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture
def ctl(daemon: Daemon) -> Ctl:
    return Ctl(daemon.config)
