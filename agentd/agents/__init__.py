"""Agent types. The runtime sees only ``agentd.agents.base``; concrete types register by name."""
