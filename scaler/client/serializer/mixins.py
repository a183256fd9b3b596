"""``Serializer``: the interface of a custom serializer (upstream's ``scaler.client.serializer.mixins``)."""

import abc
from typing import Any


class Serializer(metaclass=abc.ABCMeta):
    """Subclass with two static methods. The instance is cloudpickled and shipped to workers,
    so whatever it imports must be importable there too.

    It is applied to the function, to each argument separately and to the result; exceptions
    raised by tasks travel with ``pickle``, not through it.
    """

    @staticmethod
    @abc.abstractmethod
    def serialize(obj: Any) -> bytes:
        raise NotImplementedError

    @staticmethod
    @abc.abstractmethod
    def deserialize(payload: bytes) -> Any:
        raise NotImplementedError
