"""``scaler_worker_manager``: alias of ``scaler.worker_manager.__main__``.

Also runnable as ``python -m scaler.entry_points.worker_manager``.
"""

import sys

from ..worker_manager.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
