"""Pluggable serialisation of functions, arguments and results.

``Serializer`` (``.mixins``) is the interface a custom serializer implements;
``DefaultSerializer`` (``.default``) is cloudpickle. Both are importable from here too.
"""

from .default import DefaultSerializer
from .mixins import Serializer

__all__ = ["DefaultSerializer", "Serializer"]
