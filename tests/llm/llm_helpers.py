"""Helpers for the LLM tests: a config pointed at a loopback server, and a fast-backoff adapter."""

from __future__ import annotations

from typing import Any

from agentd.config import LLMConfig
from agentd.llm.baml_adapter import BamlLLM
from agentd.llm.loopback import LoopbackLLMServer

KEY_ENV = "LOOPBACK_LLM_API_KEY"
SECRET = "sk-test-SECRET-do-not-log-4f2a9c"
MODEL = "loopback-model-7b"


def loopback_config(srv: LoopbackLLMServer, **overrides: Any) -> LLMConfig:
    values: dict[str, Any] = {
        "provider": "openai-generic",
        "model": MODEL,
        "base_url": srv.base_url,
        "api_key_env": KEY_ENV,
        "timeout": 5.0,
        "retries": 2,
        "concurrency": 8,
    }
    values.update(overrides)
    return LLMConfig(**values)


def adapter(srv: LoopbackLLMServer, **overrides: Any) -> BamlLLM:
    """A BamlLLM with a 10 ms backoff so retry tests stay fast."""
    return BamlLLM(loopback_config(srv, **overrides), retry_backoff=0.01, retry_backoff_max=0.05)
