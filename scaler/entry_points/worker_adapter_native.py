"""``scaler_worker_adapter_native``: alias of ``scaler.worker_manager.__main__``.

Also runnable as ``python -m scaler.entry_points.worker_adapter_native``.
"""

import sys

from ..worker_manager.__main__ import native_adapter_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
