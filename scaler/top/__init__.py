"""``scaler_top``: a scheduler's status in the terminal, in the spirit of ``htop``.

``python -m scaler.top MONITOR_ADDRESS`` (or ``scaler_top``, or ``-c FILE`` with a ``[top]``
section). The screen is built by :func:`.screen.render` from the latest snapshot, a pure
function the tests call directly; :mod:`.app` runs it under ``curses``.
"""
