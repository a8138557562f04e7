"""Route BAML's logging into agentd's ``logging`` tree, quietly by default, never with API keys.

Why: the BAML runtime (Rust) prints every prompt, raw reply and parsed result to stdout at its
default level (INFO), which would flood a daemon's stdout with user content at ~thousands of
calls per second and bypass agentd's log format and level. Its Python-side event callback
(``on_log_event``) no longer fires in 0.226, so the route is:

* BAML's native logger is switched off, per call (``env={"BAML_LOG": "off"}`` in the client's
  options, since BAML re-reads its env on every call) and process-wide (``set_log_level``);
* the adapter logs through the ``agentd.llm`` logger, whose level is ``[llm] log_level``:
  WARNING (default) = failed calls only; INFO = one line per call and each retry;
  DEBUG = also the prompt and the raw reply, taken from a BAML ``Collector`` that is attached
  only when DEBUG is enabled (it costs a little per call).

Secrets: the API key is never put in a log record: request headers are never logged, and every
message passes through :func:`redact`, which also strips ``user:password@`` from URLs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from agentd.llm.base import LLMConfigError

__all__ = [
    "BAML_NATIVE_ENV",
    "LOGGER_NAME",
    "configure_llm_logging",
    "log_collected_call",
    "logger",
    "redact",
]

LOGGER_NAME = "agentd.llm"
logger = logging.getLogger(LOGGER_NAME)

# Per-call env override that keeps BAML's own stdout logger silent whatever the process env says.
BAML_NATIVE_ENV: dict[str, str | None] = {"BAML_LOG": "off"}

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_LOGGED_CHARS = 4000


def configure_llm_logging(level: str | int) -> None:
    """Silence BAML's native logger and set ``agentd.llm`` to ``level`` (``[llm] log_level``)."""
    from baml_py.logging import set_log_level  # local: the offline path never loads BAML

    set_log_level("OFF")
    try:
        logger.setLevel(level.upper() if isinstance(level, str) else level)
    except ValueError:
        raise LLMConfigError(f"[llm] log_level {level!r} is not a logging level") from None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask every secret (API key) and URL credentials in ``text``; cheap enough for every error."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _USERINFO.sub("***@", text)


def _truncate(text: str) -> str:
    if len(text) <= _MAX_LOGGED_CHARS:
        return text
    return f"{text[:_MAX_LOGGED_CHARS]}... [{len(text) - _MAX_LOGGED_CHARS} more chars]"


def _prompt_of(body: Any) -> str:
    """Readable ``role: content`` lines from an OpenAI/Anthropic-style request body."""
    if not isinstance(body, dict):
        return str(body)
    lines: list[str] = []
    if isinstance(body.get("system"), str):
        lines.append(f"system: {body['system']}")
    for message in body.get("messages", []):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        lines.append(f"{message.get('role', '?')}: {content}")
    return "\n".join(lines)


def log_collected_call(collector: Any, function: str, secrets: Iterable[str]) -> None:
    """Emit the prompt and raw reply of the collector's last call at DEBUG (headers excluded)."""
    try:
        entry = collector.last
        if entry is None:
            return
        call = entry.selected_call or (entry.calls[-1] if entry.calls else None)
        prompt = ""
        if call is not None and call.http_request is not None:
            try:
                prompt = _prompt_of(call.http_request.body.json())
            except (ValueError, json.JSONDecodeError):
                prompt = call.http_request.body.text()
        raw = entry.raw_llm_response or ""
        logger.debug(
            "llm %s prompt:\n%s\nllm %s reply:\n%s",
            function,
            _truncate(redact(prompt, secrets)),
            function,
            _truncate(redact(raw, secrets)),
        )
    except Exception:  # logging must never turn a good call into a failed one
        logger.debug("llm %s: could not read the BAML collector", function, exc_info=True)
