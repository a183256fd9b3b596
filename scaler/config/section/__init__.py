"""Upstream's per-component configuration classes, faces over ``scaler.config.components``."""
