"""``make_llm``: the one place that turns ``[llm]`` config into an ``LLMClient``.

Why a factory: agents and the runtime depend on the ``LLMClient`` protocol only, and the offline
path must not import BAML at all (the runtime benchmark hosts 10k sessions per process on it, and
a user with no model configured should not pay for loading the BAML runtime).
"""

from __future__ import annotations

from agentd.config import LLMConfig
from agentd.llm.base import LLMClient
from agentd.llm.offline import OfflineLLM

__all__ = ["OFFLINE_PROVIDER", "make_llm"]

OFFLINE_PROVIDER = "offline"


def make_llm(cfg: LLMConfig) -> LLMClient:
    """The configured client: ``offline`` is the built-in generator, anything else goes to BAML.

    Any other provider name is passed to BAML as is (openai-generic, openai, anthropic, ollama,
    google-ai, vertex-ai, azure-openai, aws-bedrock, ...). An unknown name, bad options or a
    missing API-key env var raise ``LLMConfigError`` (an ``LLMError`` and a ``ConfigError``).
    """
    if cfg.provider == OFFLINE_PROVIDER:
        return OfflineLLM(seed=cfg.seed)
    from agentd.llm.baml_adapter import BamlLLM  # local: loads the BAML runtime
    from agentd.llm.baml_logging import configure_llm_logging

    configure_llm_logging(cfg.log_level)
    return BamlLLM(cfg)
