"""``scaler_top``: alias of ``scaler.top.__main__``.

Also runnable as ``python -m scaler.entry_points.top``.
"""

import sys

from ..top.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
