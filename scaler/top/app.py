"""The ``curses`` side of ``scaler_top``: keys, refreshes, resizes; the layout is in :mod:`.screen`."""

import curses
from typing import Any

from ..monitor import Follower
from .screen import View, next_view, render


def run(config: Any) -> int:
    follower = Follower(config.monitor_address, config.auth_key, config.timeout, tls_ca=config.tls_ca).start()
    try:
        curses.wrapper(_loop, config, follower)
    except KeyboardInterrupt:
        pass
    finally:
        follower.stop()
    return 0


def _loop(stdscr: Any, config: Any, follower: Follower) -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    stdscr.timeout(max(50, int(config.interval * 1000)))
    view = View()
    while True:
        _draw(stdscr, follower, view, config.monitor_address)
        key = stdscr.getch()
        if key == curses.KEY_RESIZE:
            if hasattr(curses, "update_lines_cols"):
                curses.update_lines_cols()
            continue
        if key < 0 or key > 255:
            continue
        char = chr(key)
        if char in ("q", "Q"):
            return
        view = next_view(view, char)


def _draw(stdscr: Any, follower: Follower, view: View, address: str) -> None:
    height, width = stdscr.getmaxyx()
    connection = "connected" if follower.connected else follower.problem
    lines = render(follower.latest, width, height, view, connection, address)
    stdscr.erase()
    for row, line in enumerate(lines):
        attr = 0
        if line.startswith("NAME") or (row == 0 and not follower.connected):
            attr = curses.A_REVERSE
        try:
            stdscr.addnstr(row, 0, line, max(0, width - 1), attr)
        except curses.error:  # the terminal shrank under us: the next refresh redraws
            pass
    stdscr.refresh()
