"""The cluster's errors: each names the store, the record or the node concerned, with a hint.

Must not: import the store client (the CLI reports these errors without loading it).
"""

from __future__ import annotations

from composenet.errors import ComposenetError


class StoreError(ComposenetError):
    """The store answered with an error, or a setting of the store is wrong."""

    kind = "store"


class StoreConfigError(StoreError):
    """``--store`` / COMPOSENET_STORE* / COMPOSENET_NODE / ... do not make a usable setting."""


class StoreUnavailable(StoreError):
    """No endpoint of the store answered (connection refused, timeout, 503): retryable."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint=hint, retryable=True)


class ClusterConflict(StoreError):
    """What this host asks for is held by another host or record (an address leased to another
    container, a node name registered by another host, a network whose record says otherwise)."""
