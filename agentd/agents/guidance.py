"""Typed guidance: operations an agent type declares, and the one way every input becomes them.

Why one normalizer for every form: users copy guidance from the specification (``{"type":
"set_tone", "tone": "noir"}``), from older scripts (``{"subject": "cats"}``) or write a sentence;
all of them must end as the same typed operation list, validated by the same pydantic models,
rejected with the same teaching message. An agent type declares a ``GuidanceSpec``: its
operation models (a discriminated union on ``type``), the legacy keys it still accepts, and its
phrase rules with their example table (agentd.agents.phrases). ``Operations``, the normalized
form, is what the runtime applies and stores with the guidance step.

Inputs accepted by ``GuidanceSpec.normalize``:
- one operation ``{"type": ..., fields}``;
- a JSON array of operations: one guidance, validated as a whole (one bad operation rejects
  all, named by its position counted from 1), applied together in one step;
- a legacy object without ``type`` whose keys are in ``legacy`` (``{"subject": "cats"}``);
- free text, read by the phrase rules (``NotUnderstood`` when none reads it, so the caller may
  ask an LLM; see ``Agent.understand_guidance``).

Imports only pydantic and the stdlib, so ``agentctl`` can print the operations in its help.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, ClassVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel, SerializeAsAny, TypeAdapter, ValidationError

from agentd.agents.phrases import NotUnderstood, Phrase, clip, parse_text

__all__ = [
    "MAX_OPERATIONS",
    "MAX_TEXT",
    "GuidanceError",
    "GuidanceNotUnderstood",
    "GuidanceSpec",
    "Operation",
    "Operations",
]

# One guidance holds at most this many operations, and free text at most this many characters:
# bounded work and storage per action, whatever a client sends.
MAX_OPERATIONS = 32
MAX_TEXT = 1000


class GuidanceError(ValueError):
    """Guidance the agent type cannot accept; the message tells the user what would work."""


class GuidanceNotUnderstood(GuidanceError):
    """Free text no phrase rule reads; an LLM may still read it (``text`` is the whole input).

    ``problem`` is the first line of the message (what was not understood), ``teaching`` the
    list of accepted operations that follows it, so a caller can put a reason between them.
    """

    def __init__(self, problem: str, teaching: str, text: str) -> None:
        super().__init__(f"{problem}{teaching}")
        self.problem = problem
        self.teaching = teaching
        self.text = text


class Operation(BaseModel):
    """Base of every guidance operation. Subclasses set ``type: Literal["name"]`` and ``example``.

    The first line of the docstring is the summary shown in help and in rejections. ``type`` has
    no default on purpose: the stored form (dumped with ``exclude_defaults``) always names it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    # One valid instance, as a user would write it; shown in help, errors and the README.
    example: ClassVar[dict[str, Any]] = {}

    @classmethod
    def op_name(cls) -> str:
        """The ``type`` value, from the ``Literal`` annotation every operation must declare."""
        args = get_args(cls.model_fields["type"].annotation)
        if len(args) != 1 or not isinstance(args[0], str):
            raise TypeError(f"{cls.__name__}.type must be annotated Literal['<operation name>']")
        return args[0]

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or cls.op_name()).strip().splitlines()[0]


class Operations(RootModel[list[SerializeAsAny[Operation]]]):
    """The normalized guidance: typed operations, applied in order in one step."""


