"""Console-script entry points under the module paths upstream uses.

``python -m scaler.entry_points.scaler CONFIG.toml`` and the other modules here are thin
aliases of the commands' real modules (``scaler.scheduler.__main__`` and so on).
"""
