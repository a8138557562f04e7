"""agentctl: the control-plane CLI of agentd (create, steer, inspect and tail agent sessions).

The command surface, the JSON shapes and the exit codes are a contract (issue 6, DESIGN.md §8):
scripts parse them. ``agentctl.submit`` is the programmatic path every action command takes
(queue a batch through the daemon, or LanceDB directly when none answers; wait; classify), and
``agentctl.reads`` the one every read command takes; the benchmark measures those paths.
"""

__all__: list[str] = []
