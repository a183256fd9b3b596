"""Worker managers that start workers on this machine."""
