"""Outage: one warning when a peer goes, one per interval while it stays away, one line when back."""

import logging

from scaler.utility.outage import Outage


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_one_line_per_interval_and_one_when_back(caplog):
    clock = Clock()
    outage = Outage(logging.getLogger("test.outage"), "storage unreachable", interval=30.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for second in range(65):  # a retry every second for 65 s
            clock.now = float(second)
            outage.failed("connection refused")
        assert outage.out
        clock.now = 70.0
        outage.recovered()
        outage.recovered()  # once only
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "storage unreachable (connection refused); retrying"),
        ("WARNING", "storage unreachable for 30s (31 attempts; last: connection refused); still retrying"),
        ("WARNING", "storage unreachable for 60s (61 attempts; last: connection refused); still retrying"),
        ("INFO", "storage unreachable: back after 70.0s (65 attempts)"),
    ]
    assert not outage.out
