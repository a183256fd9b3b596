"""``scaler_scheduler``: alias of ``scaler.scheduler.__main__``.

Also runnable as ``python -m scaler.entry_points.scheduler``.
"""

import sys

from ..scheduler.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
