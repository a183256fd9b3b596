"""The processor: a child of the worker agent that runs user code, one task at a time.

It gets its tasks from the scheduler and sends their results back over a connection of its
own (the scheduler keeps the worker's pipeline: ``scheduler/worker_host.py``), and talks to
its agent over a socketpair: the objects its tasks need come that way (fetched by the agent),
and big results go that way to be stored. Both are read with blocking calls (it has nothing
else to do between tasks). It keeps the deserialised functions and objects it was sent, so
a function crosses the network once per worker, not once per task. It dies with its agent
(lifeline), and the agent replaces it when it dies.
"""

import collections
import gc
import importlib
import logging
import os
import pickle
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from ..client.serializer import DefaultSerializer
from ..io import shm
from ..io.address import connectable_host, parse_address
from ..io.connection import BlockingChannel, TlsChannel
from ..io.dial import DialError, dial
from ..io.fd_connection import FdChannel
from ..protocol.call import call_arguments, graph_result_id, read_call
from ..protocol.framing import FrameReader
from ..protocol.messages import (FLAG_KEEP_RESULT, FLAG_PROFILE, FLAG_STREAM_OUTPUT, ROLE_WORKER, STATUS_CANCELLED,
                                 STATUS_FAILED, STATUS_MISSING_OBJECT, STATUS_NOT_SERIALIZABLE, STATUS_OK,
                                 STATUS_OK_OBJECT, ProcessorCancel, ProcessorConnect, ProcessorDial,
                                 ProcessorDropObjects, ProcessorObject, ProcessorObjectShm, ProcessorReady,
                                 ProcessorStore, ProcessorTask, ProcessorWaiting, TaskResult)
from ..utility import task_context
from ..utility.exceptions import TaskExitError
from ..utility.process import rss_bytes, watch_lifeline
from ..utility.serialization import BytesSerializer, dumps_result, payload_size
from . import cooperative_wait
from .task_output import STDERR, STDOUT, TaskOutputStream

logger = logging.getLogger(__name__)
SCHEDULER_ADDRESS_ENV = "SCALER_SCHEDULER_ADDRESS"
INLINE_RESULT_LIMIT = 64 * 1024  # results above this go to object storage, and the scheduler gets their id
DIAL_TIMEOUT_SECONDS = 10.0
# A task's object that is not here yet is on its way from the agent (the scheduler sends a task
# only once the agent has passed its objects on); past this long with nothing from the agent,
# the task fails as missing its object.
OBJECT_WAIT_SECONDS = 30.0
DIAL_FAILED_EXIT = 4
SCHEDULER_LEFT_EXIT = 5  # its connection to the scheduler ended (the agent starts another)


class _MissingObject(Exception):
    pass


def run_preload(spec: str) -> None:
    from ..config.preload import PreloadError, parse_preload
    module_name, function, args, kwargs = parse_preload(spec)
    logger.info("preloading: %s with args %r and kwargs %r", spec, args, kwargs)
    module = importlib.import_module(module_name)
    if function is not None:
        target = getattr(module, function, None)
        if not callable(target):
            raise PreloadError("preload %r: %s has no callable %r" % (spec, module_name, function))
        target(*args, **kwargs)


