"""``Client``: submit Python functions to a scaler cluster and get futures back."""

import itertools
import logging
import os
import struct
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Tuple

try:
    from _blake2 import blake2b  # what hashlib.blake2b is; importing hashlib also loads OpenSSL (~2 ms)
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

from ..protocol.call import INLINE_LIMIT, build_call, graph_node_call, graph_result_id
from ..protocol.handshake import normalize_key
from ..protocol.messages import FLAG_NEEDS_OBJECTS, FLAG_PROFILE, FLAG_STREAM_OUTPUT, GraphSubmit, TaskSubmit, pack_indices
from ..utility.exceptions import ClientQuitException, MissingObjects
from ..utility import task_context
from ..utility.process import AUTH_KEY_ENV
from ..utility.serialization import (BytesSerializer, cloudpickle_dump, dump_chunks, dumps_arguments, loads_payload,
                                     payload_size)
from .agent import ClientAgent, Waiter
from .binding import check_call
from .future import ScalerFuture, wait_all
from .object_reference import ObjectReference
from .serializer import DefaultSerializer, Serializer

if TYPE_CHECKING:
    from ..utility.graph import GraphPlan

logger = logging.getLogger(__name__)

SUBMIT_BATCH = 1000  # tasks handed to the I/O thread at once by map
# A map's first batch is this small, and each next one twice the last, up to SUBMIT_BATCH:
# the cluster starts on the first tasks while the client builds the rest (a first batch of
# 1000 no-op tasks reached the workers 20-40 ms after the map began).
SUBMIT_FIRST = 64
SCHEDULER_ADDRESS_ENV = "SCALER_SCHEDULER_ADDRESS"
TLS_CA_ENV = "SCALER_TLS_CA"  # set by a worker for the tasks it runs, when it was given a CA
_SERIALIZER_TAG = b"serializer"


