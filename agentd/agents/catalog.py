"""The guidance each agent type accepts, for help texts and the README, without loading the runtime.

Why a separate module: ``agentctl interrupt --help`` must list every type's operations, and the
CLI never imports the runtime, the store or BAML (tests/agentctl/test_ctl_imports.py). The
built-in types' specs live in agentd.agents.operations (pydantic and stdlib only); a plug-in
type's spec is its class attribute ``guidance_spec``, read by loading its entry point (the
plug-in's own imports are its business); a type registered in-process with
``agentd.agents.registry.register`` is listed too when the registry is already loaded.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from agentd.agents.guidance import GuidanceSpec
from agentd.agents.operations import BUILTIN_GUIDANCE

__all__ = [
    "OperationHelp",
    "examples_markdown",
    "guidance_help",
    "guidance_help_text",
    "guidance_specs",
    "operations_markdown",
]

log = logging.getLogger(__name__)

_GROUP = "agentd.agents"
_BUILTIN_TARGETS = {"agentd.agents.joke:JokeAgent", "agentd.agents.persona:PersonaAgent"}


@dataclass(frozen=True, slots=True)
class OperationHelp:
    """One operation of one agent type: its name, what it does, and how to write it."""

    type: str
    summary: str
    example: dict[str, Any]
    # A sentence the free-text parser reads as this operation alone (None if there is none).
    text_example: str | None


def guidance_specs() -> dict[str, GuidanceSpec]:
    """Every known agent type's guidance spec, by type name (types that take none are left out)."""
    specs: dict[str, GuidanceSpec] = dict(BUILTIN_GUIDANCE)
    for ep in entry_points(group=_GROUP):
        if ep.value in _BUILTIN_TARGETS or ep.name in specs:
            continue
        try:
            spec = getattr(ep.load(), "guidance_spec", None)
        except Exception:
            log.warning("cannot load agent type %r from %s", ep.name, ep.value, exc_info=True)
            continue
        if isinstance(spec, GuidanceSpec):
            specs[ep.name] = spec
    registry = sys.modules.get("agentd.agents.registry")
    if registry is not None:  # types registered in this process (never imported here: it is heavy)
        for name, cls in getattr(registry, "_registry", {}).items():
            spec = getattr(cls, "guidance_spec", None)
            if name not in specs and isinstance(spec, GuidanceSpec):
                specs[name] = spec
    return dict(sorted(specs.items()))


def guidance_help() -> dict[str, list[OperationHelp]]:
    """Per agent type, its guidance operations with one example each (for ``interrupt --help``)."""
    return {
        name: [
            OperationHelp(op.op_name(), op.summary(), dict(op.example), spec.text_example(op.op_name()))
            for op in spec.operations
        ]
        for name, spec in guidance_specs().items()
    }


def guidance_help_text() -> str:
    """``guidance_help()`` as plain text lines, one block per type (what the rejections show)."""
    blocks = [f"{name}:\n" + "\n".join(spec.help_lines()) for name, spec in guidance_specs().items()]
    return "\n".join(blocks)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def examples_markdown() -> str:
    """The README's table of free-text examples, from the specs' example tables (one source)."""
    rows = ["| Type | You write | It means |", "| --- | --- | --- |"]
    for name, spec in BUILTIN_GUIDANCE.items():
        for text, ops in spec.examples:
            meaning = json.dumps(list(ops)) if len(ops) > 1 else json.dumps(ops[0])
            rows.append(f"| {name} | {_cell(text)} | `{_cell(meaning)}` |")
    return "\n".join(rows)


def operations_markdown() -> str:
    """The README's table of operations per built-in type (one source with the help text)."""
    rows = ["| Type | Operation | Example | What it does |", "| --- | --- | --- | --- |"]
    for name, spec in BUILTIN_GUIDANCE.items():
        for op in spec.operations:
            rows.append(f"| {name} | `{op.op_name()}` | `{_cell(json.dumps(op.example))}` | {_cell(op.summary())} |")
    return "\n".join(rows)
