"""Upstream's ``scaler.worker_manager_adapter`` paths: worker managers run from Python."""
