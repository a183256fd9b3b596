"""``DefaultSerializer``: cloudpickle at the highest pickle protocol (upstream's
``scaler.client.serializer.default``)."""

import pickle
from typing import Any

from .mixins import Serializer


class DefaultSerializer(Serializer):
    @staticmethod
    def serialize(obj: Any) -> bytes:
        import cloudpickle  # imported by the first function serialised, not by ``import scaler``
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def deserialize(payload: bytes) -> Any:
        # cloudpickle.loads is pickle.loads; what cloudpickle rebuilds imports it when unpickled
        return pickle.loads(payload)
