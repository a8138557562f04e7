"""``python -m agentd``: the same as the ``agentd`` command (the supervisor starts children this way)."""

from agentd.cli import main

main()
