"""Shared memory for big payloads between processes of one host: sealed memfds.

A big payload (``SHM_MIN_BYTES`` or more) is written once into a *memfd* (an anonymous
file in RAM, ``os.memfd_create``) and other processes on the host map it instead of
receiving a copy through a socket. Why memfds rather than files under ``/dev/shm``: a memfd
has no name in any file system, so nothing can be left behind — the kernel frees it when
the last descriptor and mapping are gone, even if every process involved is killed with
SIGKILL — and nobody can guess, squat or pre-create it.

Handing one over: between a worker agent and its processor (a socketpair) the descriptor
itself travels (``SCM_RIGHTS``). Between a TCP peer and the object storage, the holder
names it as ``/proc/<pid>/fd/<n>`` plus a random token, and the other side opens that path
read-only (``open_peer``), which the kernel allows only to processes of the same user on
the same host (the ptrace "read" rule of ``/proc/<pid>/fd``), then checks that what it
opened is the memfd it was told about (its name carries the token) and that it is sealed
against shrinking (a mapping can then never fault past the end of the file). Whether a
peer is on the same host is never guessed from addresses: the storage offers a probe memfd
holding a random nonce, and the peer proves it could open it by sending the nonce back
(``ObjectShmOffer`` / ``ObjectShmAccept``); the same is done the other way for the
storage to read the peer's memfds. Anything failing falls back to the socket.

``SCALER_OBJECT_SHM=0`` in a process's environment turns all of this off for it.
"""

import array
import fcntl
import mmap
import os
import socket
import stat
import sys
import threading
from typing import Any, List, Optional, Sequence

ENV = "SCALER_OBJECT_SHM"
SHM_MIN_BYTES = 1024 * 1024  # smaller payloads go through the socket: a memfd costs a few syscalls
TOKEN_HEX = 32  # characters of a memfd token (16 random bytes)
MAX_FDS_PER_SEND = 200  # under the kernel's SCM_MAX_FD (253)
_ANC_BUFSIZE = socket.CMSG_SPACE(MAX_FDS_PER_SEND * 4) if hasattr(socket, "CMSG_SPACE") else 0

# fcntl's memfd sealing (Linux); the values are the kernel's.
_F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
_F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
_F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)
_F_SEAL_GROW = getattr(fcntl, "F_SEAL_GROW", 0x0004)
_F_SEAL_WRITE = getattr(fcntl, "F_SEAL_WRITE", 0x0008)
SEALED = _F_SEAL_SHRINK | _F_SEAL_GROW | _F_SEAL_WRITE


def _populate_flag() -> int:
    """MAP_POPULATE: map every page at once (one call instead of a fault per 4 KiB page)."""
    flag = getattr(mmap, "MAP_POPULATE", None)  # Python >= 3.10
    if flag is not None:
        return flag
    if sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "i686", "i386", "aarch64", "armv7l",
                                                                     "ppc64le", "s390x", "riscv64"):
        return 0x8000  # asm-generic value, used by these architectures
    return 0


_POPULATE = _populate_flag()
# How big payloads reached and left a worker's processor (kept here, not in the processor's
# module, which runs as ``__main__``; tests read them from inside a task): objects mapped
# from a memfd the agent passed (it got them from the storage's shared memory), objects of
# SHM_MIN_BYTES or more received as bytes, results handed to the agent as memfds.
STATS = {"shm_objects": 0, "socket_objects": 0, "shm_results": 0}
_available: Optional[bool] = None


class ShmError(OSError):
    """A memfd could not be made, opened or verified: the caller falls back to the socket."""


def available() -> bool:
    """memfds exist here and ``SCALER_OBJECT_SHM`` does not forbid them."""
    global _available
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _available is None:
        _available = (sys.platform.startswith("linux") and hasattr(os, "memfd_create")
                      and os.path.isdir("/proc/self/fd"))
    return _available


