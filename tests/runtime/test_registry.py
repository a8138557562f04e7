"""Agent types are found by name, including a user's own type declared as an entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentd.agents import registry
from agentd.agents.joke import JokeAgent
from agentd.agents.persona import PersonaAgent

PLUGIN = """
from agentd.agents.base import Agent, StepOutcome, Tick


class EchoAgent(Agent):
    type_name = "echo"

    async def do_tick(self, tick: Tick) -> StepOutcome:
        return StepOutcome(text=f"echo {tick.iteration}")
"""


def test_builtins_are_registered_by_name() -> None:
    assert registry.agent_type("joke") is JokeAgent
    assert registry.agent_type("persona") is PersonaAgent
    with pytest.raises(registry.UnknownAgentType, match=r"unknown agent type 'nope' \(known: .*joke.*persona"):
        registry.agent_type("nope")


def test_a_user_agent_type_from_an_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution declaring [agentd.agents] echo = ... is picked up."""
    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[agentd.agents]\necho = echo_plugin:EchoAgent\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_registry", {})
    cls = registry.agent_type("echo")
    assert cls.__name__ == "EchoAgent" and cls.__module__ == "echo_plugin"
    assert "echo" in registry.agent_types() and "joke" in registry.agent_types()
    sys.modules.pop("echo_plugin", None)