class Client:
    """A connection to a scheduler.

    ``address`` may be omitted inside a task: the client then joins the scheduler that runs
    the task. ``auth_key`` (else the key in ``auth_key_file``, a file only its owner may read,
    else the ``SCALER_AUTH_KEY`` environment variable) must match the scheduler's when it has one.
    A ``tls://`` scheduler's certificate is verified against ``tls_ca`` (a PEM CA file; else
    ``security_config.tls_ca``, else ``SCALER_TLS_CA``), or the system's trusted certificates.
    Use as a context manager, or call :meth:`disconnect`.
    """

    def __init__(self, address: Optional[str] = None, profiling: bool = False, timeout_seconds: float = 60,
                 heartbeat_interval_seconds: float = 2, serializer: Optional[Serializer] = None,
                 stream_output: bool = False, object_storage_address: Optional[str] = None,
                 security_config: Any = None, auth_key: Optional[Any] = None,
                 auth_key_file: Optional[str] = None, tls_ca: Optional[str] = None) -> None:
        if address is None:
            address = os.environ.get(SCHEDULER_ADDRESS_ENV)
            if not address:
                raise ValueError("No scheduler address provided, and not running inside a worker context: "
                                 "pass Client(address='tcp://HOST:PORT')")
        if tls_ca is None:
            tls_ca = getattr(security_config, "tls_ca", None) or os.environ.get(TLS_CA_ENV) or None
        if tls_ca is not None:
            from ..io.tls import check_ca_file
            check_ca_file(tls_ca)  # a CA file that cannot be used is a ValueError here, not at the first dial
        self._tls_ca = tls_ca
        self._address = address
        self._profiling = profiling
        self._timeout_seconds = timeout_seconds
        self._heartbeat_interval_seconds = heartbeat_interval_seconds
        self._stream_output = stream_output
        self._serializer: Serializer = serializer if serializer is not None else DefaultSerializer()
        self._packed = type(self._serializer) is DefaultSerializer
        self._identity = ("Client|%s" % os.urandom(16).hex()).encode()  # random, as a uuid4's hex
        if auth_key is None and auth_key_file:
            from ..config.key_file import read_key_file
            auth_key = read_key_file(auth_key_file)
        self._auth_key = auth_key if auth_key is not None else os.environ.get(AUTH_KEY_ENV)
        self._functions: Dict[int, Tuple[Any, bytes]] = {}  # id(fn) -> (fn, object id)
        self._uploaded: set = set()  # object ids this client has stored (functions, send_object)
        self._serializer_id = b""
        self._task_ids = itertools.count()
        self._task_prefix = os.urandom(8)  # task id = prefix + counter: unique without a syscall each
        self._flags = (FLAG_PROFILE if profiling else 0) | (FLAG_STREAM_OUTPUT if stream_output else 0)
        self._canceller = _FutureLink(self)  # one for every future (not a bound method, ~64 bytes, each)
        self._stopped = False
        self._agent = ClientAgent(address, self._identity, normalize_key(self._auth_key), timeout_seconds,
                                  heartbeat_interval_seconds, object_storage_address, tls_ca)
        self._agent.deserialize = (loads_payload if self._packed
                                   else BytesSerializer(self._serializer).deserialize)
        self._agent.forget_object = self._forget_object
        self._agent.start()
        if not self._packed:  # a custom serializer travels to the workers once
            self._serializer_id = self._object_id(_SERIALIZER_TAG)
            import cloudpickle
            self._put(self._serializer_id, cloudpickle.dumps(self._serializer))
            self._flags |= FLAG_NEEDS_OBJECTS

    # --- identity ---
    @property
    def identity(self) -> bytes:
        return self._identity

    @property
    def scheduler_address(self) -> str:
        return self._address

    def __repr__(self) -> str:
        return "<Client %s -> %s%s>" % (self._identity.decode(), self._address, " (stopped)" if self._stopped else "")

    # --- submitting ---
    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ScalerFuture:
        """Run ``fn(*args, **kwargs)`` on a worker; return its future at once."""
        return self.submit_verbose(fn, args, kwargs)

    def submit_verbose(self, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any],
                       capabilities: Optional[Dict[str, int]] = None, reserialize: bool = False,
                       priority: Optional[int] = None) -> ScalerFuture:
        """``submit`` with explicit ``args``/``kwargs`` and per-task controls.

        ``priority``: higher runs first; equal priorities run in submission order. Default 0,
        or inside a task its own priority + 1 (so nested tasks run before queued top-level ones).
        """
        self._check_open()
        if not callable(fn):
            raise TypeError("fn must be callable, got %r" % (fn,))
        check_call(fn, args, kwargs)  # a call that cannot bind raises TypeError here, as upstream
        func_id = self._function_id(fn)
        batch, puts, needs = [], [], self._base_needs(func_id)
        future = self._task(func_id, tuple(args), dict(kwargs), _capabilities(capabilities), batch, puts, needs,
                            _priority(priority))
        self._send(batch, puts, needs)
        return future

    def map_futures(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                    capabilities: Optional[Dict[str, int]] = None, priority: Optional[int] = None
                    ) -> List[ScalerFuture]:
        """Like ``map`` but returns at once with one future per call (in order)."""
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        return self.starmap_futures(fn, zip(*iterables), capabilities=capabilities, priority=priority)

    def starmap_futures(self, fn: Callable[..., Any], iterable: Iterable[Any],
                        capabilities: Optional[Dict[str, int]] = None, priority: Optional[int] = None
                        ) -> List[ScalerFuture]:
        """``fn(*args)`` for each ``args`` of ``iterable``; returns the futures at once."""
        self._check_open()
        if not callable(fn):
            raise TypeError("fn must be callable, got %r" % (fn,))
        func_id = self._function_id(fn)
        caps = _capabilities(capabilities)
        rank = _priority(priority)
        futures: List[ScalerFuture] = []
        batch: List[Any] = []
        puts: List[Tuple[bytes, Any]] = []
        needs = self._base_needs(func_id)
        started_at = time.monotonic()  # one float for the batch's futures
        limit = SUBMIT_FIRST
        try:
            for args in iterable:
                if not isinstance(args, (tuple, list)):
                    raise TypeError("starmap items must be tuples or lists of arguments, got %r"
                                    % type(args).__name__)
                futures.append(self._task(func_id, tuple(args), {}, caps, batch, puts, needs, rank, started_at))
                if len(batch) >= limit:
                    self._send(batch, puts, needs)
                    batch, puts, needs = [], [], self._base_needs(func_id)
                    started_at = time.monotonic()
                    limit = min(limit * 2, SUBMIT_BATCH)
            if batch:
                self._send(batch, puts, needs)
        except BaseException:
            # An item that cannot be pickled, an iterable that raised, or Ctrl-C, after some
            # batches left: the caller gets none of their futures, so none of their tasks may
            # run unseen. All are cancelled, as a batch may have left as _send was interrupted
            # (a task that never left is only cancelled here: the I/O thread ignores its id).
            for future in futures:
                future.cancel()
            raise
        return futures

    def get(self, graph: Mapping[Hashable, Any], keys: Any, block: bool = True,
            priority: Optional[int] = None) -> Any:
        """Compute ``keys`` of a Dask-style task graph on the cluster.

        ``graph`` maps keys to data or to task tuples ``(callable, arg, ...)``; an argument
        may be a key, a list/tuple/dict nesting keys and literals, or a literal. ``keys`` is
        one key or a (nested) list of keys. Returns their results in the same shape
        (``block=False``: futures in that shape). The graph is checked here first — a
        cycle (``CycleError``, a ``ValueError``), a missing key (``KeyError``), a tuple whose
        head is not callable (``ValueError``) raise before anything is sent — culled to what
        ``keys`` need, and sent to the scheduler in one message; intermediate results go
        from worker to worker through object storage and never come back here.
        """
        self._check_open()
        from ..utility.graph import plan_graph  # graphs only: kept off the import of scaler
        plan = plan_graph(graph, keys)
        rank = _priority(priority)
        futures = self._submit_graph(plan, rank) if plan.nodes else {}
        if not block:
            values: Dict[Hashable, Any] = {}
            for key, value in plan.literal_results.items():
                done: ScalerFuture = ScalerFuture(b"")
                done.set_result(value)
                values[key] = done
            values.update(futures)
            return plan.shape_of(values)
        try:
            results = {key: future.result() for key, future in futures.items()}
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        return plan.shape(results)

    def _submit_graph(self, plan: "GraphPlan", priority: int) -> Dict[Hashable, ScalerFuture]:
        from ..utility.graph import run_node
        run_id = self._function_id(run_node)
        nodes = plan.nodes
        index = {node.key: i for i, node in enumerate(nodes)}
        prefix, counter = self._task_prefix, self._task_ids
        task_ids = [prefix + _COUNTER.pack(next(counter)) for _ in nodes]
        requested = set(plan.requested)
        serialize = self._serializer.serialize
        puts: List[Tuple[bytes, Any]] = []
        needs = self._base_needs(run_id)
        temps: List[bytes] = []
        calls: List[bytes] = []
        deps: List[bytes] = []
        wanted = bytearray()
        for node in nodes:
            function_id = self._function_id(node.function)
            needs.append(function_id)
            template = serialize(node.args)
            big = len(template) > INLINE_LIMIT
            if big:
                object_id = self._new_temp_id()
                puts.append((object_id, template))
                needs.append(object_id)
                temps.append(object_id)
                template = object_id
            inputs = [index[key] for key in node.deps]
            calls.append(graph_node_call(self._serializer_id, function_id, template, big,
                                         [graph_result_id(task_ids[i]) for i in inputs]))
            deps.append(pack_indices(inputs))
            wanted.append(node.key in requested)
        flags = bytes([self._flags | FLAG_NEEDS_OBJECTS]) * len(nodes)
        message = GraphSubmit(task_ids, flags, [run_id] * len(nodes), calls, deps, bytes(wanted), priority)
        futures = {key: ScalerFuture(task_ids[index[key]], self._canceller) for key in plan.requested
                   if key in index}
        if temps:  # large templates: deleted once every requested result is in (all nodes have ended)
            remaining = [len(futures)]

            def ended(_future: Any) -> None:
                remaining[0] -= 1
                if remaining[0] == 0 and not self._stopped:
                    self._agent.call(lambda: self._agent.delete_objects(temps))

            for future in futures.values():
                future.add_done_callback(ended)
        for object_id, blob in puts:
            blob = self._agent.shareable(blob)
            self._agent.call(lambda o=object_id, b=blob: self._agent.put(o, b))
        batch = [(future, None) for future in futures.values()]
        self._agent.call(lambda: self._agent.submit(batch, needs, graph=message))
        return futures

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], capabilities: Optional[Dict[str, int]] = None,
            reserialize: bool = False, priority: Optional[int] = None, progress: bool = False) -> List[Any]:
        """``[fn(*args) for args in zip(*iterables)]`` on the cluster; blocks, returns the results.
        ``progress=True`` draws a progress bar on stderr while waiting, if it is a terminal."""
        return _results(self.map_futures(fn, *iterables, capabilities=capabilities, priority=priority), progress)

    def starmap(self, fn: Callable[..., Any], iterable: Iterable[Any], capabilities: Optional[Dict[str, int]] = None,
                reserialize: bool = False, priority: Optional[int] = None, progress: bool = False) -> List[Any]:
        """``[fn(*args) for args in iterable]`` on the cluster; blocks, returns the results."""
        return _results(self.starmap_futures(fn, iterable, capabilities=capabilities, priority=priority), progress)

    # --- objects ---
    def send_object(self, obj: Any, name: Optional[str] = None) -> ObjectReference:
        """Store ``obj`` once; pass the returned reference to any number of tasks."""
        self._check_open()
        if self._packed:  # the default serializer's pickle, its big buffers not copied (chunks)
            payload: Any = dump_chunks(obj, cloudpickle_dump)
        else:
            payload = self._serializer.serialize(obj)
        size = payload_size(payload)
        object_id = self._object_id(os.urandom(16))
        self._put(object_id, self._agent.shareable(payload))
        label = (name if name is not None else "<%s>" % type(obj).__name__)
        return ObjectReference(label.encode() if isinstance(label, str) else bytes(label), size, object_id)

    def executor(self) -> Any:
        """A ``concurrent.futures.Executor`` on this client (``ScalerExecutor``): code written
        for ``ProcessPoolExecutor`` runs on the cluster. Its ``shutdown`` leaves the client open."""
        from .executor import ScalerExecutor
        return ScalerExecutor(client=self)

    def clear(self) -> None:
        """Cancel this client's unfinished tasks and delete every object it stored, in object
        storage and in the workers' caches."""
        self._check_open()
        waiter = Waiter()
        self._agent.call(lambda: self._agent.cancel_all(waiter))
        waiter.wait(self._timeout_seconds, "cancelling tasks")
        ids = list(self._uploaded)
        self._uploaded.clear()
        self._functions.clear()
        if self._serializer_id:
            self._uploaded.add(self._serializer_id)
            ids.remove(self._serializer_id)
        self._agent.call(lambda: self._agent.delete_objects(ids))
        self._agent.call(self._agent.drop_cached_objects)  # and the workers' deserialised copies

    # --- ending ---
    def disconnect(self) -> None:
        """Cancel this client's unfinished tasks and leave; the cluster keeps running. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._agent.stop()

    close = disconnect

    def shutdown(self) -> None:
        """Ask the scheduler to stop the whole cluster (refused with ValueError if it is protected)."""
        self._check_open()
        waiter = Waiter()
        self._agent.call(lambda: self._agent.request_shutdown(waiter))
        waiter.wait(self._timeout_seconds, "shutting down the scheduler")
        self.disconnect()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    def __del__(self) -> None:
        try:
            if not getattr(self, "_stopped", True):
                self.disconnect()
        except Exception:
            pass

    def __getstate__(self) -> Dict[str, Any]:
        """A pickled client reconnects on unpickling (for tasks that submit tasks)."""
        return {"address": self._address, "profiling": self._profiling, "timeout_seconds": self._timeout_seconds,
                "heartbeat_interval_seconds": self._heartbeat_interval_seconds,
                "stream_output": self._stream_output}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # --- internals ---
    def _check_open(self) -> None:
        if self._stopped:
            raise ClientQuitException("client is already stopped.")
        if self._agent.failure is not None:
            raise self._agent.failure

    def _object_id(self, salt: bytes) -> bytes:
        return blake2b(self._identity + b"\0" + salt, digest_size=32).digest()

    def _put(self, object_id: bytes, payload: Any, wait: bool = True) -> None:
        """Store an object. Waiting reports a refusal here, but is skipped on the I/O thread
        (a done-callback): tasks needing the object wait for its acknowledgement anyway."""
        self._uploaded.add(object_id)
        if not wait or self._agent.on_io_thread():
            self._agent.call(lambda: self._agent.put(object_id, payload))
            return
        waiter = Waiter()
        self._agent.call(lambda: self._agent.put(object_id, payload, waiter))
        try:
            waiter.wait(max(self._timeout_seconds, 60.0), "storing an object")
        except BaseException:
            self._forget_object(object_id)
            raise

    def _forget_object(self, object_id: bytes) -> None:
        """Storage refused or lost it: upload it again next time it is needed."""
        self._uploaded.discard(object_id)
        for key, (_, cached_id) in list(self._functions.items()):
            if cached_id == object_id:
                self._functions.pop(key, None)

    def _function_id(self, fn: Callable[..., Any]) -> bytes:
        cached = self._functions.get(id(fn))
        if cached is not None and cached[0] is fn:
            return cached[1]
        payload = self._serializer.serialize(fn)
        object_id = self._object_id(blake2b(payload, digest_size=32).digest())
        if object_id not in self._uploaded:
            self._put(object_id, payload, wait=False)  # the tasks using it wait for the ack
        self._functions[id(fn)] = (fn, object_id)
        return object_id

    def _base_needs(self, func_id: bytes) -> List[bytes]:
        return [func_id, self._serializer_id] if self._serializer_id else [func_id]

    def _task(self, func_id: bytes, args: Tuple[Any, ...], kwargs: Dict[str, Any], capabilities: str,
              batch: List[Any], puts: List[Tuple[bytes, Any]], needs: List[bytes], priority: int,
              started_at: Optional[float] = None) -> ScalerFuture:
        built = build_call(args, kwargs, self._serializer.serialize, self._new_temp_id, self._serializer_id,
                           ObjectReference, self._reference_id, dumps_arguments if self._packed else None,
                           INLINE_LIMIT)
        flags = self._flags | FLAG_NEEDS_OBJECTS if built.needs_objects else self._flags
        task_id = self._task_prefix + _COUNTER.pack(next(self._task_ids))
        future = ScalerFuture(task_id, self._canceller, started_at)
        if built.objects:
            needs.extend(built.objects)
            if built.temp:
                puts.extend(built.temp)
                future._temp_objects = tuple(object_id for object_id, _ in built.temp)
        batch.append((future, TaskSubmit(task_id, flags, func_id, built.call, capabilities, priority)))
        return future

    def _new_temp_id(self) -> bytes:
        return self._object_id(os.urandom(16))

    def _reference_id(self, reference: ObjectReference) -> bytes:
        if reference.object_id not in self._uploaded:
            raise MissingObjects("%r is not an object of this client (deleted by clear()?)" % (reference,))
        return reference.object_id

    def _send(self, batch: List[Any], puts: List[Tuple[bytes, Any]], needs: List[bytes]) -> None:
        """Hand tasks to the I/O thread, which sends them once every object they need is stored."""
        agent = self._agent
        if not puts and len(batch) <= _SUBMIT_NOW_MAX and agent.submit_now(batch, needs):
            return
        for object_id, blob in puts:
            blob = agent.shareable(blob)
            agent.call(lambda o=object_id, b=blob: agent.put(o, b))
        agent.call(lambda: agent.submit(batch, needs))

    def _cancel_task(self, task_id: bytes) -> None:
        if not self._stopped and self._agent.failure is None:
            self._agent.call(lambda: self._agent.cancel(task_id))


_COUNTER = struct.Struct("<Q")
# A batch up to this size is written by the submitting thread itself when it can be
# (ClientAgent.submit_now); a bigger one (a map) goes through the I/O thread, so building
# the next batch overlaps with sending this one.
_SUBMIT_NOW_MAX = 64


class _FutureLink:
    """What a future of this client calls back: called, it cancels the future's task;
    ``lead`` waits for the future by reading the scheduler connection (``leader.py``)."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def __call__(self, task_id: bytes) -> None:
        self._client._cancel_task(task_id)

    def lead(self, future: ScalerFuture, timeout: Optional[float]) -> Optional[float]:
        return self._client._agent.leader.wait(future, timeout)


def _results(futures: List[ScalerFuture], progress: bool = False) -> List[Any]:
    try:
        if progress:
            from .progress import progress as draw_progress
            draw_progress(futures)
        elif task_context.wait_hook is None:  # (inside a task, result() runs sub-tasks while it waits)
            wait_all(futures)
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _priority(priority: Optional[int]) -> int:
    if priority is None:
        return task_context.nested_priority()
    if type(priority) is not int:  # bool is an int subclass, and a mistake here
        raise TypeError("priority must be an int, got %r" % (priority,))
    if not -2 ** 63 <= priority < 2 ** 63:
        raise ValueError("priority %d is out of range (a signed 64-bit integer)" % priority)
    return priority


def _capabilities(capabilities: Optional[Dict[str, int]]) -> str:
    """The wire text of a task's capabilities, by the rules a worker's are read with
    (``CapabilitiesError``, a ValueError, for anything a worker could never advertise)."""
    if capabilities is None:
        return ""
    from ..config.capabilities import format_capabilities
    return format_capabilities(capabilities)