def new_token() -> str:
    return os.urandom(TOKEN_HEX // 2).hex()


def valid_token(token: str) -> bool:
    return len(token) == TOKEN_HEX and all(c in "0123456789abcdef" for c in token)


def create(token: str) -> int:
    """A new empty memfd named after ``token`` (close-on-exec, sealable)."""
    try:
        return os.memfd_create("scaler-" + token, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (OSError, AttributeError) as exc:
        raise ShmError("cannot create a memfd: %s" % exc) from None


def write_all(fd: int, chunks: Sequence[Any]) -> int:
    """Append ``chunks`` (buffers) to ``fd``; returns the bytes written."""
    total = 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        n = len(view)
        done = 0
        while done < n:
            done += os.write(fd, view[done:done + (1 << 30)])
        total += n
    return total


def seal(fd: int, seals: int = SEALED) -> None:
    fcntl.fcntl(fd, _F_ADD_SEALS, seals)


def make_sealed(chunks: Sequence[Any]) -> "Segment":
    """A memfd holding ``chunks`` back to back, sealed read-only for good."""
    token = new_token()
    fd = create(token)
    try:
        size = write_all(fd, chunks)
        seal(fd)
    except OSError as exc:
        os.close(fd)
        raise ShmError("cannot fill a memfd: %s" % exc) from None
    return Segment(fd, size, token)


def map_readonly(fd: int, size: int) -> mmap.mmap:
    """Map the first ``size`` bytes of ``fd`` read-only, every page at once."""
    if size == 0:
        return mmap.mmap(-1, 1)  # nothing to map; an empty view is taken from it
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)


def _expected_link(token: str) -> str:
    return "/memfd:scaler-%s (deleted)" % token


def open_peer(pid: int, fd: int, token: str, min_size: int = 0, seals: int = _F_SEAL_SHRINK) -> int:
    """Open another process's memfd ``/proc/<pid>/fd/<fd>`` read-only and check that it is the
    one named after ``token``, sealed with ``seals``, at least ``min_size`` bytes long.
    Returns our own descriptor; raises ShmError."""
    if not valid_token(token) or not 0 < pid < 1 << 31 or not 0 <= fd < 1 << 31:
        raise ShmError("malformed shared memory reference")
    path = "/proc/%d/fd/%d" % (pid, fd)
    expected = _expected_link(token)
    try:
        if os.readlink(path) != expected:  # cheap early refusal (the check that counts is below)
            raise ShmError("%s is not the expected memfd" % path)
        # O_NONBLOCK|O_NOCTTY: should the number have been reused for a FIFO or a terminal
        # since, opening it neither blocks nor acquires it.
        ours = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, ShmError):
            raise
        raise ShmError("cannot open %s: %s" % (path, exc)) from None
    try:
        # What we opened is what counts: the number may have been reused between the two calls.
        if os.readlink("/proc/self/fd/%d" % ours) != expected:
            raise ShmError("%s is not the expected memfd" % path)
        info = os.fstat(ours)
        if not stat.S_ISREG(info.st_mode) or info.st_size < min_size:
            raise ShmError("%s: not a file of at least %d bytes" % (path, min_size))
        if fcntl.fcntl(ours, _F_GET_SEALS) & seals != seals:
            raise ShmError("%s is not sealed" % path)
    except BaseException as exc:
        os.close(ours)
        if isinstance(exc, OSError) and not isinstance(exc, ShmError):
            raise ShmError("cannot check %s: %s" % (path, exc)) from None
        raise
    return ours


class Segment:
    """A memfd this process holds a descriptor of, with its size and token; mapped on demand."""

    __slots__ = ("fd", "size", "token", "_map")

    def __init__(self, fd: int, size: int, token: str) -> None:
        self.fd = fd
        self.size = size
        self.token = token
        self._map: Optional[mmap.mmap] = None

    def __len__(self) -> int:
        return self.size

    def view(self) -> memoryview:
        """The bytes, read-only (the mapping lives as long as a view of it)."""
        if self._map is None:
            if self.fd < 0:
                raise ShmError("segment closed")
            self._map = map_readonly(self.fd, self.size)
        return memoryview(self._map)[:self.size]

    def detach(self) -> memoryview:
        """The bytes as a view, and give up the descriptor (the mapping keeps the memory)."""
        view = self.view()
        self.close()
        return view

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        self._map = None  # unmapped when the last view of it is gone
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.close()


