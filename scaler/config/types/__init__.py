"""Upstream's value types used in configuration (``AddressConfig``, ``WorkerCapabilities``...)."""
