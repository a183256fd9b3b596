"""Log a peer that stays away without a line per retry: one warning when it goes, then one
every ``interval`` seconds while it stays away (with how long and how many tries), and
one line when it is back."""

import logging
import time
from typing import Callable, Optional


class Outage:
    def __init__(self, logger: logging.Logger, what: str, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self.clock = clock
        self.since: Optional[float] = None  # None: not out
        self.attempts = 0
        self._last_logged = 0.0

    @property
    def out(self) -> bool:
        return self.since is not None

    def failed(self, reason: str) -> None:
        now = self.clock()
        if self.since is None:
            self.since, self.attempts, self._last_logged = now, 1, now
            self.logger.warning("%s (%s); retrying", self.what, reason)
            return
        self.attempts += 1
        if now - self._last_logged >= self.interval:
            self._last_logged = now
            self.logger.warning("%s for %.0fs (%d attempts; last: %s); still retrying", self.what, now - self.since,
                                self.attempts, reason)

    def recovered(self) -> None:
        if self.since is not None:
            self.logger.info("%s: back after %.1fs (%d attempts)", self.what, self.clock() - self.since, self.attempts)
            self.since = None
            self.attempts = 0
