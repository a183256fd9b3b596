"""``scaler_cluster``: alias of ``scaler.cluster.__main__``.

Also runnable as ``python -m scaler.entry_points.cluster``.
"""

import sys

from ..cluster.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