class Processor:
    def __init__(self, channel: BlockingChannel, agent: BlockingChannel, gc_interval: float,
                 trim_threshold: int) -> None:
        self.channel = channel  # the scheduler: tasks in, results out
        self.agent = agent  # the agent: objects in, results to store out
        self.unavailable: Set[bytes] = set()  # objects that came but could not be mapped
        self._poller = select.poll()
        self._poller.register(channel.sock, select.POLLIN)
        self._poller.register(agent.sock, select.POLLIN)
        self._agent_fd = agent.sock.fileno()
        self._agent_poller = select.poll()
        self._agent_poller.register(agent.sock, select.POLLIN)
        self.raw: Dict[bytes, Any] = {}  # object id -> payload bytes, until first use
        self.loaded: Dict[bytes, Any] = {}  # object id -> deserialised object
        self.gc_interval = gc_interval
        self.trim_threshold = trim_threshold
        self.last_gc = time.monotonic()
        self.default_serializer = DefaultSerializer()
        self.profiler: Any = None  # a TaskProfiler, made when the first profiled task arrives
        self.pending: Deque[Any] = collections.deque()  # tasks received, not started, in arrival order
        self.cancelled: Set[bytes] = set()  # of those, the ones to skip
        # A task waiting for its sub-tasks sleeps on the channel and on this pipe, which a
        # done-callback of the awaited future writes to (from the client's I/O thread).
        self.process_streams = (sys.stdout, sys.stderr)  # restored around tasks that do not stream
        self.wake_reader, self.wake_writer = os.pipe()
        os.set_blocking(self.wake_reader, False)
        os.set_blocking(self.wake_writer, False)

    def serve(self) -> None:
        """Run tasks in arrival order, each result sent as soon as it exists.

        Before each task, whatever the scheduler and the agent have sent meanwhile is read
        without blocking (one ``poll`` for both), so a cancel for a task still waiting here
        is seen before that task would start. (Right after a blocking wait, only what it
        brought: asking again at once costs system calls and finds nothing.)
        """
        channel = self.channel
        pending = self.pending
        handle = self._handle
        task_context.wait_hook = self.wait_for
        task_context.block_hook = self.block_until
        task_context.wake = self._wake
        try:
            while True:
                if not pending:
                    if self.profiler is not None:
                        self.profiler.waited()
                    self._receive(None)
                else:
                    for msg in channel.recv_ready(poll=False):
                        handle(msg)
                    self._receive(0)
                if pending:
                    self._run_one(pending.popleft())
        except (EOFError, OSError):
            return
        finally:
            task_context.wait_hook = task_context.block_hook = task_context.wake = None

    def _receive(self, timeout_ms: Optional[int]) -> None:
        """Wait up to ``timeout_ms`` (None: for ever) for either peer, and take what came: the
        agent's first (objects before the tasks that read them). EOFError when one is gone."""
        channel = self.channel
        if channel.buffered():
            events: Any = ((channel.sock.fileno(), select.POLLIN),)
        else:
            events = self._poller.poll(timeout_ms)
        from_scheduler = False
        for fd, _ in events:
            if fd == self._agent_fd:
                for msg in self.agent.recv_ready(readable=True) or [self.agent.recv()]:
                    self._handle(msg)
            else:
                from_scheduler = True
        if from_scheduler:
            for msg in channel.recv_ready(readable=True) or [channel.recv()]:
                self._handle(msg)

    def _handle(self, msg: Any) -> None:
        kind = type(msg)
        if kind is ProcessorTask:
            self.pending.append(msg)
        elif kind is ProcessorObject:
            if self.profiler is not None:
                self.profiler.invalidate()  # its bytes are the processor's growth, not the next task's
            self.raw[msg.object_id] = msg.payload
            self.loaded.pop(msg.object_id, None)
            self.unavailable.discard(msg.object_id)
            if len(msg.payload) >= shm.SHM_MIN_BYTES:
                shm.STATS["socket_objects"] += 1
        elif kind is ProcessorObjectShm:
            if self.profiler is not None:
                self.profiler.invalidate()
            self.loaded.pop(msg.object_id, None)
            self.raw.pop(msg.object_id, None)
            fd = self.agent.take_fd() if isinstance(self.agent, FdChannel) else None
            if fd is None:
                logger.error("object %s came without its descriptor", msg.object_id.hex())
                self.unavailable.add(msg.object_id)  # the task that needs it fails with STATUS_MISSING_OBJECT
                return
            try:
                mapping = shm.map_readonly(fd, msg.offset + msg.size)
            except (OSError, ValueError) as exc:
                logger.error("cannot map object %s: %s", msg.object_id.hex(), exc)
                self.unavailable.add(msg.object_id)
                return
            finally:
                os.close(fd)
            self.unavailable.discard(msg.object_id)
            self.raw[msg.object_id] = memoryview(mapping)[msg.offset:msg.offset + msg.size]
            shm.STATS["shm_objects"] += 1
        elif kind is ProcessorCancel:
            # Only for a task still waiting here: the scheduler cannot know whether this one
            # has already run (its result is then dropped there), and a cancel kept for a task
            # that never comes would be kept for ever.
            task_id = msg.task_id
            if any(task.task_id == task_id for task in self.pending):
                self.cancelled.add(task_id)
        elif kind is ProcessorDropObjects:
            for object_id in msg.object_ids:
                self.raw.pop(object_id, None)
                self.loaded.pop(object_id, None)
                self.unavailable.discard(object_id)  # fetched again later, it is awaited, not failed at once

    def _run_one(self, task: Any) -> None:
        if task.task_id in self.cancelled:
            self.cancelled.discard(task.task_id)
            self.channel.send(TaskResult(task.task_id, STATUS_CANCELLED, b"", "cancelled"))
            return
        previous = task_context.enter(task.task_id, task.priority)
        streams = self._redirect_output(task)
        try:
            if task.flags & FLAG_PROFILE:
                mark = self._profiler().begin()
            else:
                mark = None
                if self.profiler is not None:
                    self.profiler.invalidate()  # whatever this task grows is not the next profiled one's
            result = self.run(task, mark)
        finally:
            task_context.restore(previous)
            if streams is not None:
                self._restore_output(streams)
        if result.status == STATUS_OK and (task.flags & FLAG_KEEP_RESULT
                                           or payload_size(result.payload) > INLINE_RESULT_LIMIT):
            # (the big payload is freed once the scheduler has its answer, not before: freeing
            # 200 MB takes tens of ms, which the result would wait for)
            self.channel.send(self._store_result(task, result))
        else:
            self.channel.send(result)
        result = None
        self._housekeeping()

    def _store_result(self, task: Any, result: Any) -> Any:
        """Hand a result to the agent to put into object storage (a graph node's under the id
        its dependents read, ``FLAG_KEEP_RESULT``), and answer the scheduler with that id at
        once: the agent tells the scheduler how the put went, and the scheduler announces the
        result only then. So the next task starts now, not after the put. A big one goes to
        the agent as a sealed memfd (its one copy), not through the socket."""
        object_id = graph_result_id(task.task_id) if task.flags & FLAG_KEEP_RESULT else os.urandom(32)
        payload = result.payload
        agent = self.agent
        if isinstance(agent, FdChannel) and payload_size(payload) >= shm.SHM_MIN_BYTES:
            try:
                segment = shm.make_sealed(payload if type(payload) is list else [payload])
            except shm.ShmError as exc:
                logger.debug("storing a result through the socket: %s", exc)
            else:
                try:
                    agent.send_with_fd(ProcessorStore(object_id, task.owner_id, segment.token, b""), segment.fd)
                finally:
                    segment.close()
                shm.STATS["shm_results"] += 1
                return TaskResult(task.task_id, STATUS_OK_OBJECT, object_id, result.detail)
        agent.send(ProcessorStore(object_id, task.owner_id, "", payload))
        return TaskResult(task.task_id, STATUS_OK_OBJECT, object_id, result.detail)

    def _redirect_output(self, task: Any) -> Optional[Tuple[Any, Any]]:
        """Point ``sys.stdout``/``sys.stderr`` at the task's client (stream_output), or back at
        the worker's for a task that does not stream but runs nested inside one that does.
        Returns what to restore, or ``None`` when nothing changed."""
        if task.flags & FLAG_STREAM_OUTPUT:
            send = self.channel.send
            new = (TaskOutputStream(task.task_id, STDOUT, send), TaskOutputStream(task.task_id, STDERR, send))
        elif type(sys.stdout) is TaskOutputStream or type(sys.stderr) is TaskOutputStream:  # (an ABC's isinstance is slow)
            new = self.process_streams
        else:
            return None
        old = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = new
        return old

    @staticmethod
    def _restore_output(old: Tuple[Any, Any]) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, TaskOutputStream):
                stream.flush()  # before the result: the client sees the output first
        sys.stdout, sys.stderr = old

    def wait_for(self, future: Any, timeout: Optional[float]) -> None:
        """The running task blocks on ``future`` (a task it submitted): until it is done, or
        ``timeout`` passes, run here the tasks the scheduler sends that outrank the waiting one
        (:meth:`block_until`)."""
        if not cooperative_wait.in_task_thread():
            cooperative_wait._standard_wait([future], timeout)  # a thread of the task's own: it cannot run tasks
            return
        with cooperative_wait.FutureWaiter([future], self._wake) as waiter:
            self.block_until(lambda: waiter.pending == 0, timeout)

    def block_until(self, ready: Callable[[], bool], timeout: Optional[float]) -> None:
        """Block the running task until ``ready()`` or ``timeout``, running meanwhile the
        tasks the scheduler sends that outrank it; whatever may make ``ready()`` true must call
        :meth:`_wake` (a ``FutureWaiter`` does, for the futures it watches).

        Its children have its priority + 1, so they run on top of it instead of queueing
        behind it: a waiting parent never holds the only slot its children need.
        """
        if ready():
            return  # nothing to tell the scheduler
        task_id, priority = task_context.task_id, task_context.priority
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self.channel
        # Imported here, not at the top: multiprocessing pulls in tempfile, shutil, bz2, lzma...,
        # ~10 ms of every processor's start-up for what only nested tasks use.
        from multiprocessing.connection import wait as connection_wait
        channel.send(ProcessorWaiting(task_id, True))
        try:
            while not ready():
                # The deadline first: wait(fs, timeout=0) polls, it does not run children.
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                task = self._take_outranking(priority)
                if task is not None:
                    self._run_one(task)
                    continue
                if self.profiler is not None:
                    self.profiler.waited()
                if channel.buffered():
                    ready_fds = [channel.sock]
                else:
                    ready_fds = connection_wait([channel.sock, self.agent.sock, self.wake_reader], remaining)
                if self.wake_reader in ready_fds:
                    try:
                        os.read(self.wake_reader, 4096)
                    except BlockingIOError:
                        pass
                for peer in (self.agent, channel):  # the agent's first: objects before the tasks that read them
                    if peer.sock in ready_fds:
                        try:
                            messages = peer.recv_ready(readable=True) or [peer.recv()]
                        except (EOFError, OSError):
                            os._exit(1)  # the scheduler or the agent is gone: nobody wants these results
                        for msg in messages:
                            self._handle(msg)
        finally:
            channel.send(ProcessorWaiting(task_id, False))

    def _take_outranking(self, priority: int) -> Any:
        """The first-arrived of the highest-priority pending tasks, if it outranks ``priority``."""
        best = None
        for task in self.pending:
            if task.priority > priority and (best is None or task.priority > best.priority):
                best = task
        if best is not None:
            self.pending.remove(best)
        return best

    def _wake(self) -> None:
        try:
            os.write(self.wake_writer, b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (the pipe is full), or shutting down

    def _object(self, object_id: bytes, serializer: Any, keep: bool = True) -> Any:
        try:
            return self.loaded[object_id]
        except KeyError:
            pass
        if object_id not in self.raw:
            self._await_object(object_id)
        # A temporary object (a large argument, a graph node's input) stays raw until the
        # scheduler drops it: other tasks sent here may read it too.
        payload = self.raw.pop(object_id, None) if keep else self.raw.get(object_id)
        if payload is None:
            raise _MissingObject(object_id)
        value = serializer.deserialize(payload)
        if keep:
            self.loaded[object_id] = value
        return value

    def _await_object(self, object_id: bytes) -> None:
        """Read the agent's messages until ``object_id`` is here: the task was sent after the
        agent passed it on, but it travels on the other channel and may still be on its way."""
        agent = self.agent
        while object_id not in self.raw and object_id not in self.loaded and object_id not in self.unavailable:
            messages = agent.recv_ready()
            if not messages:
                if not self._agent_poller.poll(int(OBJECT_WAIT_SECONDS * 1000)):
                    return  # nothing from the agent for that long: it is not coming
                messages = agent.recv_ready(readable=True) or [agent.recv()]
            for msg in messages:
                self._handle(msg)

    def run(self, msg: Any, profile: Any = None) -> Any:
        """The task's ``TaskResult``; with a profiler ``begin`` mark, a successful one carries the
        task's measures in its ``detail``."""
        task_id = msg.task_id
        try:
            call = read_call(msg.call)
            if call.serializer_id:
                serializer = self._object(call.serializer_id, self.default_serializer)
                if not isinstance(serializer, BytesSerializer):
                    serializer = self.loaded[call.serializer_id] = BytesSerializer(serializer)
            else:
                serializer = self.default_serializer
            fn = self._object(msg.func_id, serializer)
            args, kwargs = call_arguments(call, serializer.deserialize,
                                          lambda object_id, temporary: self._object(object_id, serializer,
                                                                                    keep=not temporary))
        except _MissingObject as exc:
            return TaskResult(task_id, STATUS_MISSING_OBJECT, b"", "object %s was not available on the worker"
                              % exc.args[0].hex())
        except BaseException as exc:  # noqa: B902 - a broken argument fails only its task
            return self._failure(task_id, exc)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: B902 - SystemExit in a task fails the task, not the worker
            return self._failure(task_id, exc)
        args = kwargs = None  # type: ignore[assignment]  # free big arguments before pickling the result
        try:
            payload = dumps_result(result) if serializer is self.default_serializer else serializer.serialize(result)
        except BaseException as exc:  # noqa: B902
            return self._failure(task_id, exc)
        return TaskResult(task_id, STATUS_OK, payload, "" if profile is None else self.profiler.end_detail(profile))

    def _profiler(self) -> Any:
        if self.profiler is None:
            from .profiling import TaskProfiler
            self.profiler = TaskProfiler()
        return self.profiler

    @staticmethod
    def _failure(task_id: bytes, exc: BaseException) -> Any:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt...: must not end the caller's program
            exc = TaskExitError("the task raised %s%s" % (type(exc).__name__, "(%s)" % exc if str(exc) else ""))
        try:
            import cloudpickle
            payload = cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(payload)  # an exception that pickles but cannot be rebuilt is still unusable
        except Exception:
            return TaskResult(task_id, STATUS_NOT_SERIALIZABLE, b"", "%s: %s\n%s" % (type(exc).__name__, exc, text))
        return TaskResult(task_id, STATUS_FAILED, payload, text)

    def _housekeeping(self) -> None:
        if self.gc_interval <= 0:
            return
        now = time.monotonic()
        if now - self.last_gc >= self.gc_interval:
            self.last_gc = now
            gc.collect()
            if self.trim_threshold >= 0 and rss_bytes() >= self.trim_threshold:
                _malloc_trim()


def _malloc_trim() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


class _Arguments:
    """The processor's command line, written by its agent: ``--flag value`` pairs."""

    FLAGS = {"--lifeline-fd": int, "--channel-fd": int, "--preload": str, "--gc-interval": float,
             "--trim-threshold": int, "--logging-level": str}

    def __init__(self, argv: List[str]) -> None:
        self.lifeline_fd, self.channel_fd, self.preload = -1, None, None
        self.gc_interval, self.trim_threshold, self.logging_level = 30.0, 1 << 30, "INFO"
        if len(argv) % 2:
            raise SystemExit("scaler processor: expected --flag value pairs, got %r" % (argv,))
        for flag, text in zip(argv[0::2], argv[1::2]):
            kind = self.FLAGS.get(flag)
            if kind is None:
                raise SystemExit("scaler processor: unknown flag %r (started by a worker agent only)" % flag)
            try:
                setattr(self, flag[2:].replace("-", "_"), kind(text))
            except ValueError:
                raise SystemExit("scaler processor: %s: bad value %r" % (flag, text)) from None
        if self.channel_fd is None:
            raise SystemExit("scaler processor: --channel-fd is required")


def main(argv: Optional[List[str]] = None) -> int:
    # Not argparse: a processor is started by its agent only, and importing argparse and
    # building a parser is a few ms of every processor's start-up.
    args = _Arguments(sys.argv[1:] if argv is None else list(argv))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when we stop
    watch_lifeline(args.lifeline_fd, lambda: os._exit(1))
    cooperative_wait.install()  # before any user code: see its module doc
    logging.basicConfig(level=getattr(logging, args.logging_level.upper(), logging.INFO), stream=sys.stderr,
                        format="[%(levelname)s]%(asctime)s: processor[" + str(os.getpid()) + "]: %(message)s")
    sock = socket.socket(fileno=args.channel_fd)
    agent = FdChannel(sock) if shm.available() else BlockingChannel(sock)
    if args.preload:
        try:
            run_preload(args.preload)
        except BaseException as exc:  # noqa: B902
            text = "preload %r failed:\n%s" % (args.preload, "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))
            try:
                agent.send(ProcessorReady(os.getpid(), text))  # the agent logs it, once
            except OSError:
                logger.error("%s", text)
            return 3
    early = []  # what the agent sent before the dial (objects meant for the processor before us...)
    try:
        agent.send(ProcessorReady(os.getpid(), ""))
        dial_msg = agent.recv()
        while type(dial_msg) is not ProcessorDial:
            early.append(dial_msg)
            dial_msg = agent.recv()
    except (EOFError, OSError):
        return 1  # the agent died while we started: nobody to serve, nothing to report
    try:
        scheduler = join_scheduler(dial_msg)
    except (DialError, TimeoutError, ValueError, OSError) as exc:
        logger.error("cannot join the scheduler: %s", exc)
        return DIAL_FAILED_EXIT
    processor = Processor(scheduler, agent, args.gc_interval, args.trim_threshold)
    for msg in early:  # in order: each descriptor goes with its own message
        processor._handle(msg)
    processor.serve()
    return SCHEDULER_LEFT_EXIT


def join_scheduler(msg: Any) -> BlockingChannel:
    """Connect to the scheduler as the agent's ``ProcessorDial`` says, and say whose processor
    this is: the scheduler sends this worker's tasks here from then on."""
    address = connectable_host(parse_address(msg.address))
    reader = FrameReader(0)
    sock = dial(address, ROLE_WORKER, msg.auth_key or None, msg.tls_ca or None, DIAL_TIMEOUT_SECONDS, reader,
                "the scheduler at %s" % msg.address)
    sock.settimeout(None)  # from now on it waits for tasks: for as long as there are none
    channel = (TlsChannel if address.is_tls else BlockingChannel)(sock, reader=reader)
    channel.send(ProcessorConnect(msg.worker_id, msg.token, os.getpid()))
    return channel


def main_forked(argv: List[str], env: Dict[str, str]) -> int:
    """:func:`main`, in a child forked from its agent (``utility.process.fork_child``) rather
    than started as a new interpreter: first undo what the agent's process set up that a
    fresh ``python -m ...processor`` would not have."""
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [__file__, *argv]
    sys.modules["__main__"] = sys.modules[__name__]  # as under -m: a task's __main__ is the processor
    return main(argv)  # (fork_child has undone the agent's logging set-up)


if __name__ == "__main__":
    sys.exit(main())
