"""Pluggable serialisation of functions, arguments and results."""

import abc
import pickle
from typing import Any

import cloudpickle


class Serializer(metaclass=abc.ABCMeta):
    """Subclass with two static methods. The instance is cloudpickled and shipped to workers,
    so whatever it imports must be importable there too."""

    @staticmethod
    @abc.abstractmethod
    def serialize(obj: Any) -> bytes:
        raise NotImplementedError

    @staticmethod
    @abc.abstractmethod
    def deserialize(payload: bytes) -> Any:
        raise NotImplementedError


class DefaultSerializer(Serializer):
    @staticmethod
    def serialize(obj: Any) -> bytes:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def deserialize(payload: bytes) -> Any:
        return cloudpickle.loads(payload)
