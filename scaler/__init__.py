"""scaler: a distributed task framework built on the Python standard library.

``from scaler import Client, SchedulerClusterCombo``. Names are imported lazily so that
``import scaler`` (done by every process the framework starts) stays cheap.
"""

import logging
from typing import Any

from .version import __version__

__all__ = ["Client", "ScalerFuture", "ScalerExecutor", "progress", "Serializer", "SchedulerClusterCombo",
           "Scheduler", "Cluster", "ObjectReference", "__version__"]

_LAZY = {
    "Client": (".client.client", "Client"),
    "ScalerFuture": (".client.future", "ScalerFuture"),
    "ScalerExecutor": (".client.executor", "ScalerExecutor"),
    "progress": (".client.progress", "progress"),
    "Serializer": (".client.serializer", "Serializer"),
    "ObjectReference": (".client.object_reference", "ObjectReference"),
    "SchedulerClusterCombo": (".cluster", "SchedulerClusterCombo"),
    "Cluster": (".cluster", "Cluster"),
    "Scheduler": (".scheduler", "Scheduler"),
}

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError("module %r has no attribute %r" % (__name__, name)) from None
    import importlib
    value = getattr(importlib.import_module(module_name, __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY))
