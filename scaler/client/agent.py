"""The client's I/O thread: owns the sockets to the scheduler and to object storage.

The user's thread hands work over with ``loop.call_soon_threadsafe`` (a deque plus one
wake-up byte) and waits on futures or :class:`Waiter` objects; the one socket write it
makes itself is a submit with nothing ahead of it (:meth:`ClientAgent.submit_now`; over
TLS only while it can take the loop's lock, under which alone the SSL object is used).
Everything in this module after ``start()`` runs on the I/O thread unless its docstring
says otherwise, or on a thread waiting in ``result()`` that borrowed the scheduler socket
(``leader.py``): that one holds the loop's lock, so it is never both.
"""

import collections
import logging
import os
import sys
import threading
import time
from concurrent.futures import InvalidStateError
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from ..io import shm
from ..io.address import Address, connectable_host, parse_address
from ..io.connection import Connection, Handler
from ..io.loop import EventLoop
from ..protocol.codec import Message, encode_frames
from ..protocol.messages import (ROLE_CLIENT, STATUS_BUSY, STATUS_CANCELLED, STATUS_FAILED, STATUS_MISSING_OBJECT,
                                 STATUS_NOT_SERIALIZABLE, STATUS_OK, STATUS_OK_OBJECT, STATUS_PROCESSOR_DIED,
                                 STATUS_REJECTED, STATUS_TIMED_OUT, STATUS_WORKER_DIED, ClientConnect,
                                 ClientConnectReply, ClientDisconnect, Heartbeat, HeartbeatEcho, ObjectDelete,
                                 ObjectDeleteOwner, ObjectGet, ObjectGetBytes, ObjectGetReply, ObjectGetShm,
                                 ObjectPut, ObjectPutReply, ObjectPutShm, ObjectShmAccept, ObjectShmOffer,
                                 ObjectShmReady, SchedulerShutdown, ShutdownRefused, TaskCancel, TaskOutput, TaskResult)
from ..utility.exceptions import (AuthenticationError, ClientShutdownException, DisconnectedError, MissingObjects,
                                  ObjectStorageException, ProcessorDiedError, TaskExceptionNotSerializableError,
                                  SchedulerBusyError, TaskTimeoutError, TLSError, WorkerDiedError)
from .future import ScalerFuture
from .leader import Leader, hold_sigint

logger = logging.getLogger(__name__)

CONNECT_RETRY_SECONDS = 0.1
REFUSED_PUTS_KEPT = 4096


