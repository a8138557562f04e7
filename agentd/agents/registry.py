"""Agent types by name: built-ins plus whatever is installed under the ``agentd.agents`` entry point group.

A user's package declares ``[project.entry-points."agentd.agents"] mytype = "pkg.module:MyAgent"``
(agentd declares its own ``joke`` and ``persona`` the same way) or calls ``register()`` before
the worker starts. Lookup loads entry points lazily, once per process.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from agentd.agents.base import Agent

__all__ = ["ENTRY_POINT_GROUP", "UnknownAgentType", "agent_type", "agent_types", "register"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "agentd.agents"
_registry: dict[str, type[Agent]] = {}
_loaded = False


class UnknownAgentType(LookupError):
    pass


def register(cls: type[Agent], name: str | None = None) -> type[Agent]:
    """Register an agent class under ``name`` (default ``cls.type_name``); usable as a decorator."""
    key = name or cls.type_name
    if not key:
        raise ValueError(f"{cls.__name__} has no type_name")
    _registry[key] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            continue
        try:
            cls = ep.load()
        except Exception:
            log.exception("cannot load agent type %r from %s", ep.name, ep.value)
            continue
        if isinstance(cls, type) and issubclass(cls, Agent):
            _registry[ep.name] = cls
        else:
            log.error("entry point %s = %s is not an Agent subclass", ep.name, ep.value)
    # The built-ins, also when agentd runs from a checkout without installed metadata.
    from agentd.agents.joke import JokeAgent
    from agentd.agents.persona import PersonaAgent

    _registry.setdefault("joke", JokeAgent)
    _registry.setdefault("persona", PersonaAgent)


def agent_type(name: str) -> type[Agent]:
    _load()
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "none"
        raise UnknownAgentType(f"unknown agent type {name!r} (known: {known})") from None


def agent_types() -> list[str]:
    _load()
    return sorted(_registry)
