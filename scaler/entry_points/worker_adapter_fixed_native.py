"""``scaler_worker_adapter_fixed_native``: alias of ``scaler.worker_manager.__main__``.

Also runnable as ``python -m scaler.entry_points.worker_adapter_fixed_native``.
"""

import sys

from ..worker_manager.__main__ import fixed_native_adapter_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
