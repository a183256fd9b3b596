"""``scaler_object_storage_server``: alias of ``scaler.object_storage.__main__``.

Also runnable as ``python -m scaler.entry_points.object_storage``.
"""

import sys

from ..object_storage.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