def _descriptor_budget() -> int:
    """How many unread results a client may hold as descriptors: a quarter of its descriptor
    limit, between 32 and 1024 (a Linux default soft limit of 1024 gives 256)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 32
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft <= 0:
        return 1024
    return max(32, min(1024, soft // 4))


class SharedPayload:
    """A payload lying in part of a memfd, read with ``pread`` rather than mapped.

    Why not a mapping: a value has to be copied out of shared memory anyway, and
    ``pickle.load`` from a file reads each big ``bytes``/``bytearray`` straight into the
    object it becomes (``readinto``), so the copy is the kernel's and there is no mapping
    to set up first (for 200 MB: 0.10 s against 0.12 s for ``pickle.loads`` of a mapping).
    Reads are positional, so two threads may read one payload at once. It owns its
    segment's descriptor until it is dropped; ``held`` counts those alive, for a caller
    that bounds them (``MAX_HELD``)."""

    __slots__ = ("segment", "offset", "size")
    MAX_HELD = _descriptor_budget()
    held = 0  # instances alive
    _lock = threading.Lock()  # made in the client's I/O thread, dropped in any

    def __init__(self, segment: "Segment", offset: int, size: int) -> None:
        self.offset = offset
        self.size = size
        self.segment = segment  # set last: __del__ counts out only what was counted in
        cls = type(self)
        with cls._lock:
            cls.held += 1

    def __del__(self) -> None:
        try:
            segment = self.segment
        except AttributeError:
            return
        cls = type(self)  # (not the module global: it may be gone at interpreter exit)
        with cls._lock:
            cls.held -= 1
        segment.close()

    def __copy__(self) -> "SharedPayload":
        raise TypeError("a SharedPayload owns its descriptor: it cannot be copied")

    def __len__(self) -> int:
        return self.size

    def reader(self) -> "PositionalReader":
        """A read-only file over the payload, for ``pickle.load``."""
        return PositionalReader(self.segment, self.offset, self.offset + self.size)

    def read_all(self) -> bytes:
        """The payload as one ``bytes``: one copy (the kernel's) below 2 GiB, two above."""
        return self.reader().read()


class PositionalReader:
    """The file ``pickle.load`` needs (``read``, ``readinto``, ``readline``) over
    ``[start, end)`` of a segment, with ``pread``: no shared file offset is moved. It holds
    the segment, not its bare descriptor, so it never reads a number reused by another file."""

    __slots__ = ("segment", "pos", "end")

    def __init__(self, segment: "Segment", start: int, end: int) -> None:
        self.segment = segment
        self.pos = start
        self.end = end
        self._fd()

    def _fd(self) -> int:
        fd = self.segment.fd
        if fd < 0:
            raise ShmError("segment closed")
        return fd

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.end - self.pos)
        done = 0
        while done < want:
            n = os.preadv(self._fd(), [view[done:want]], self.pos + done)
            if n <= 0:
                break  # the memfd is sealed against shrinking: not expected
            done += n
        self.pos += done
        return done

    def read(self, size: int = -1) -> bytes:
        left = self.end - self.pos
        size = left if size is None or size < 0 or size > left else size
        if size <= 0:
            return b""
        data = os.pread(self._fd(), size, self.pos)
        if len(data) < size:  # a read is capped at about 2 GiB: the whole into one buffer, then bytes
            buffer = bytearray(size)
            got = len(data)
            buffer[:got] = data
            del data
            self.pos += got
            got += self.readinto(memoryview(buffer)[got:])
            if got < size:
                del buffer[got:]
            return bytes(buffer)
        self.pos += size
        return data

    def readline(self) -> bytes:
        """Text pickles only (protocol 0): byte by byte, as they are small."""
        out = bytearray()
        while self.pos < self.end:
            byte = self.read(1)
            out += byte
            if byte == b"\n":
                break
        return bytes(out)


class Probe:
    """A small sealed memfd holding a random nonce: whoever can open it and read the nonce is on
    this host, as this user, and sees this process's ``/proc``."""

    def __init__(self) -> None:
        self.nonce = os.urandom(32)
        self.segment = make_sealed([self.nonce])

    @property
    def fd(self) -> int:
        return self.segment.fd

    @property
    def token(self) -> str:
        return self.segment.token

    def close(self) -> None:
        self.segment.close()


def read_probe(pid: int, fd: int, token: str) -> bytes:
    """Open a peer's probe and return its nonce (ShmError if it cannot be read)."""
    ours = open_peer(pid, fd, token, 32, SEALED)
    try:
        return os.pread(ours, 64, 0)
    except OSError as exc:
        raise ShmError("cannot read the probe: %s" % exc) from None
    finally:
        os.close(ours)


def fd_rights(fds: Sequence[int]) -> List[Any]:
    """The ancillary data that passes ``fds`` with a ``sendmsg``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []


_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))  # a plain int: an IntFlag's ``&`` costs microseconds


def received_fds(ancdata: Sequence[Any], flags: int) -> List[int]:
    """The descriptors a ``recvmsg`` brought; raises ShmError (after closing them) if some were lost."""
    fds: List[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[:len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    if flags & _MSG_CTRUNC:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        raise ShmError("descriptors passed over the channel were truncated")
    return fds


ANC_BUFSIZE = _ANC_BUFSIZE

__all__ = ["ENV", "SHM_MIN_BYTES", "ShmError", "Segment", "SharedPayload", "PositionalReader", "Probe", "available",
           "create", "make_sealed", "map_readonly", "open_peer", "read_probe", "seal", "write_all", "fd_rights",
           "received_fds", "new_token", "valid_token"]
