"""End to end: big objects through shared memory (same host) and through the socket.

Which path was taken is checked where the bytes arrive, so a silent fallback fails the
test: the processor counts the objects it mapped from memfds (which the agent passes only
for objects it got from the storage's shared memory), the objects that came as bytes and
the results it handed over as memfds (``shm.STATS``, read by a task); the client
counts the results it read from shared memory (``shm_objects_read``) and the objects it stored as memfds
(``shm_objects_put``).
"""

import os
import sys

import pytest

from scaler import Client

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(os, "memfd_create")),
                                reason="shared memory objects are Linux-only")

TIMEOUT = 30
SIZE = 24 * 1024 * 1024  # well over shm.SHM_MIN_BYTES


def processor_stats():
    from scaler.io import shm
    return dict(shm.STATS)


def length_and_stats(payload):
    return len(payload), payload[:4] == b"\x00\x01\x02\x03", processor_stats()


def make_payload(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def dev_shm_names():
    return {name for name in os.listdir("/dev/shm") if "scaler" in name} if os.path.isdir("/dev/shm") else set()


@pytest.fixture(autouse=True)
def nothing_left_in_dev_shm():
    before = dev_shm_names()
    yield
    assert dev_shm_names() == before


def test_objects_and_results_go_through_shared_memory(make_combo, monkeypatch):
    monkeypatch.delenv("SCALER_OBJECT_SHM", raising=False)
    combo = make_combo(n_workers=1)
    with Client(combo.get_address(), timeout_seconds=TIMEOUT) as client:
        agent = client._agent
        assert agent.shm_reads and agent.shm_puts
        before_warm = client.submit(len, b"warm").result(timeout=TIMEOUT)  # the worker is up
        assert before_warm == 4
        ref = client.send_object(make_payload(SIZE))
        assert agent.shm_objects_put == 1
        n, ok, stats = client.submit(length_and_stats, ref).result(timeout=TIMEOUT)
        assert (n, ok) == (SIZE, True)
        assert stats["shm_objects"] >= 1, stats  # the object was mapped, not received
        assert stats["socket_objects"] == 0, stats
        # A big argument (a temporary object) and a big result, the other way.
        assert client.submit(len, make_payload(SIZE)).result(timeout=TIMEOUT) == SIZE
        result = client.submit(make_payload, SIZE).result(timeout=TIMEOUT)
        assert result == make_payload(SIZE)
        assert agent.shm_objects_read == 1  # the result was read from shared memory here
        assert agent.shm_objects_put == 2
        _, _, after = client.submit(length_and_stats, ref).result(timeout=TIMEOUT)
        assert after["shm_results"] == 1, after  # it left the processor as a memfd too
        assert after["socket_objects"] == 0, after
        # Deleting frees it (the storage closes its descriptor); the cluster goes on.
        client.clear()
        ref2 = client.send_object(make_payload(SIZE // 2))
        assert client.submit(length_and_stats, ref2).result(timeout=TIMEOUT)[0] == SIZE // 2


def test_socket_path_when_shared_memory_is_off(make_combo, monkeypatch):
    monkeypatch.setenv("SCALER_OBJECT_SHM", "0")  # cluster and client alike
    combo = make_combo(n_workers=1)
    with Client(combo.get_address(), timeout_seconds=TIMEOUT) as client:
        agent = client._agent
        assert not agent.shm_reads and not agent.shm_puts
        ref = client.send_object(make_payload(SIZE))
        n, ok, stats = client.submit(length_and_stats, ref).result(timeout=TIMEOUT)
        assert (n, ok) == (SIZE, True)
        assert stats["shm_objects"] == 0 and stats["socket_objects"] >= 1, stats  # through the sockets
        assert client.submit(make_payload, SIZE).result(timeout=TIMEOUT) == make_payload(SIZE)
        assert client.submit(processor_stats).result(timeout=TIMEOUT)["shm_results"] == 0
        assert agent.shm_objects_put == agent.shm_objects_read == 0


def test_a_client_without_shared_memory_beside_workers_with_it(make_combo, monkeypatch):
    """The client as if on another host (its shared memory off): it stores and fetches through
    the socket, while the worker, on the storage's host, still hands its results over as
    memfds. The storage keeps what came through a socket as bytes, so the worker gets that
    object through its socket too."""
    monkeypatch.delenv("SCALER_OBJECT_SHM", raising=False)
    combo = make_combo(n_workers=1)
    monkeypatch.setenv("SCALER_OBJECT_SHM", "0")  # only this process (the client) from here on
    with Client(combo.get_address(), timeout_seconds=TIMEOUT) as client:
        agent = client._agent
        assert not agent.shm_reads and not agent.shm_puts
        ref = client.send_object(make_payload(SIZE))
        n, ok, stats = client.submit(length_and_stats, ref).result(timeout=TIMEOUT)
        assert (n, ok) == (SIZE, True)
        assert stats["shm_objects"] == 0 and stats["socket_objects"] >= 1, stats
        result = client.submit(make_payload, SIZE).result(timeout=TIMEOUT)  # stored by the worker as a memfd
        assert result == make_payload(SIZE) and agent.shm_objects_read == 0  # but sent to us through the socket
        assert client.submit(processor_stats).result(timeout=TIMEOUT)["shm_results"] == 1


def test_storage_limit_holds_for_shared_objects(procs, monkeypatch):
    from e2e_support import free_port_pair, subprocess_env
    from scaler.utility.exceptions import ObjectStorageException

    monkeypatch.delenv("SCALER_OBJECT_SHM", raising=False)
    address = "tcp://127.0.0.1:%d" % free_port_pair()
    env = subprocess_env()
    procs.python(["-m", "scaler.scheduler", address, "--object-storage-max-bytes", str(3 * 1024 * 1024),
                  "-ll", "WARNING"], "scheduler", env=env)
    procs.python(["-m", "scaler.cluster", address, "-n", "1", "-ll", "WARNING"], "cluster", env=env)
    with Client(address, timeout_seconds=TIMEOUT) as client:
        assert client._agent.shm_puts
        with pytest.raises(ObjectStorageException) as info:
            client.send_object(make_payload(4 * 1024 * 1024))
        assert "full" in str(info.value)
        ref = client.send_object(make_payload(2 * 1024 * 1024))
        assert client.submit(len, ref).result(timeout=TIMEOUT) == 2 * 1024 * 1024
        with pytest.raises(ObjectStorageException) as info:
            client.send_object(make_payload(2 * 1024 * 1024))  # 4 MiB in all: over the limit
        client.clear()  # frees the first: room again
        ref = client.send_object(make_payload(2 * 1024 * 1024))
        assert client.submit(len, ref).result(timeout=TIMEOUT) == 2 * 1024 * 1024
        assert client._agent.shm_objects_put == 4


class _Reversing:
    """A custom serializer (a class at module level: it travels to the workers by reference)."""

    @staticmethod
    def serialize(obj):
        import pickle
        return pickle.dumps(obj)[::-1]

    @staticmethod
    def deserialize(payload):
        import pickle
        assert type(payload) is bytes, type(payload)
        return pickle.loads(payload[::-1])


def _client_fds():
    return len(os.listdir("/proc/self/fd"))


def _fd_links():
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink("/proc/self/fd/" + fd))
        except OSError:
            pass
    return sorted(links)


def test_many_unread_shared_results_hold_a_bounded_number_of_descriptors(make_combo, monkeypatch):
    """Results from shared memory are read with pread when decoded, holding the memfd till
    then; past ``SharedPayload.MAX_HELD`` unread ones the rest come through the socket, so
    many big results left unread cannot run the client out of descriptors. Every value
    arrives, and every descriptor is given back."""
    from concurrent.futures import wait

    from scaler.io import shm

    monkeypatch.delenv("SCALER_OBJECT_SHM", raising=False)
    monkeypatch.setattr(shm.SharedPayload, "MAX_HELD", 12)  # (the budget is a quarter of the descriptor limit)
    combo = make_combo(n_workers=2)
    n, size = shm.SharedPayload.MAX_HELD + 16, 2 * 1024 * 1024
    import gc
    gc.collect()
    assert shm.SharedPayload.held == 0
    with Client(combo.get_address(), timeout_seconds=TIMEOUT) as client:
        assert client.submit(len, b"warm").result(timeout=TIMEOUT) == 4
        before = _client_fds()
        futures = [client.submit(make_payload, size + i) for i in range(n)]
        done, not_done = wait(futures, timeout=TIMEOUT * 3)
        assert not not_done
        assert client._agent.shm_objects_read == shm.SharedPayload.MAX_HELD
        assert shm.SharedPayload.held == shm.SharedPayload.MAX_HELD
        assert _client_fds() - before <= shm.SharedPayload.MAX_HELD, "\n".join(_fd_links())
        for i, future in enumerate(futures):
            assert future.result(timeout=TIMEOUT) == make_payload(size + i)
        del futures, done, future
        gc.collect()
        assert shm.SharedPayload.held == 0  # read or dropped: every descriptor given back


def test_a_custom_serializer_gets_a_shared_result_as_bytes(make_combo, monkeypatch):
    monkeypatch.delenv("SCALER_OBJECT_SHM", raising=False)
    combo = make_combo(n_workers=1)
    with Client(combo.get_address(), timeout_seconds=TIMEOUT, serializer=_Reversing()) as client:
        result = client.submit(make_payload, SIZE).result(timeout=TIMEOUT)
        assert result == make_payload(SIZE)
        assert client._agent.shm_objects_read == 1