def _problems(exc: ValidationError, *, tagged: bool, rename: Mapping[str, str] | None = None) -> str:
    """'field: problem; other: problem', without the union tag pydantic puts first in ``loc``."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if tagged and loc:
            loc = loc[1:]  # the discriminator value ("set_tone") that pydantic prefixes
        name = ".".join(loc)
        name = (rename or {}).get(name, name)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(f"{name}: {msg}" if name else str(msg))
    return "; ".join(out)


@dataclass(frozen=True)
class GuidanceSpec:
    """What guidance an agent type takes. Declared once, as ``Agent.guidance_spec``."""

    operations: tuple[type[Operation], ...]
    # Phrase rules in priority order, and example sentences -> expected operations (the tests
    # run every example; the README shows them).
    phrases: tuple[Phrase, ...] = ()
    examples: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()
    # Legacy object keys (no ``type``): key -> (operation, field). Field None marks a flag: true
    # adds the operation, false adds nothing (``{"speak_now": true}``).
    legacy: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Fail at import, not at the first guidance: names unique, examples valid, legacy keys known."""
        names = [op.op_name() for op in self.operations]
        if not names or len(set(names)) != len(names):
            raise TypeError(f"guidance operations need distinct type names, got {names}")
        for op in self.operations:
            if op.example:
                op.model_validate(op.example)
        for key, (name, _field) in self.legacy.items():
            if name not in names:
                raise TypeError(f"legacy key {key!r} maps to unknown operation {name!r}")

    @cached_property
    def _adapter(self) -> TypeAdapter[Any]:
        if len(self.operations) == 1:  # a union of one is the model itself (no tag in errors)
            return TypeAdapter(self.operations[0])
        union: Any = Annotated[Union[self.operations], Field(discriminator="type")]  # noqa: UP007
        return TypeAdapter(union)

    @property
    def _tagged(self) -> bool:
        return len(self.operations) > 1

    @cached_property
    def by_name(self) -> dict[str, type[Operation]]:
        return {op.op_name(): op for op in self.operations}

    @cached_property
    def field_kinds(self) -> dict[str, str]:
        """Every operation field but ``type`` -> its JSON kind (string, integer, number, boolean).

        What an LLM interpreting free text must be able to fill in (agentd.llm.baml_adapter adds
        the fields the built-in types do not have to its output type at run time).
        """
        kinds: dict[str, str] = {}
        for op in self.operations:
            for name, schema in op.model_json_schema().get("properties", {}).items():
                if name != "type":
                    kinds.setdefault(name, str(schema.get("type", "string")))
        return kinds

    def text_example(self, op_name: str) -> str | None:
        """The first example sentence that reads as this one operation alone, if any."""
        for text, ops in self.examples:
            if len(ops) == 1 and ops[0].get("type") == op_name:
                return text
        return None

    def help_lines(self) -> list[str]:
        """One line per operation: what it does, its JSON example, and a sentence that reads as it."""
        lines = []
        for op in self.operations:
            text = self.text_example(op.op_name())
            said = f" or {json.dumps(text)}" if text else ""
            lines.append(f"  {op.op_name()}: {op.summary()} e.g. {json.dumps(op.example)}{said}")
        return lines

    def teach(self, type_name: str) -> str:
        """The accepted operations of ``type_name`` with one example each, for a rejection."""
        forms = "one operation, or a JSON array of them applied together"
        if self.phrases:
            forms += ", or free text"
        return f"\n{type_name} guidance takes {forms}:\n" + "\n".join(self.help_lines())

    def reject(self, type_name: str, problem: str) -> GuidanceError:
        return GuidanceError(f"invalid {type_name} guidance: {problem}{self.teach(type_name)}")

    # -- normalization -----------------------------------------------------------------------

    def normalize(self, type_name: str, raw: Any) -> Operations:
        """``raw`` in any accepted form as validated ``Operations``; raises ``GuidanceError``."""
        if isinstance(raw, str):
            return self.parse_text(type_name, raw)
        if isinstance(raw, list):
            return self.validate(type_name, raw)
        if isinstance(raw, dict):
            if "type" in raw or not self.legacy:
                return self.validate(type_name, [raw], single=True)
            return self._legacy(type_name, raw)
        raise self.reject(type_name, f"expected an object, an array of operations or text, got {type(raw).__name__}")

    def parse_text(self, type_name: str, text: str) -> Operations:
        if len(text) > MAX_TEXT:
            raise self.reject(type_name, f"text: too long ({len(text)} characters, at most {MAX_TEXT})")
        if not self.phrases:  # still GuidanceNotUnderstood: a configured LLM may read it
            problem = f"cannot understand guidance {clip(text)!r}: {type_name} sessions read no free text by themselves"
            raise GuidanceNotUnderstood(problem, self.teach(type_name), text)
        try:
            ops = parse_text(self.phrases, text)
        except NotUnderstood as exc:
            raise GuidanceNotUnderstood(f"{exc} for a {type_name} session", self.teach(type_name), text) from None
        return self.validate(type_name, ops, source=f"guidance {clip(text)!r} reads as")

    def validate(self, type_name: str, raw_ops: list[Any], *, single: bool = False, source: str = "") -> Operations:
        """Every operation validated; the first bad one rejects all, named by its position."""
        if not raw_ops:
            raise self.reject(type_name, "the array is empty; give at least one operation")
        if len(raw_ops) > MAX_OPERATIONS:
            raise self.reject(type_name, f"too many operations ({len(raw_ops)}, at most {MAX_OPERATIONS})")
        ops: list[Operation] = []
        for index, raw in enumerate(raw_ops, 1):
            where = "" if single else f"operation {index}"
            if not isinstance(raw, dict):
                raise self.reject(type_name, f"{where or 'guidance'}: expected an object, got {type(raw).__name__}")
            name = raw.get("type")
            if not isinstance(name, str) or name not in self.by_name:
                problem = "missing 'type'" if name is None else f"type: unknown operation {name!r}"
                raise self.reject(type_name, f"{where + ': ' if where else ''}{problem}")
            try:
                ops.append(self._adapter.validate_python(raw))
            except ValidationError as exc:
                label = f"{where} ({name})" if where else str(name)
                prefix = f"{source} {clip(json.dumps(raw_ops), 200)}: " if source else ""
                raise self.reject(type_name, f"{prefix}{label}: {_problems(exc, tagged=self._tagged)}") from None
        return Operations(ops)

    def _legacy(self, type_name: str, raw: dict[str, Any]) -> Operations:
        """A legacy object as operations; problems name the user's keys, not the operations'."""
        ops: list[Operation] = []
        for key, value in raw.items():
            if key not in self.legacy:
                known = ", ".join(sorted(self.legacy))
                raise self.reject(type_name, f"{key}: unknown field (fields without 'type': {known})")
            op_name, field_name = self.legacy[key]
            if field_name is None:
                if not isinstance(value, bool):
                    raise self.reject(type_name, f"{key}: Input should be a valid boolean")
                if not value:
                    continue
                data: dict[str, Any] = {"type": op_name}
            else:
                data = {"type": op_name, field_name: value}
            try:
                ops.append(self._adapter.validate_python(data))
            except ValidationError as exc:
                raise self.reject(
                    type_name, _problems(exc, tagged=self._tagged, rename={field_name or "": key})
                ) from None
        if not ops:
            raise self.reject(type_name, f"no operation given (fields: {', '.join(sorted(self.legacy))})")
        return Operations(ops)
