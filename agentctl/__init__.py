"""agentctl: the control-plane CLI of agentd (create, steer, inspect and tail agent sessions).

The command surface, the JSON shapes and the exit codes are a contract (issue 6, DESIGN.md §8):
scripts parse them. ``agentctl.client`` is the programmatic path the commands use (enqueue an
action, send a wake hint, wait for the acknowledgement); benchmarks measure that same path.
"""

__all__: list[str] = []
