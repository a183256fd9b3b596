"""End to end: payload sizes around the framework's thresholds, each on a private combo.

The interesting sizes are where the code changes path: arguments and results near the
64 KiB inline limit (and the 64 KiB zero-copy threshold of the codec, above which a frame
is written as several buffers), and frames near the 1 MiB "big frame" threshold of the
connection reader. A wedged scheduler must not take the other tests with it, so every
test here has its own combo.
"""

import sys

import pytest

from scaler import Client

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")

TIMEOUT = 10  # seconds: every task here takes milliseconds
KIB = 1024
MIB = 1024 * 1024

# Regression: frames of 64 KiB or more are written as separate buffers, and one ending in
# an empty field (TaskSubmit.capabilities, TaskResult.detail) used to leave a zero-length
# buffer that made Connection.flush spin forever at 100 % CPU.


def length(data):
    return len(data)


def lengths(*args, **kwargs):
    return [len(a) for a in args] + sorted((k, len(v)) for k, v in kwargs.items())


def make_bytes(n):
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


@pytest.fixture
def private_combo(make_combo):
    """One worker, shut down (gracefully, killed after a grace period if wedged) at the end."""
    return make_combo(n_workers=1)


def assert_cluster_serves(combo):
    """A brand-new client gets a task through: the scheduler and the worker are not wedged."""
    with Client(combo.get_address(), timeout_seconds=TIMEOUT) as fresh:
        assert fresh.submit(length, b"ok").result(timeout=TIMEOUT) == 2


def test_arguments_around_the_inline_limit(private_combo):
    with Client(private_combo.get_address(), timeout_seconds=TIMEOUT) as client:
        for n in range(64 * KIB - 200, 64 * KIB + 41, 8):
            data = make_bytes(n)
            assert client.submit(length, data).result(timeout=TIMEOUT) == n, n
    assert_cluster_serves(private_combo)


def test_results_around_the_inline_limit(private_combo):
    with Client(private_combo.get_address(), timeout_seconds=TIMEOUT) as client:
        for n in range(64 * KIB - 200, 64 * KIB + 41, 8):
            result = client.submit(make_bytes, n).result(timeout=TIMEOUT)
            assert result == make_bytes(n), n
    assert_cluster_serves(private_combo)


def test_object_reference_with_inline_arguments_over_64k(private_combo):
    with Client(private_combo.get_address(), timeout_seconds=TIMEOUT) as client:
        ref = client.send_object(b"r" * 10)
        a, b = make_bytes(60 * KIB), make_bytes(50 * KIB)  # each inline, together over 64 KiB
        assert client.submit(lengths, ref, a, b).result(timeout=TIMEOUT) == [10, 60 * KIB, 50 * KIB]
        assert client.submit(lengths, ref, x=a, y=b).result(timeout=TIMEOUT) == [10, ("x", 60 * KIB),
                                                                                 ("y", 50 * KIB)]
    assert_cluster_serves(private_combo)


def test_sizes_around_the_big_frame_threshold(private_combo):
    with Client(private_combo.get_address(), timeout_seconds=TIMEOUT) as client:
        sizes = [MIB - 200, MIB - 16, MIB - 8, MIB, MIB + 8, MIB + 200, 4 * MIB - 3, 4 * MIB + 5]
        for n in sizes:
            data = make_bytes(n)
            assert client.submit(length, data).result(timeout=TIMEOUT) == n, n
            assert client.submit(make_bytes, n).result(timeout=TIMEOUT) == data, n
        # Many big frames in flight at once, in both directions.
        blobs = [make_bytes(MIB + 4099 * i) for i in range(12)]
        assert client.map(length, blobs) == [len(b) for b in blobs]
        assert client.map(make_bytes, [len(b) for b in blobs]) == blobs
    assert_cluster_serves(private_combo)


def test_many_arguments_through_object_storage(private_combo):
    with Client(private_combo.get_address(), timeout_seconds=TIMEOUT) as client:
        args = [make_bytes(100 * KIB + i) for i in range(300)]
        assert client.map(length, args) == [len(a) for a in args]
        ref = client.send_object(make_bytes(3 * MIB))
        big = make_bytes(2 * MIB)
        assert client.submit(lengths, ref, big, k=big).result(timeout=TIMEOUT) == [3 * MIB, 2 * MIB, ("k", 2 * MIB)]
    assert_cluster_serves(private_combo)
