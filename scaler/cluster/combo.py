"""``SchedulerClusterCombo`` at upstream's module path (defined in ``scaler.cluster``)."""

from . import SchedulerClusterCombo

__all__ = ["SchedulerClusterCombo"]
