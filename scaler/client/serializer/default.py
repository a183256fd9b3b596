"""``DefaultSerializer``: cloudpickle at the highest pickle protocol (upstream's
``scaler.client.serializer.default``)."""

import pickle
from typing import Any

import cloudpickle

from .mixins import Serializer


class DefaultSerializer(Serializer):
    @staticmethod
    def serialize(obj: Any) -> bytes:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def deserialize(payload: bytes) -> Any:
        return cloudpickle.loads(payload)
