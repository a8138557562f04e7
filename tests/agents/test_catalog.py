"""The help catalog (for ``agentctl interrupt --help``), the README tables, and a plug-in's operations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from agentd.agents.base import Agent, AgentServices, GuidanceEffect, GuidanceSpec, Operations
from agentd.agents.catalog import examples_markdown, guidance_help, guidance_help_text, operations_markdown
from agentd.agents.guidance import Operation
from agentd.agents.phrases import Phrase
from agentd.agents.registry import register
from agentd.llm.offline import OfflineLLM

REPO = Path(__file__).resolve().parents[2]


class Bump(Operation):
    """Add this much to the counter at every tick."""

    type: Literal["bump"]
    by: int
    example: ClassVar[dict[str, Any]] = {"type": "bump", "by": 2}


class CounterAgent(Agent):
    """A plug-in type declares its operations exactly as the built-ins do."""

    type_name = "test-counter"
    guidance_spec = GuidanceSpec(
        operations=(Bump,),
        phrases=(Phrase("(bump|step) [by] {by}", "bump"),),
        examples=(("step by 5", ({"type": "bump", "by": 5},)),),
    )

    def apply_guidance(self, guidance: BaseModel, context: dict[str, Any]) -> GuidanceEffect:
        assert isinstance(guidance, Operations)
        steps = [op.by for op in guidance.root if isinstance(op, Bump)]
        return GuidanceEffect(delta={"by": steps[-1]} if steps else {})


register(CounterAgent)


def test_help_lists_every_type_with_one_example_per_operation() -> None:
    catalog = guidance_help()
    assert {"joke", "persona", "test-counter"} <= set(catalog)
    persona = {op.type: op for op in catalog["persona"]}
    assert set(persona) == {"set_tone", "set_cooldown", "speak_now"}
    assert persona["set_tone"].example == {"type": "set_tone", "tone": "noir"}
    assert persona["set_cooldown"].example == {"type": "set_cooldown", "seconds": 0.5}
    assert persona["speak_now"].text_example == "say something now"
    assert [op.type for op in catalog["joke"]] == ["set_subject", "set_style"]
    assert catalog["test-counter"][0].text_example == "step by 5"
    text = guidance_help_text()
    assert '{"type": "set_subject", "subject": "penguins"}' in text and "test-counter:" in text


def test_a_plugin_type_validates_its_own_operations() -> None:
    agent = CounterAgent(
        CounterAgent.parse_config({}), AgentServices(llm=OfflineLLM(), store=None, session_id="s", agent_id="a")
    )
    assert agent.normalize_guidance("please step by 5").model_dump() == [{"type": "bump", "by": 5}]
    assert agent.apply_guidance(agent.normalize_guidance([{"type": "bump", "by": 3}]), {}).delta == {"by": 3}
    try:
        agent.normalize_guidance({"type": "bump", "by": "many"})
    except ValueError as exc:
        assert "invalid test-counter guidance: bump: by: Input should be a valid integer" in str(exc)
        assert '{"type": "bump", "by": 2}' in str(exc)
    else:  # pragma: no cover
        raise AssertionError("accepted")


def test_the_catalog_imports_nothing_heavy() -> None:
    """agentctl may call it for --help: no runtime, store, LanceDB, pyarrow, BAML or config."""
    probe = (
        "import json, sys\n"
        "from agentd.agents.catalog import guidance_help\n"
        "assert 'persona' in guidance_help()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    modules = json.loads(out.stdout)
    heavy = ("lancedb", "pyarrow", "baml_py", "pydantic_settings", "numpy", "asyncio")
    found = [m for m in modules if m.split(".")[0] in heavy]
    found += [m for m in modules if m.startswith(("agentd.runtime", "agentd.store", "agentd.config", "agentd.llm"))]
    found += [m for m in modules if m in ("agentd.agents.base", "agentd.agents.persona", "agentd.agents.registry")]
    assert found == []


def _readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"<!-- {marker}:start -->") + len(f"<!-- {marker}:start -->")
    return text[start : text.index(f"<!-- {marker}:end -->")].strip()


def test_the_readme_tables_are_the_data() -> None:
    """Each rule lives once: the README shows the tables the parser and the tests use."""
    hint = "paste the output of agentd.agents.catalog.{}() between the README markers"
    assert _readme_block("guidance-examples") == examples_markdown(), hint.format("examples_markdown")
    assert _readme_block("guidance-operations") == operations_markdown(), hint.format("operations_markdown")
