"""agentd: a supervisor daemon that runs many long-lived agent sessions on LanceDB."""

__version__ = "0.1.0"
