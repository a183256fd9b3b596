"""``scaler``: alias of ``scaler.launcher``.

Also runnable as ``python -m scaler.entry_points.scaler``.
"""

import sys

from ..launcher import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
