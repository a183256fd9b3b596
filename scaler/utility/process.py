"""Starting, running, watching and reaping the framework's own processes.

Children are started as ``python -m <this package>.<module>`` with the module path derived
from ``__name__``, so a copy vendored as ``theirpkg._vendor.scaler`` starts its own
modules. Each child gets the read end of a *lifeline* pipe whose write end only the parent
holds: when the parent dies for any reason the pipe reads EOF and the child stops, so no
process outlives the one that started it.

Both halves live here, once each: the parent's (``spawn_component``: settings as JSON on
the command line, the auth key in the environment) and the child's (``run_main``: parse,
``start_component``, run, exit status; ``run_loop``: the event loop with its stop signals
and lifeline).
"""

import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set


# The configuration (its dataclasses), json and the loader are imported where used: this module is
# imported by every process, and by ``from scaler import SchedulerClusterCombo``.
if TYPE_CHECKING:
    import subprocess

    from ..config.loader import Command, Loaded

PACKAGE = __name__.rsplit(".", 2)[0]  # "scaler", or "theirpkg._vendor.scaler"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT_DIR = PACKAGE_DIR
for _ in PACKAGE.split("."):
    ROOT_DIR = os.path.dirname(ROOT_DIR)

AUTH_KEY_ENV = "SCALER_AUTH_KEY"
DEVNULL = -3  # subprocess.DEVNULL (the same value on every version), without importing subprocess here


def _subprocess() -> Any:
    import subprocess  # imported by the first spawn: this module is on every process's import path
    return subprocess
logger = logging.getLogger(__name__)


def module_path(submodule: str) -> str:
    return "%s.%s" % (PACKAGE, submodule)


def child_environment(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The parent's environment with a PYTHONPATH that finds this package and the parent's modules."""
    env = dict(os.environ)
    paths = [ROOT_DIR]
    for entry in sys.path:
        entry = entry or os.getcwd()
        if entry not in paths and os.path.isdir(entry):
            paths.append(entry)
    if env.get("PYTHONPATH"):
        paths.extend(p for p in env["PYTHONPATH"].split(os.pathsep) if p not in paths)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if extra:
        env.update(extra)
    return env


# The write ends of this process's children's lifelines: a forked child closes them, or a
# sibling's lifeline would stay open for as long as it lives.
_LIFELINES: Set[int] = set()


class Child:
    """A started child process and the write end of its lifeline."""

    def __init__(self, name: str, popen: "subprocess.Popen[bytes]", lifeline_fd: int) -> None:
        self.name = name
        self.popen = popen
        self.lifeline_fd = lifeline_fd
        _LIFELINES.add(lifeline_fd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> Optional[int]:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    # The multiprocessing.Process face (upstream's failure drills reach for these).
    @property
    def exitcode(self) -> Optional[int]:
        """None while running; else the exit status, or -N if signal N ended it (as multiprocessing)."""
        return self.popen.poll()

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until the process ends, or ``timeout`` seconds; never raises on timeout."""
        try:
            self.popen.wait(timeout)
        except _subprocess().TimeoutExpired:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, grace_seconds: float = 5.0, signum: int = signal.SIGTERM) -> Optional[int]:
        """Ask the child to stop, kill it after the grace period, reap it. Idempotent."""
        self.send_signal(signum)
        try:
            code = self.popen.wait(grace_seconds)
        except _subprocess().TimeoutExpired:
            logger.warning("%s (pid %d) did not stop within %.0fs: killing it", self.name, self.pid, grace_seconds)
            self.popen.kill()
            code = self.popen.wait()
        self.close_lifeline()
        return code

    def close_lifeline(self) -> None:
        if self.lifeline_fd >= 0:
            _LIFELINES.discard(self.lifeline_fd)
            try:
                os.close(self.lifeline_fd)
            except OSError:
                pass
            self.lifeline_fd = -1


