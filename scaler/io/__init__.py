"""Sockets, the event loop and framed connections: the only place that does network I/O."""