class RemoteTraceback(Exception):
    """Carries the worker-side traceback text; set as ``__cause__`` of a re-raised task exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


class Waiter:
    """A one-shot result for the user's thread, with a timeout on every wait."""

    __slots__ = ("_event", "value", "error")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def set(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.value = value
        self.error = error
        self._event.set()

    def wait(self, timeout: float, what: str) -> Any:
        if not self._event.wait(timeout):
            raise TimeoutError("%s: no answer within %.0fs" % (what, timeout))
        if self.error is not None:
            raise self.error
        return self.value


class ClientAgent(Handler):
    def __init__(self, address: str, client_id: bytes, key: Optional[bytes], timeout_seconds: float,
                 heartbeat_interval_seconds: float, object_storage_address: Optional[str],
                 tls_ca: Optional[str] = None) -> None:
        self.address = parse_address(address)
        self.tls_ca = tls_ca
        self.client_id = client_id
        self.key = key
        self.timeout_seconds = timeout_seconds
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.storage_override = object_storage_address
        self.loop = EventLoop()
        self.scheduler: Optional[Connection] = None
        self.storage: Optional[Connection] = None
        self.storage_address: Optional[Address] = None
        self.protected = True
        self.futures: Dict[bytes, ScalerFuture] = {}
        self.unacked: Dict[bytes, List[Callable[[Optional[BaseException]], None]]] = {}  # puts in flight
        self.held: Dict[bytes, ScalerFuture] = {}  # tasks waiting for their objects to be stored
        # Batches not sent yet, in the order they were handed over: the first waits for an
        # object to be stored, the others wait behind it (see submit).
        self._queued: Deque[_QueuedBatch] = collections.deque()
        # Stores refused before a task needing them was handed over (the refusal can win the
        # race with the hand-over); the oldest are forgotten past REFUSED_PUTS_KEPT.
        self.refused_puts: "collections.OrderedDict[bytes, BaseException]" = collections.OrderedDict()
        self.forget_object: Callable[[bytes], None] = lambda object_id: None
        self.result_fetches: Dict[bytes, ScalerFuture] = {}
        self.shutdown_waiter: Optional[Waiter] = None
        self.ready = Waiter()
        self.failure: Optional[BaseException] = None  # once set, the client is finished
        self.deserialize: Callable[[Any], Any] = lambda payload: payload
        self.last_echo = time.monotonic()
        # Shared memory with the object storage (scaler/io/shm.py), once it offered and we proved
        # we are on its host: reads (ObjectGetShm replies) and puts (ObjectPutShm).
        self.shm_reads = False
        self.shm_puts = False
        self.storage_pid = 0
        self._shm_probe: Optional[shm.Probe] = None
        self.shm_objects_read = 0  # figures, for tests and curiosity
        self.shm_objects_put = 0
        self._connect_deadline = 0.0
        # submit_now: the user's thread writes a task to the scheduler itself when nothing it
        # handed over is still on its way (_calls_pending), under the scheduler connection's
        # write lock, which also guards failing everything (_finish) against a late register.
        self.send_lock = threading.RLock()
        self._calls_pending = 0
        self.direct_submits = 0  # batches the user's thread wrote itself (a figure, for tests)
        self._thread = threading.Thread(target=self._run, name="scaler-client-io", daemon=True)
        # A thread waiting in result() may read the scheduler connection itself (leader.py):
        # the I/O thread holds the leader's lock but while it waits in select().
        self.leader = Leader(self)
        self.loop.lock = self.leader.lock

    # --- called from the user's thread ---
    def start(self) -> None:
        self._connect_deadline = time.monotonic() + self.timeout_seconds
        self._thread.start()
        self.loop.call_soon_threadsafe(self._dial_scheduler)
        self.ready.wait(self.timeout_seconds + 5, "connecting to the scheduler at %s" % self.address)

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the I/O thread: now if we are on it (a done-callback), else soon."""
        if self.failure is not None:
            raise self.failure
        if threading.current_thread() is self._thread:
            fn()
            return
        with self.send_lock:
            self._calls_pending += 1
        self.loop.call_soon_threadsafe(lambda: self._run_call(fn))

    def _run_call(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        finally:
            with self.send_lock:
                self._calls_pending -= 1

    def submit_now(self, batch: List[Tuple[ScalerFuture, Message]], needs: Sequence[bytes]) -> bool:
        """From the user's thread: write ``batch`` to the scheduler at once, skipping a wake-up
        of the I/O thread, when that keeps every ordering ``submit`` keeps: nothing handed
        over earlier is still on its way, every object the tasks need is acknowledged, and the
        connection has nothing queued. Returns False, having done nothing, otherwise."""
        conn = self.scheduler
        if (conn is None or self.failure is not None or self._calls_pending or self._queued
                or self.on_io_thread()):
            return False  # (_calls_pending read unlocked as a hint: no frames encoded for nothing)
        parts = encode_frames([msg for _, msg in batch])
        with self.send_lock:
            # With no hand-over pending, every batch handed over earlier is sent or queued:
            # a queued one must not be overtaken.
            if self._calls_pending or self._queued or self.failure is not None:
                return False
            # Only now, with no hand-over pending: a put handed over just before (the
            # function's, on its first submit) may have reached unacked meanwhile.
            unacked, refused = self.unacked, self.refused_puts
            for object_id in needs:
                if object_id in unacked or object_id in refused:
                    return False
            futures = self.futures
            for future, _ in batch:
                futures[future.task_id] = future  # before it leaves: the result may come back at once
            if conn.tls:  # the SSL object is used under the loop's lock only: take it if it is free
                lock = self.loop.lock
                held = hold_sigint()  # (see there: no KeyboardInterrupt right after an SSL write)
                if held is None:
                    sent = False
                else:
                    try:
                        sent = lock is not None and lock.acquire(False)
                        if sent:
                            try:
                                sent = conn.send_holding_loop_lock(parts)
                            finally:
                                lock.release()
                    finally:
                        if not sent:
                            for future, _ in batch:
                                futures.pop(future.task_id, None)
                        held.release()  # a Ctrl-C held back is raised here, the task sent or not
            else:
                sent = conn.send_from_thread(parts)
            if sent:
                self.direct_submits += 1
                return True
            for future, _ in batch:
                futures.pop(future.task_id, None)
            return False

    def on_io_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._disconnect)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.leader.close()

    # --- the thread ---
    def _run(self) -> None:
        self.leader.lock.acquire()
        try:
            self.loop.run()
        except BaseException as exc:  # a bug here must not leave futures hanging forever
            logger.exception("client I/O thread failed")
            error = DisconnectedError("client I/O thread failed: %r" % exc)
            with self.send_lock:  # no submit_now registers a future after this
                if self.failure is None:
                    self.failure = error
            self._fail_all(error)
        finally:
            self.loop.close()
            self.leader.lock.release()
            if not self.ready._event.is_set():
                self.ready.set(error=self.failure or DisconnectedError("client stopped"))

    def _dial_scheduler(self) -> None:
        try:
            conn = Connection.dial(self.loop, connectable_host(self.address), _Link(self, True),
                                   ROLE_CLIENT, self.key, tls_ca=self.tls_ca)
            conn.write_lock = self.send_lock
            self.scheduler = conn
        except OSError as exc:
            self._connect_failed(str(exc), retry=True)

    def _connect_failed(self, reason: str, retry: bool, tls: bool = False) -> None:
        if retry and time.monotonic() < self._connect_deadline:
            self.loop.call_later(CONNECT_RETRY_SECONDS, self._dial_scheduler)
            return
        error: BaseException
        if retry:
            error = ConnectionError("cannot reach the scheduler at %s within %.0fs: %s"
                                    % (self.address, self.timeout_seconds, reason))
        elif tls:
            error = TLSError(reason)
        else:
            error = AuthenticationError(reason)
        self._finish(error)

    def _dial_storage(self) -> None:
        try:
            self.storage = Connection.dial(self.loop, connectable_host(self.storage_address), _Link(self, False),
                                           ROLE_CLIENT, self.key, tls_ca=self.tls_ca)
        except OSError as exc:
            self._storage_unreachable(str(exc))

    def _storage_unreachable(self, reason: str) -> None:
        """A separate object storage server may start after the scheduler: keep trying until the deadline."""
        if time.monotonic() < self._connect_deadline:
            self.loop.call_later(CONNECT_RETRY_SECONDS, self._dial_storage)
        else:
            self._finish(ConnectionError("cannot reach object storage at %s within %.0fs: %s"
                                         % (self.storage_address, self.timeout_seconds, reason)))

    def scheduler_open(self, conn: Connection) -> None:
        conn.send(ClientConnect(self.client_id))

    def scheduler_results(self, conn: Connection, msgs: List[Message]) -> None:
        """Results that came together from the scheduler."""
        self.last_echo = time.monotonic()
        task_result = self._task_result
        for msg in msgs:
            if conn.closed:
                return
            task_result(msg)

    def scheduler_message(self, conn: Connection, msg: Message) -> None:
        self.last_echo = time.monotonic()
        kind = type(msg)
        if kind is TaskResult:
            self._task_result(msg)
        elif kind is TaskOutput:
            self._task_output(msg)
        elif kind is HeartbeatEcho:
            pass
        elif kind is ClientConnectReply:
            self.protected = msg.protected
            storage = parse_address(self.storage_override or msg.object_storage_address)
            if storage.scheme != "ipc" and storage.host in ("0.0.0.0", "::"):
                storage = storage._replace(host=self.address.host)
            self.storage_address = storage
            self._dial_storage()
        elif kind is SchedulerShutdown:
            self._finish(ClientShutdownException("the cluster was shut down: %s" % msg.reason))
        elif kind is ShutdownRefused:
            if self.shutdown_waiter is not None:
                self.shutdown_waiter.set(error=ValueError(msg.reason))
                self.shutdown_waiter = None
        else:
            logger.warning("unexpected %s from the scheduler", kind.__name__)

    def storage_open(self, conn: Connection) -> None:
        self.loop.call_every(self.heartbeat_interval_seconds, self._heartbeat)
        if not shm.available():
            self.ready.set()
        # else ready once the storage's shared memory offer is answered (_shm_offer, ObjectShmReady)

    def _shm_offer(self, conn: Connection, msg: Message) -> None:
        """Prove we are on the storage's host (read its nonce), and offer a probe of ours."""
        if shm.available() and msg.token:
            try:
                nonce = shm.read_probe(msg.pid, msg.fd, msg.token)
                self._shm_probe = probe = shm.Probe()
            except shm.ShmError as exc:
                logger.debug("object storage at %s: no shared memory (%s)", self.storage_address, exc)
            else:
                self.storage_pid = msg.pid
                conn.send(ObjectShmAccept(nonce, os.getpid(), probe.fd, probe.token, probe.nonce))
                return
        self.ready.set()

    def shareable(self, payload: Any) -> Any:
        """``payload`` as a sealed memfd when shared puts are on and it is big (called from the
        user's thread: the one copy is made there, not on the I/O thread); else as it is."""
        if not self.shm_puts or payload_nbytes(payload) < shm.SHM_MIN_BYTES:
            return payload
        try:
            return shm.make_sealed(payload if type(payload) is list else [payload])
        except shm.ShmError as exc:
            logger.debug("sending an object through the socket: %s", exc)
            return payload

    def storage_message(self, conn: Connection, msg: Message) -> None:
        kind = type(msg)
        if kind is ObjectGetShm:
            self._object_shared(msg)
        elif kind is ObjectShmOffer:
            self._shm_offer(conn, msg)
        elif kind is ObjectShmReady:
            self.shm_reads, self.shm_puts = msg.reads, msg.puts
            if self._shm_probe is not None:
                self._shm_probe.close()  # the storage has read it (or given up)
                self._shm_probe = None
            self.ready.set()
        elif kind is ObjectPutReply:
            error = None
            if msg.error:
                error = ObjectStorageException(msg.error)
                self.forget_object(msg.object_id)
                self.refused_puts[msg.object_id] = error
                if len(self.refused_puts) > REFUSED_PUTS_KEPT:
                    self.refused_puts.popitem(last=False)
            for callback in self.unacked.pop(msg.object_id, ()):
                callback(error)
        elif kind is ObjectGetReply:
            self._result_fetched(msg.object_id, msg.found, msg.payload)

    def _object_shared(self, msg: Message) -> None:
        """A result in the storage's shared memory: keep its descriptor and read it from there
        when it is decoded (``SharedPayload``: no copy until then). Each one unread holds a
        descriptor (so would a mapping: ``mmap`` keeps a duplicate), so past
        ``SharedPayload.MAX_HELD`` of them the bytes come through the socket instead."""
        future = self.result_fetches.get(msg.object_id)
        if future is None:
            return
        if future.done():  # cancelled while it was fetched: nothing to open
            self._result_fetched(msg.object_id, True, b"")
            return
        if shm.SharedPayload.held >= shm.SharedPayload.MAX_HELD:
            self.storage.send(ObjectGetBytes(msg.object_id))
            return
        try:
            fd = shm.open_peer(self.storage_pid, msg.fd, msg.token, msg.offset + msg.size)
        except shm.ShmError as exc:
            logger.debug("fetching a result through the socket: %s", exc)
            self.storage.send(ObjectGetBytes(msg.object_id))
            return
        payload = shm.SharedPayload(shm.Segment(fd, msg.offset + msg.size, msg.token), msg.offset, msg.size)
        self.shm_objects_read += 1
        self._result_fetched(msg.object_id, True, payload)

    def _result_fetched(self, object_id: bytes, found: bool, payload: Any) -> None:
        future = self.result_fetches.pop(object_id, None)
        if future is None:
            return
        self.storage.send(ObjectDelete([object_id]))  # a result is read once
        if found:
            _settle(future, lambda: future._set_payload(payload, self.deserialize))
        else:
            _settle(future, lambda: future.set_exception(MissingObjects(
                "the result of task %s is gone from object storage" % future.task_id.hex())))

    def link_closed(self, conn: Connection, reason: str, is_scheduler: bool) -> None:
        if self.failure is not None:
            return
        if not conn.opened:
            if getattr(conn, "failure", None):
                self._connect_failed(conn.failure, retry=False, tls=conn.tls_failure)
            elif is_scheduler:
                self._connect_failed(reason, retry=True)
            elif not self.ready._event.is_set():
                self._storage_unreachable(reason)
            else:
                self._finish(ConnectionError("cannot reach object storage at %s: %s" % (self.storage_address, reason)))
            return
        what = "scheduler" if is_scheduler else "object storage"
        self._finish(DisconnectedError("lost the connection to the %s: %s" % (what, reason)))

    # --- work handed over by the user's thread ---
    def submit(self, batch: List[Tuple[ScalerFuture, Optional[Message]]], needs: Sequence[bytes] = (),
               graph: Optional[Message] = None) -> None:
        """Send tasks, but only once every object they need is acknowledged by storage:
        a worker must never ask for an object that is still on its way. And in the order
        they were handed over: a batch behind one that waits for its objects waits too, so
        equal priorities run in submission order even when a map's first batch carries a
        large argument (stored first) and its next one does not.

        With ``graph`` (a ``GraphSubmit``), the batch holds the futures of its requested
        nodes, without messages: the graph is sent whole after them."""
        if self.failure is not None:
            for future, _ in batch:
                _settle(future, lambda f=future: f.set_exception(self.failure))
            return
        refused = [self.refused_puts[object_id] for object_id in needs if object_id in self.refused_puts]
        if refused:
            for future, _ in batch:
                _settle(future, lambda f=future: f.set_exception(refused[0]))
            return
        waiting = [object_id for object_id in set(needs) if object_id in self.unacked]
        if not waiting and not self._queued:
            self._send_batch(batch, graph)
            return
        entry = _QueuedBatch(batch, graph, len(waiting))
        self._queued.append(entry)
        for future, _ in batch:
            self.held[future.task_id] = future

        def acknowledged(error: Optional[BaseException]) -> None:
            if entry.error is None:
                if error is not None:
                    entry.error = error
                else:
                    entry.waiting -= 1
            self._release_queued()

        for object_id in waiting:
            self.unacked[object_id].append(acknowledged)

    def _release_queued(self) -> None:
        """Send the queued batches from the first on, up to one still waiting for an object;
        one whose object was refused fails, and those behind it go on."""
        queued = self._queued
        while queued:
            entry = queued[0]
            if entry.error is None and entry.waiting > 0:
                return
            for future, _ in entry.batch:
                self.held.pop(future.task_id, None)
            error = entry.error or self.failure
            if error is not None:
                queued.popleft()
                for future, _ in entry.batch:
                    _settle(future, lambda f=future, e=error: f.set_exception(e))
                continue
            # Taken off the queue only once written: until then submit_now (the caller's
            # thread, which sees the queue) may not write a later batch before it.
            self._send_batch(entry.batch, entry.graph)
            queued.popleft()

    def _send_batch(self, batch: List[Tuple[ScalerFuture, Optional[Message]]], graph: Optional[Message]) -> None:
        futures = self.futures
        send = self.scheduler.send
        cancelled = []
        for future, msg in batch:
            if future.done():  # cancelled before it left
                cancelled.append(future.task_id)
                continue
            futures[future.task_id] = future
            if msg is not None:
                send(msg)
        if graph is not None:
            send(graph)
            for task_id in cancelled:  # a requested node cancelled before the graph left
                send(TaskCancel(task_id))

    def put(self, object_id: bytes, payload: Any, waiter: Optional[Waiter] = None) -> None:
        """Store an object; ``waiter`` (if any) learns the outcome, and so do tasks that need it."""
        self.refused_puts.pop(object_id, None)
        if self.failure is not None:
            if type(payload) is shm.Segment:
                payload.close()
            if waiter is not None:
                waiter.set(error=self.failure)
            return
        callbacks = self.unacked.setdefault(object_id, [])
        if waiter is not None:
            callbacks.append(lambda error: waiter.set(error=error))
        if type(payload) is shm.Segment:
            # The storage opens our memfd when it gets this; we keep it open until it answered.
            callbacks.append(lambda error, segment=payload: segment.close())
            self.shm_objects_put += 1
            self.storage.send(ObjectPutShm(object_id, self.client_id, payload.fd, payload.token, payload.size))
            return
        self.storage.send(ObjectPut(object_id, self.client_id, payload))

    def delete_objects(self, object_ids: List[bytes]) -> None:
        if self.storage is not None and object_ids:
            self.storage.send(ObjectDelete(object_ids))

    def drop_cached_objects(self) -> None:
        """Ask the scheduler to have every worker drop its copies of this client's objects."""
        if self.scheduler is not None and self.failure is None:
            self.scheduler.send(ObjectDeleteOwner(self.client_id))

    def cancel(self, task_id: bytes) -> None:
        if task_id in self.futures and self.scheduler is not None:
            self.scheduler.send(TaskCancel(task_id))

    def cancel_all(self, waiter: Waiter) -> None:
        for future in list(self.futures.values()) + list(self.held.values()):
            if not future.done():
                future.cancel()  # a held one is then skipped when its objects are stored
        self.held.clear()
        waiter.set()

    def request_shutdown(self, waiter: Waiter) -> None:
        self.shutdown_waiter = waiter
        self.scheduler.send(ClientDisconnect(True))

    # --- results ---
    def _task_output(self, msg: Message) -> None:
        """stream_output: write what the task printed to this process's stdout or stderr."""
        future = self.futures.get(msg.task_id)
        if future is None or future.done():
            return  # cancelled meanwhile: its output is as unwanted as its result
        stream = sys.stderr if msg.stream == 2 else sys.stdout
        if stream is None:
            return  # pythonw, or a daemon that closed them
        try:
            stream.write(bytes(msg.data).decode("utf-8", "replace"))
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stream must not stop the I/O thread
            logger.debug("cannot write a task's output: %r", exc)

    def _task_result(self, msg: Message) -> None:
        status = msg.status
        future = self.futures.pop(msg.task_id, None)
        if future is None or future.done():
            if status == STATUS_OK_OBJECT:
                self.delete_objects([bytes(msg.payload)])
            if future is not None and future._temp_objects:
                self.delete_objects(list(future._temp_objects))
            return
        if future._temp_objects:
            self.delete_objects(list(future._temp_objects))
        if status == STATUS_OK:
            future._profile = msg.detail  # a ProfileResult's text when the task was profiled
            try:
                future._set_payload(msg.payload, self.deserialize)
            except InvalidStateError:
                pass  # cancelled by the user in the meantime
        elif status == STATUS_OK_OBJECT:
            future._profile = msg.detail
            object_id = bytes(msg.payload)
            self.result_fetches[object_id] = future
            self.storage.send(ObjectGet(object_id))
        elif status == STATUS_FAILED:
            _settle(future, lambda: future.set_exception(_remote_exception(msg.payload, msg.detail)))
        elif status == STATUS_CANCELLED:
            _settle(future, future._cancel_here)  # the scheduler ended it: nothing to tell it
        else:
            error_type = {STATUS_WORKER_DIED: WorkerDiedError, STATUS_PROCESSOR_DIED: ProcessorDiedError,
                          STATUS_MISSING_OBJECT: MissingObjects,
                          STATUS_NOT_SERIALIZABLE: TaskExceptionNotSerializableError,
                          STATUS_REJECTED: ValueError,
                          STATUS_TIMED_OUT: TaskTimeoutError,
                          STATUS_BUSY: SchedulerBusyError}.get(status, WorkerDiedError)
            _settle(future, lambda: future.set_exception(error_type(msg.detail)))

    # --- time and endings ---
    def _heartbeat(self) -> None:
        if self.failure is not None:
            return
        if time.monotonic() - self.last_echo > self.timeout_seconds:
            self._finish(TimeoutError("no answer from the scheduler at %s for %.0fs"
                                      % (self.address, self.timeout_seconds)))
            return
        self.scheduler.send(Heartbeat(time.time()))

    def _fail_all(self, error: BaseException) -> None:
        for future in list(self.futures.values()) + list(self.result_fetches.values()):
            _settle(future, lambda f=future: f.set_exception(error))
        self.futures.clear()
        self.result_fetches.clear()
        unacked, self.unacked = self.unacked, {}
        for callbacks in unacked.values():
            for callback in callbacks:
                callback(error)
        if self.shutdown_waiter is not None:
            # The scheduler went away after we asked it to: that is the shutdown succeeding.
            self.shutdown_waiter.set()
            self.shutdown_waiter = None

    def _finish(self, error: BaseException) -> None:
        """The client cannot go on: fail everything pending, close, stop the thread."""
        with self.send_lock:  # once set, no submit_now registers a future: _fail_all sees them all
            if self.failure is None:
                self.failure = error
        self._fail_all(error)  # outside the lock: it runs the futures' done-callbacks
        if not self.ready._event.is_set():
            self.ready.set(error=error)
        for conn in (self.scheduler, self.storage):
            if conn is not None:
                conn.close_after_flush()
        if self._shm_probe is not None:
            self._shm_probe.close()
            self._shm_probe = None
        self.loop.call_later(0.01, self.loop.stop)

    def _disconnect(self) -> None:
        if self.failure is None:
            from ..utility.exceptions import ClientQuitException
            with self.send_lock:
                self.failure = ClientQuitException("client is already stopped.")
            for future in list(self.futures.values()) + list(self.held.values()):
                future._cancel_here()  # the scheduler cancels them itself when we leave
            self.held.clear()
            self._fail_all(self.failure)
            if self.scheduler is not None and self.scheduler.opened:
                self.scheduler.send(ClientDisconnect(False))
        for conn in (self.scheduler, self.storage):
            if conn is not None:
                conn.close_after_flush()
        if self._shm_probe is not None:
            self._shm_probe.close()
            self._shm_probe = None
        self.loop.call_later(0.01, self.loop.stop)


def payload_nbytes(payload: Any) -> int:
    if type(payload) is bytes:
        return len(payload)
    if type(payload) is list:
        return sum(memoryview(chunk).nbytes for chunk in payload)
    return memoryview(payload).nbytes


class _QueuedBatch:
    """A batch handed to ``ClientAgent.submit`` and not sent yet (``waiting``: its objects
    not acknowledged yet; ``error``: the refusal of one of them)."""

    __slots__ = ("batch", "graph", "waiting", "error")

    def __init__(self, batch: List[Tuple[ScalerFuture, Optional[Message]]], graph: Optional[Message],
                 waiting: int) -> None:
        self.batch = batch
        self.graph = graph
        self.waiting = waiting
        self.error: Optional[BaseException] = None


def _settle(future: ScalerFuture, action: Callable[[], Any]) -> None:
    try:
        action()
    except InvalidStateError:
        pass  # cancelled by the user in the meantime


def _remote_exception(payload: Any, traceback_text: str) -> BaseException:
    import pickle
    try:
        exc = pickle.loads(payload)
        if not isinstance(exc, BaseException):
            raise TypeError("not an exception")
    except Exception as error:
        return TaskExceptionNotSerializableError("the task failed and its exception could not be rebuilt "
                                                 "(%r):\n%s" % (error, traceback_text))
    exc.__cause__ = RemoteTraceback(traceback_text)
    return exc


class _Link(Handler):
    def __init__(self, agent: ClientAgent, is_scheduler: bool) -> None:
        self.agent = agent
        self.is_scheduler = is_scheduler
        if is_scheduler:  # results read together are settled in one call (see Handler.batch_types)
            self.batch_types = frozenset((TaskResult,))

    def batch_received(self, conn: Connection, msgs: List[Message]) -> None:
        if self.is_scheduler:
            self.agent.scheduler_results(conn, msgs)
        else:
            super().batch_received(conn, msgs)

    def connection_open(self, conn: Connection) -> None:
        if self.is_scheduler:
            self.agent.scheduler_open(conn)
        else:
            self.agent.storage_open(conn)

    def message_received(self, conn: Connection, msg: Message) -> None:
        if self.is_scheduler:
            self.agent.scheduler_message(conn, msg)
        else:
            self.agent.storage_message(conn, msg)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        self.agent.link_closed(conn, reason, self.is_scheduler)


__all__ = ["ClientAgent", "Waiter", "RemoteTraceback"]
