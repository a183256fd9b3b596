"""The processor: a child of the worker agent that runs user code, one task at a time.

It talks to its agent over a socketpair with blocking reads (it has nothing else to do
between tasks) and keeps the deserialised functions and objects it was sent, so a
function crosses the network once per worker, not once per task. It dies with its agent
(lifeline), and the agent replaces it when it dies.
"""

import collections
import gc
import importlib
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from ..client.serializer import DefaultSerializer
from ..io import shm
from ..io.connection import BlockingChannel
from ..io.fd_connection import FdChannel
from ..protocol.call import call_arguments, read_call
from ..protocol.messages import (FLAG_PROFILE, FLAG_STREAM_OUTPUT, STATUS_CANCELLED, STATUS_FAILED,
                                 STATUS_MISSING_OBJECT, STATUS_NOT_SERIALIZABLE, STATUS_OK, ProcessorCancel, ProcessorDropObjects,
                                 ProcessorObject, ProcessorObjectShm, ProcessorReady, ProcessorResultShm,
                                 ProcessorWaiting, ProcessorTask, TaskResult)
from ..utility import task_context
from ..utility.cpu_policy import processor_policy
from ..utility.exceptions import TaskExitError
from ..utility.process import rss_bytes, watch_lifeline
from ..utility.serialization import BytesSerializer, dumps_result, payload_size
from . import cooperative_wait
from .task_output import STDERR, STDOUT, TaskOutputStream

