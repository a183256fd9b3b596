"""``scaler_ui ADDRESS --web-host H --web-port P``: the web dashboard under its older name.

Also runnable as ``python -m scaler.entry_points.ui``; reads the ``[webui]`` section.
"""

import sys
from typing import List, Optional

from ..config.commands import WEBUI
from ..gui.__main__ import main as gui_main


def main(argv: Optional[List[str]] = None) -> int:
    return gui_main(argv, WEBUI)


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
