"""``python -m scaler CONFIG.toml``: the all-in-one launcher (``scaler.launcher``)."""

import sys

from .launcher import main

if __name__ == "__main__":
    sys.exit(main())
