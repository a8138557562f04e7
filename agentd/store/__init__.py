"""LanceDB storage: table schemas, row models, the batching writer and maintenance.

The store imports nothing above it (runtime, supervisor, CLI depend on it, never the reverse).
"""

from agentd.store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
