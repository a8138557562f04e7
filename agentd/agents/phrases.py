"""Free-text guidance read as people write it: phrase rules, matched anywhere in a sentence.

Why phrase rules and not one regex per agent type: users write "can you switch to penguins?" or
"be more noir and wait 2 seconds between replies", not a command syntax. A rule is a short
pattern such as ``"(switch|change) [over] to {subject}"``; the parser finds it anywhere in a
clause, ignoring case and punctuation, and turns its slots into one operation. Each agent type
lists its rules in priority order (``agentd.agents.operations``), next to a table of example
sentences that the tests run and the README shows, so a rule is written once.

Pattern language (words are matched whole, case-insensitively):
- ``word`` a literal word; ``(a|b c)`` one of the alternatives (each may be several words);
- ``[a|b c]`` the same, optional;
- ``{name}`` a text slot: one or more words, the operation's field ``name``. A text slot that
  ends the pattern runs to the end of the clause, minus trailing courtesy words ("please");
- ``{name:duration}`` a number of seconds, with an optional unit (``ms``, ``s``, ``min``...).

Sentences are split into clauses at commas, semicolons, "and" and "then". A clause that matches
no rule is not an error when it can belong to a neighbour: before the first match it is a lead-in
("hey, be noir"), after a match that ends in a text slot it continues the value ("about cats and
dogs"). Slot values are cut from the original text, so their case is kept.

Pure stdlib: ``agentctl`` may import this module to print help without loading the runtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["NotUnderstood", "Phrase", "clean", "clip", "parse_text"]

# Courtesy words that may trail a text slot without being part of its value.
_TRAILING = r"(?:(?:please|pls|thanks|thank\s+you|now|ok|okay)\s+)*$"
_UNITS: dict[str, float] = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
}
_UNIT_RE = "|".join(sorted(_UNITS, key=len, reverse=True))
_TOKEN = re.compile(r"\[[^\]]*\]|\([^)]*\)|\{[^}]*\}|[^\s\[\](){}]+")
_SEPARATOR = re.compile(r"[,;]|\b(?:and\s+then|and|then)\b", re.I)
# Punctuation kept only between two letters or digits: "topic-3", "0.5", "don't", "node.js".
_INNER = frozenset("-'.+#&/@_")


class NotUnderstood(ValueError):
    """No rule reads this text (or this part of it); ``part`` is the piece that failed."""

    def __init__(self, text: str, part: str) -> None:
        self.text = text
        self.part = part
        whole = f"guidance {clip(text)!r}"
        where = whole if part.strip() == text.strip() else f"{clip(part.strip())!r} in {whole}"
        super().__init__(f"cannot understand {where}")


def clip(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for an error message (the input is stored in full)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def clean(text: str) -> str:
    """``text`` with punctuation replaced by spaces, same length (slot spans map back to it)."""
    out = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        inner = ch in _INNER and 0 < i < last and text[i - 1].isalnum() and text[i + 1].isalnum()
        if ch.isalnum() or ch.isspace() or inner:
            out.append(ch)
        else:
            out.append(" ")
    return "".join(out)


def _alternatives(body: str) -> str:
    options = [r"\s+".join(re.escape(w) for w in alt.split()) for alt in body.split("|")]
    return "(?:" + "|".join(o for o in options if o) + ")"


@dataclass(frozen=True)
class Phrase:
    """One rule: ``pattern`` read as the operation ``{"type": op, **fixed, **slots}``."""

    pattern: str
    op: str
    fixed: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def slots(self) -> dict[str, str]:
        """Slot name -> kind (``text`` or ``duration``), in pattern order."""
        found: dict[str, str] = {}
        for token in _TOKEN.findall(self.pattern):
            if token.startswith("{"):
                name, _, kind = token[1:-1].partition(":")
                found[name] = kind or "text"
        return found

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled pattern over ``clean(clause) + " "``: every element eats its trailing space."""
        parts = [r"(?<!\S)"]
        tokens = _TOKEN.findall(self.pattern)
        for index, token in enumerate(tokens):
            if token.startswith("["):
                parts.append(f"(?:{_alternatives(token[1:-1])}\\s+)?")
            elif token.startswith("("):
                parts.append(f"{_alternatives(token[1:-1])}\\s+")
            elif token.startswith("{"):
                name, _, kind = token[1:-1].partition(":")
                if kind == "duration":
                    parts.append(rf"(?P<{name}>\d+(?:\.\d+)?|\.\d+)\s*(?P<{name}__unit>{_UNIT_RE})?\s+")
                elif index == len(tokens) - 1:
                    parts.append(rf"(?P<{name}>\S.*?)\s+{_TRAILING}")
                else:
                    parts.append(rf"(?P<{name}>\S.*?)\s+")
            else:
                parts.append(f"{re.escape(token)}\\s+")
        return re.compile("".join(parts), re.I | re.S)

    @property
    def ends_in_text(self) -> bool:
        tokens = _TOKEN.findall(self.pattern)
        return bool(tokens) and tokens[-1].startswith("{") and ":" not in tokens[-1]

    def read(self, clause: str) -> dict[str, Any] | None:
        """The operation this rule reads in ``clause`` (original text), or None."""
        match = self.regex.search(clean(clause) + " ")
        if match is None:
            return None
        op: dict[str, Any] = {"type": self.op, **self.fixed}
        for name, kind in self.slots.items():
            if kind == "duration":
                unit = match.group(f"{name}__unit")
                op[name] = float(match.group(name)) * _UNITS[unit.lower() if unit else "s"]
            else:
                start, end = match.span(name)
                op[name] = _trim(clause[start:end])
        return op


def _trim(value: str) -> str:
    """A slot value without the punctuation and quotes that surrounded it in the sentence."""
    return value.strip().strip("\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb").strip()


def _clauses(text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` between separators, in order (empty ones dropped)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SEPARATOR.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _first(rules: tuple[Phrase, ...], clause: str) -> tuple[Phrase, dict[str, Any]] | None:
    for rule in rules:
        op = rule.read(clause)
        if op is not None:
            return rule, op
    return None


def parse_text(rules: tuple[Phrase, ...], text: str) -> list[dict[str, Any]]:
    """The operations ``text`` asks for, in order; raises ``NotUnderstood``.

    Grouping (see the module docstring): a clause no rule reads joins the group before it when
    that group's rule ends in a text slot, or the group after it when no group started yet.
    Groups are spans of the original text, so a merged value keeps its words and separators;
    each group is read once at the end (linear in the number of clauses, whatever the input).
    """
    groups: list[list[int]] = []  # [start, end] of each group
    absorbs = False  # the last group's rule ends in a text slot
    lead: int | None = None  # start of the clauses seen before the first match
    for start, end in _clauses(text):
        found = _first(rules, text[start:end])
        if found is not None:
            groups.append([start if lead is None else lead, end])
            absorbs, lead = found[0].ends_in_text, None
        elif groups and absorbs:
            groups[-1][1] = end
        elif groups:
            raise NotUnderstood(text, text[start:end])
        elif lead is None:
            lead = start
    if lead is not None or not groups:
        raise NotUnderstood(text, text if lead is None else text[lead:])
    ops: list[dict[str, Any]] = []
    for start, end in groups:
        found = _first(rules, text[start:end])
        if found is None:  # pragma: no cover - a text slot absorbs what follows, a lead-in is skipped
            raise NotUnderstood(text, text[start:end])
        ops.append(found[1])
    return ops
