"""The enqueue path under write contention, on a real database (no daemon needed).

LanceDB gives up on an append after its own commit retries when dozens of writers race; the
client retries, and never appends the same action twice even when a failed-looking commit
actually landed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ctlkit import write_config

from agentctl.client import Control
from agentd.config import load_settings
from agentd.store import Store
from agentd.store.actions import ActionRecord

CONTENTION = "lance error: Too many concurrent writers: failed after 20 retries due to manifest contention"


class Flaky:
    """The real actions table, whose first ``add`` fails (before or after committing)."""

    def __init__(self, table: Any, *, commit_first: bool) -> None:
        self.table = table
        self.commit_first = commit_first
        self.adds = 0

    async def add(self, data: Any) -> Any:
        self.adds += 1
        if self.adds == 1:
            if self.commit_first:
                await self.table.add(data)
            raise RuntimeError(CONTENTION)
        return await self.table.add(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_append_retries_contention_and_never_duplicates(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))

    async def go() -> list[ActionRecord]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        real = store.actions
        for commit_first in (False, True):
            flaky = Flaky(real, commit_first=commit_first)
            store.actions = flaky
            control = Control(settings, store)
            submitted = await control.submit("pause", f"s-{commit_first}", {}, hint=False)
            assert submitted.action.status == "pending"
            assert flaky.adds == (1 if commit_first else 2)
        store.actions = real
        return ActionRecord.from_arrow(await real.query().to_arrow())

    rows = asyncio.run(go())
    assert sorted(r.session_id for r in rows) == ["s-False", "s-True"], "each action exactly once"
