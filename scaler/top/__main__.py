"""``scaler_top MONITOR_ADDRESS`` / ``python -m scaler.top MONITOR_ADDRESS``."""

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    from ..config.commands import TOP
    from ..config.loader import parse_or_exit
    from ..utility.process import auth_key_from_env
    from .app import run

    config = parse_or_exit(TOP, argv).config
    if not config.auth_key:
        config.auth_key = auth_key_from_env()
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
