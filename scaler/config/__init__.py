"""Component configuration: one dataclass per component."""
