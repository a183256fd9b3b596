"""Data attached to task results (upstream's ``scaler.utility.metadata``)."""
