"""``scaler_gui``: alias of ``scaler.gui.__main__``.

Also runnable as ``python -m scaler.entry_points.gui``.
"""

import sys

from ..gui.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