class ProcessHandle:
    """The ``multiprocessing.Process``-like face of a component started in its own process
    (``Scheduler``, ``Cluster``): ``pid``, ``exitcode``, ``is_alive``, ``join``,
    ``terminate``, ``kill``, and ``shutdown`` (graceful, then killed; reaped)."""

    _child: Optional[Child] = None

    @property
    def pid(self) -> Optional[int]:
        return self._child.pid if self._child else None

    @property
    def exitcode(self) -> Optional[int]:
        return self._child.poll() if self._child else None

    def is_alive(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._child is not None:
            try:
                self._child.popen.wait(timeout)
            except _subprocess().TimeoutExpired:
                pass

    def terminate(self) -> None:
        if self._child is not None:
            self._child.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._child is not None:
            self._child.send_signal(signal.SIGKILL)

    def shutdown(self) -> None:
        if self._child is not None:
            self._child.stop(grace_seconds=10.0)


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(pid: Optional[int] = None) -> float:
    """CPU time (user + system) used so far by process ``pid`` (Linux /proc), or by this
    process and its reaped children when ``pid`` is None (portable). 0.0 where unavailable."""
    if pid is None:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class CpuMeter:
    """CPU use of this process, its reaped children and one live child (a worker agent and
    its processor), in percent of one core since the previous reading.

    A child that exits moves from the live reading to this process's reaped-children time,
    so replacing it keeps the total continuous. Without /proc the live child is not seen.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._child: Optional[int] = None
        self._child_seconds = 0.0  # the live child's time at the previous reading
        self._last_at = clock()
        self._last_seconds = cpu_seconds()

    def percent(self, child_pid: Optional[int] = None) -> float:
        now = self._clock()
        own = cpu_seconds()
        child = cpu_seconds(child_pid) if child_pid is not None else 0.0
        if child_pid == self._child:
            used = own - self._last_seconds + child - self._child_seconds
        else:
            # A new child counts from zero; the old one's whole time has moved into the reaped
            # children's (in ``own``), of which earlier readings already counted _child_seconds.
            used = own - self._last_seconds - self._child_seconds + child
            self._child = child_pid
        elapsed = now - self._last_at
        self._last_at, self._last_seconds, self._child_seconds = now, own, child
        if elapsed <= 0:
            return 0.0
        return max(0.0, 100.0 * used / elapsed)


def spawn(name: str, submodule: str, args: Sequence[str], env: Optional[Dict[str, str]] = None,
          pass_fds: Sequence[int] = (), stdin: Optional[int] = DEVNULL,
          stdout: Optional[int] = None, stderr: Optional[int] = None, start_new_session: bool = False) -> Child:
    """Start ``python -m <package>.<submodule> --lifeline-fd N args...``.

    ``stdout``/``stderr`` are passed to Popen (e.g. a pipe to prefix the child's lines);
    ``start_new_session`` keeps a terminal's Ctrl-C from reaching the child directly, so
    its parent decides the order in which children stop.
    """
    import subprocess

    read_end, write_end = os.pipe()
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", module_path(submodule), "--lifeline-fd", str(read_end), *args],
            env=env if env is not None else child_environment(), pass_fds=(read_end, *pass_fds), stdin=stdin,
            stdout=stdout, stderr=stderr, start_new_session=start_new_session)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return Child(name, popen, write_end)


class ForkedPopen:
    """The part of ``subprocess.Popen``'s face :class:`Child` uses, for a child made by
    :func:`fork_child` (no command line, no pipes: a pid to poll, wait for and signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None
        self.args = ["<forked>"]

    def _reap(self, flags: int) -> Optional[int]:
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped elsewhere (as Popen: the status is lost)
            self.returncode = 0
            return 0
        if pid == self.pid:
            self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def poll(self) -> Optional[int]:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: Optional[float] = None) -> int:
        if timeout is None:
            code = self._reap(0)
            assert code is not None
            return code
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:  # (as Popen.wait with a timeout on POSIX: poll, sleep a little longer each time)
            code = self._reap(os.WNOHANG)
            if code is not None:
                return code
            left = deadline - time.monotonic()
            if left <= 0:
                raise _subprocess().TimeoutExpired(self.args, timeout)
            delay = min(delay * 2, left, 0.05)
            time.sleep(delay)

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


FORK_ENV = "SCALER_FORK"  # "0" (or false, no, off): always start children as new interpreters

# Set by run_main: this interpreter runs one of the package's components as its program. Only
# then may it fork children; a user's program (a NativeWorkerManager run in-process) never is.
_COMPONENT_PROCESS = False


def can_fork() -> bool:
    """Forking is safe here: Linux, a process that runs a component (not a user's program,
    whose files, sockets and library state a child would inherit), one thread (the forked
    child has only the caller's, and a lock another thread held would stay held in it; threads
    a C extension started count too), and not turned off."""
    if not (_COMPONENT_PROCESS and sys.platform.startswith("linux") and hasattr(os, "fork")):
        return False
    if os.environ.get(FORK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return threading.active_count() == 1 and len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _forked_child_reset(*fds: int) -> None:
    """In a forked child: signal handlers as a new interpreter has them (the parent's would act
    on the parent's state), none of the parent's lifeline write ends held, and no logging set
    up (see :func:`_forked_child_logging`)."""
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    for fd in (*_LIFELINES, *fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _LIFELINES.clear()
    _forked_child_logging()


def _forked_child_logging() -> None:
    """Logging as in a new interpreter that imported the same modules: no handlers (the
    parent's are left open, its files are its own), every logger enabled, at its default
    level (a ``dictConfig`` in the parent disables the loggers it does not name)."""
    root = logging.getLogger()
    for logger_ in [root, *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(logger_, logging.Logger):
            continue  # a PlaceHolder
        for handler in list(logger_.handlers):
            if not isinstance(handler, logging.NullHandler):
                logger_.removeHandler(handler)
        logger_.disabled = False
        logger_.propagate = True
        logger_.setLevel(logging.WARNING if logger_ is root else logging.NOTSET)


def _forked_child_stdin() -> None:
    try:
        null = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    if null != 0:
        os.dup2(null, 0)
        os.close(null)


def set_comm(comm: str) -> None:
    """This process's name as ``ps -o comm`` and ``top`` show it (Linux; else nothing)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(comm[:15])
    except OSError:
        pass


def fork_child(name: str, run: Callable[[int], int], comm: str = "") -> Child:
    """Start a child by forking this process: ``run(lifeline_fd)`` runs in it, its result is
    the exit status (the child never returns into the caller's code, nor runs its atexit).

    What a new interpreter costs (30-60 ms of CPU: start-up and imports) is saved; the
    caller forks only where :func:`can_fork` and at a moment it holds nothing the child
    must not: the child keeps the descriptors that were open then (a child of an agent or
    a manager: their event loop's epoll and wake-up pair, their lifeline's read end, log
    files; all close-on-exec, none that keeps a lifeline open). As :func:`spawn`'s
    children, it reads stdin from ``/dev/null``. Its command line is the parent's;
    ``comm`` (15 characters at most) names it for ``ps -o comm``, ``top``...
    """
    for stream in (sys.stdout, sys.stderr):  # or what they buffered would be written twice
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    read_end, write_end = os.pipe()
    # Signals wait until the child has reset its handlers: the parent's, run in the child,
    # would act on the child's copy of the parent's state (and drop the signal).
    blocked = _block_signals()
    try:
        pid = os.fork()
    except BaseException:
        _restore_signals(blocked)
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # the child: it ends here, whatever happens
        try:
            code = 1
            try:
                _forked_child_reset(write_end)
                _restore_signals(blocked)
                _forked_child_stdin()
                if comm:
                    set_comm(comm)
                code = run(read_end)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)  # as the interpreter does at exit
            except BaseException:  # noqa: B902
                try:
                    import traceback
                    traceback.print_exc()
                except BaseException:  # noqa: B902
                    pass
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: B902
                    pass
            os._exit(code & 0xFF if isinstance(code, int) else 1)
        finally:
            os._exit(1)  # (reached only if the above raised: never back into the caller's code)
    _restore_signals(blocked)
    os.close(read_end)
    return Child(name, ForkedPopen(pid), write_end)  # type: ignore[arg-type]


def _block_signals() -> Optional[Any]:
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def _restore_signals(previous: Optional[Any]) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def spawn_component(name: str, submodule: str, config: Any, args: Sequence[str] = (), *,
                    auth_key: Optional[str] = None, pass_fds: Sequence[int] = (), **options: Any) -> Child:
    """Start a component with its config (a dataclass) as ``--config-json`` after ``args``.

    The auth key (``auth_key``, else ``config.auth_key``, which holds the key file's key once
    the config is parsed) goes in the child's environment (``SCALER_AUTH_KEY``), never on its
    command line, which every user of the machine can read. ``options`` are :func:`spawn`'s (``stdout``, ``start_new_session``...).
    """
    import dataclasses
    import json

    key = auth_key or getattr(config, "auth_key", None)
    if hasattr(config, "auth_key"):
        config = dataclasses.replace(config, auth_key=None)
    if hasattr(config, "auth_key_file"):  # already read into the key: the child needs neither
        config = dataclasses.replace(config, auth_key_file=None)
    env = child_environment({AUTH_KEY_ENV: key} if key else None)
    return spawn(name, submodule, [*args, "--config-json", json.dumps(dataclasses.asdict(config))], env=env,
                 pass_fds=pass_fds, **options)


def watch_lifeline(fd: Optional[int], on_parent_death: Callable[[], None]) -> None:
    """Call ``on_parent_death`` (from a daemon thread) when the parent's end of the lifeline closes."""
    if fd is None or fd < 0:
        return

    def wait() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        on_parent_death()

    threading.Thread(target=wait, name="lifeline", daemon=True).start()


def exit_soon_after(seconds: float, code: int = 1) -> None:
    """Hard exit if a graceful stop takes too long (runs on a daemon timer)."""
    timer = threading.Timer(seconds, lambda: os._exit(code))
    timer.daemon = True
    timer.start()


def on_stop_signals(callback: Callable[[int], None]) -> None:
    """SIGINT and SIGTERM call ``callback(signum)`` (main thread only)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, _frame: callback(s))


def stop_all(children: List[Child], grace_seconds: float = 5.0) -> None:
    """Stop children in reverse start order, in parallel within each call: signal all, then reap."""
    for child in reversed(children):
        child.send_signal(signal.SIGTERM)
    for child in reversed(children):
        child.stop(grace_seconds)


def setup_logging(level: str = "INFO", paths: Sequence[str] = ("/dev/stdout",),
                  config_file: Optional[str] = None, name: str = "") -> None:
    """Configure the root logger as upstream does: level, sinks, or a logging.config file."""
    if config_file:
        import logging.config as logging_config
        if config_file.endswith(".json"):
            import json
            with open(config_file) as f:
                logging_config.dictConfig(json.load(f))
        else:
            logging_config.fileConfig(config_file, disable_existing_loggers=False)
        return
    fmt = logging.Formatter("[%(levelname)s]%(asctime)s: " + (name + ": " if name else "") + "%(message)s")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for path in paths:
        if path in ("/dev/stdout", "-"):
            handler: logging.Handler = logging.StreamHandler(sys.stdout)
        elif path == "/dev/stderr":
            handler = logging.StreamHandler(sys.stderr)
        else:
            handler = logging.FileHandler(path)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))


def auth_key_from_env() -> Optional[str]:
    return os.environ.get(AUTH_KEY_ENV) or None


# --------------------------------------------------------------------------------------
# the child's side: one skeleton for every component process


def start_component(config: Any, name: str) -> None:
    """Logging (creating log directories), the event-loop note, the auth key from the environment.

    Until the component installs its own SIGINT/SIGTERM handlers, either signal makes the
    process exit quietly with status 0 (instead of a KeyboardInterrupt traceback, or death
    by SIGTERM while it is still starting).
    """
    def exit_quietly(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_quietly)
    if hasattr(config, "auth_key") and not config.auth_key:
        config.auth_key = auth_key_from_env()
    if not getattr(config, "logging_config_file", None):
        from ..config.components import STREAM_PATHS
        for path in getattr(config, "logging_paths", ()):
            if path not in STREAM_PATHS:
                directory = os.path.dirname(os.path.abspath(path))
                os.makedirs(directory, exist_ok=True)
    setup_logging(config.logging_level, config.logging_paths, config.logging_config_file, name)
    if getattr(config, "event_loop", "builtin") == "uvloop":
        logger.warning("event_loop = uvloop: this build of scaler runs its own selectors-based event loop and does not "
                       "use uvloop; carrying on with the builtin loop")


def run_main(command: "Command", argv: Optional[Sequence[str]], name: str,
             run: Callable[["Loaded"], Optional[int]]) -> int:
    """The ``main`` of every component: parse the command line (a bad value exits with 2),
    ``start_component``, then ``run(loaded)``; its result (None: 0) is the exit status."""
    from ..config.loader import parse_or_exit

    global _COMPONENT_PROCESS
    _COMPONENT_PROCESS = True
    loaded = parse_or_exit(command, argv)
    start_component(loaded.config, name)
    return run(loaded) or 0


def run_loop(loop: Any, stop: Callable[[], None], lifeline_fd: Optional[int] = None, *,
             start: Optional[Callable[[], None]] = None, cleanup: Optional[Callable[[], None]] = None,
             hard_exit_after: Optional[float] = None) -> None:
    """``start()``, run ``loop`` (an ``io.loop.EventLoop``) until it stops, then ``cleanup()``
    and close it.

    SIGINT, SIGTERM and the parent's death (the lifeline) call ``stop`` on the loop's
    thread; ``stop`` ends the loop, at once or after a graceful goodbye. When the parent
    dies, ``hard_exit_after`` seconds bound that goodbye: then the process exits anyway.
    Whatever starts child processes belongs in ``start``: it runs once the signals are
    handled and inside the ``try`` whose ``finally`` is ``cleanup``, so a stop arriving
    at any moment of it is handled as any other (until then a signal ends the process
    with ``SystemExit``, see :func:`start_component`, and would orphan such a child).
    """
    def parent_died() -> None:
        if hard_exit_after is not None:
            exit_soon_after(hard_exit_after)
        loop.call_soon_threadsafe(stop)

    on_stop_signals(lambda _signum: loop.call_soon_threadsafe(stop))
    try:
        if start is not None:
            start()
        # After start(), which may fork children while this process has one thread; a parent
        # that died meanwhile is seen at once (the pipe's end of file stays).
        watch_lifeline(lifeline_fd, parent_died)
        loop.run()
    finally:
        try:
            if cleanup is not None:
                cleanup()
        finally:
            loop.close()