logger = logging.getLogger(__name__)
SCHEDULER_ADDRESS_ENV = "SCALER_SCHEDULER_ADDRESS"


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
    def __init__(self, channel: BlockingChannel, gc_interval: float, trim_threshold: int) -> None:
        self.channel = channel
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

        Before each task, whatever the agent has sent meanwhile is read without blocking,
        so a cancel for a task still waiting here is seen before that task would start.
        (Right after a blocking receive, only what it brought: asking the socket again at
        once costs a system call and an exception per task and finds nothing.)
        """
        channel = self.channel
        pending = self.pending
        task_context.wait_hook = self.wait_for
        task_context.block_hook = self.block_until
        task_context.wake = self._wake
        try:
            while True:
                woke = not pending
                if woke:
                    if self.profiler is not None:
                        self.profiler.waited()
                    self._handle(channel.recv())
                for msg in channel.recv_ready(poll=not woke):
                    self._handle(msg)
                if pending:
                    self._run_one(pending.popleft())
        except (EOFError, OSError):
            return
        finally:
            task_context.wait_hook = task_context.block_hook = task_context.wake = None

    def _handle(self, msg: Any) -> None:
        kind = type(msg)
        if kind is ProcessorTask:
            self.pending.append(msg)
        elif kind is ProcessorObject:
            if self.profiler is not None:
                self.profiler.invalidate()  # its bytes are the processor's growth, not the next task's
            self.raw[msg.object_id] = msg.payload
            self.loaded.pop(msg.object_id, None)
            if len(msg.payload) >= shm.SHM_MIN_BYTES:
                shm.STATS["socket_objects"] += 1
        elif kind is ProcessorObjectShm:
            if self.profiler is not None:
                self.profiler.invalidate()
            self.loaded.pop(msg.object_id, None)
            self.raw.pop(msg.object_id, None)
            fd = self.channel.take_fd() if isinstance(self.channel, FdChannel) else None
            if fd is None:
                logger.error("object %s came without its descriptor", msg.object_id.hex())
                return  # the task that needs it fails with STATUS_MISSING_OBJECT
            try:
                mapping = shm.map_readonly(fd, msg.offset + msg.size)
            except (OSError, ValueError) as exc:
                logger.error("cannot map object %s: %s", msg.object_id.hex(), exc)
                return
            finally:
                os.close(fd)
            self.raw[msg.object_id] = memoryview(mapping)[msg.offset:msg.offset + msg.size]
            shm.STATS["shm_objects"] += 1
        elif kind is ProcessorCancel:
            self.cancelled.add(msg.task_id)
        elif kind is ProcessorDropObjects:
            for object_id in msg.object_ids:
                self.raw.pop(object_id, None)
                self.loaded.pop(object_id, None)

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
        self._send_result(result)
        self._housekeeping()

    def _send_result(self, result: Any) -> None:
        """A big result goes to the agent as a sealed memfd (its one copy), not through the socket."""
        channel = self.channel
        if (result.status == STATUS_OK and isinstance(channel, FdChannel)
                and payload_size(result.payload) >= shm.SHM_MIN_BYTES):
            payload = result.payload
            try:
                segment = shm.make_sealed(payload if type(payload) is list else [payload])
            except shm.ShmError as exc:
                logger.debug("sending a result through the socket: %s", exc)
            else:
                try:
                    channel.send_with_fd(ProcessorResultShm(result.task_id, segment.token, result.detail), segment.fd)
                finally:
                    segment.close()
                shm.STATS["shm_results"] += 1
                return
        channel.send(result)

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
        ``timeout`` passes, run here the tasks the agent sends that outrank the waiting one
        (:meth:`block_until`)."""
        if not cooperative_wait.in_task_thread():
            cooperative_wait._standard_wait([future], timeout)  # a thread of the task's own: it cannot run tasks
            return
        with cooperative_wait.FutureWaiter([future], self._wake) as waiter:
            self.block_until(lambda: waiter.pending == 0, timeout)

    def block_until(self, ready: Callable[[], bool], timeout: Optional[float]) -> None:
        """Block the running task until ``ready()`` or ``timeout``, running meanwhile the
        tasks the agent sends that outrank it; whatever may make ``ready()`` true must call
        :meth:`_wake` (a ``FutureWaiter`` does, for the futures it watches).

        Its children have its priority + 1, so they run on top of it instead of queueing
        behind it: a waiting parent never holds the only slot its children need.
        """
        if ready():
            return  # nothing to tell the agent
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
                ready_fds = connection_wait([channel.sock, self.wake_reader], remaining)
                if self.wake_reader in ready_fds:
                    try:
                        os.read(self.wake_reader, 4096)
                    except BlockingIOError:
                        pass
                if channel.sock in ready_fds:
                    try:
                        messages = channel.recv_ready() or [channel.recv()]
                    except (EOFError, OSError):
                        os._exit(1)  # the agent is gone: nobody wants these results
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
        # A temporary object (a large argument, a graph node's input) stays raw until the agent
        # drops it: other tasks sent here may read it too.
        payload = self.raw.pop(object_id, None) if keep else self.raw.get(object_id)
        if payload is None:
            raise _MissingObject(object_id)
        value = serializer.deserialize(payload)
        if keep:
            self.loaded[object_id] = value
        return value

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
             "--trim-threshold": int, "--logging-level": str, "--scheduling": str}

    def __init__(self, argv: List[str]) -> None:
        self.lifeline_fd, self.channel_fd, self.preload = -1, None, None
        self.gc_interval, self.trim_threshold, self.logging_level = 30.0, 1 << 30, "INFO"
        self.scheduling = ""  # "normal": leave the SCHED_BATCH the agent may have had when it started us
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
    if args.scheduling == "normal":
        processor_policy()  # before any thread starts or user code runs (see utility/cpu_policy.py)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when we stop
    watch_lifeline(args.lifeline_fd, lambda: os._exit(1))
    cooperative_wait.install()  # before any user code: see its module doc
    logging.basicConfig(level=getattr(logging, args.logging_level.upper(), logging.INFO), stream=sys.stderr,
                        format="[%(levelname)s]%(asctime)s: processor[" + str(os.getpid()) + "]: %(message)s")
    sock = socket.socket(fileno=args.channel_fd)
    channel = FdChannel(sock) if shm.available() else BlockingChannel(sock)
    if args.preload:
        try:
            run_preload(args.preload)
        except BaseException as exc:  # noqa: B902
            text = "preload %r failed:\n%s" % (args.preload, "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))
            try:
                channel.send(ProcessorReady(os.getpid(), text))  # the agent logs it, once
            except OSError:
                logger.error("%s", text)
            return 3
    try:
        channel.send(ProcessorReady(os.getpid(), ""))
    except OSError:
        return 1  # the agent died while we started: nobody to serve, nothing to report
    Processor(channel, args.gc_interval, args.trim_threshold).serve()
    return 0


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
