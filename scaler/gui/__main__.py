"""``scaler_gui MONITOR_ADDRESS`` / ``python -m scaler.gui MONITOR_ADDRESS``: the web dashboard."""

import socket
import sys
from typing import List, Optional

from ..config.commands import GUI, Command
from ..config.loader import Loaded
from ..utility.process import run_main


def main(argv: Optional[List[str]] = None, command: Command = GUI) -> int:
    return run_main(command, argv, "gui", _run)


def _run(loaded: Loaded) -> int:
    from .server import listen_http, run_dashboard

    config = loaded.config
    if loaded.listen_fd >= 0:
        sock = socket.socket(fileno=loaded.listen_fd)
    else:
        try:
            sock = listen_http(config.gui_address)
        except OSError as exc:
            print("scaler_gui: error: cannot listen on %s: %s" % (config.gui_address, exc.strerror or exc),
                  file=sys.stderr)
            return 1
    run_dashboard(config, sock, loaded.lifeline_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
