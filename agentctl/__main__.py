"""``python -m agentctl``: the same CLI as the ``agentctl`` console script."""

from agentctl.cli import main

main()
