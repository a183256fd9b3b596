"""A program written against OpenGRIS Scaler's module paths, run unchanged by scaler.

It starts a local cluster with an explicit scheduling policy, sends work through a custom
serializer (JSON for plain data, cloudpickle for anything else, such as the functions
themselves) and reads each task's profile.
"""

import json
import math

import cloudpickle

from scaler.client.client import Client
from scaler.client.serializer.mixins import Serializer
from scaler.cluster.combo import SchedulerClusterCombo
from scaler.config.section.scheduler import PolicyConfig


class JSONFirstSerializer(Serializer):
    @staticmethod
    def serialize(obj) -> bytes:
        try:
            return b"J" + json.dumps(obj).encode()
        except TypeError:
            return b"P" + cloudpickle.dumps(obj)

    @staticmethod
    def deserialize(payload: bytes):
        if payload[:1] == b"J":
            return json.loads(payload[1:])
        return cloudpickle.loads(payload[1:])


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def histogram(values, buckets):
    counts = {}
    for value in values:
        bucket = str(min(int(value * buckets), buckets - 1))
        counts[bucket] = counts.get(bucket, 0) + 1
    return counts


def main():
    cluster = SchedulerClusterCombo(
        n_workers=2,
        scaler_policy=PolicyConfig(policy_content="allocate=even_load; scaling=vanilla"),
        logging_level="WARNING",
    )
    try:
        with Client(address=cluster.get_address(), serializer=JSONFirstSerializer(), profiling=True) as client:
            future = client.submit(norm, [3, 4])
            print("norm([3, 4]) =", future.result())
            profile = future.profiling_info()
            print("took %.6f s of CPU, %d bytes of extra memory" % (profile.cpu_time_s, profile.memory_peak))

            print("norms:", client.map(norm, [[1, 0], [0, 2], [3, 4]]))

            values = [i / 100 for i in range(100)]
            counts = client.submit(histogram, values, buckets=4).result()
            assert counts == {"0": 25, "1": 25, "2": 25, "3": 25}, counts
            print("histogram:", counts)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
