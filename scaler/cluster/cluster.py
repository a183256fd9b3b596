"""``Cluster`` at upstream's module path (defined in ``scaler.cluster``)."""

from . import Cluster

__all__ = ["Cluster"]
