"""Why a worker manager refuses a request: shared by the manager and the front ends that report it.

The manager raises ``GroupError(Refusal.X, message)``; the scheduler link sends the message,
the webhook (``webhook.py``) maps the kind to an HTTP status. Neither imports the other's
module for it.
"""

import enum


class Refusal(enum.Enum):
    BAD_REQUEST = "bad_request"        # the request lacks what it needs (a worker group id)
    UNKNOWN_GROUP = "unknown_group"    # no such worker group
    FIXED_POOL = "fixed_pool"          # a fixed pool neither starts nor stops groups on request
    AT_CAPACITY = "at_capacity"        # as many groups as the manager may run
    PRELOAD_FAILED = "preload_failed"  # its workers fail their preload: more would fail too
    STOPPING = "stopping"              # the manager is shutting down
    NO_ANSWER = "no_answer"            # the manager's loop did not answer in time


class GroupError(Exception):
    """A start or shutdown request that cannot be honoured, and why (``kind``)."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind
