"""Helpers for the multi-process end-to-end tests: process trees, subprocesses, ports, waits.

Everything here waits with a deadline, and every helper that starts a process registers
it for clean-up, so a failing test leaves nothing behind. Linux only (reads ``/proc``).
"""

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
# What a command-line scheduler, cluster or client started by a test sees: the package, and
# the test modules (whose functions the workers import by name, like any user's module).
DEFAULT_PYTHONPATH = REPO_ROOT + os.pathsep + TESTS_DIR
POLL_SECONDS = 0.02


# --- /proc ---------------------------------------------------------------------------------

class Stat(NamedTuple):
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    starttime: int  # clock ticks since boot: tells a pid from a later re-use of it
    pgrp: int  # process group


class Proc(NamedTuple):
    """A process identity that survives pid re-use: (pid, start time)."""

    pid: int
    starttime: int


def read_stat(pid: int) -> Optional[Stat]:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return Stat(pid, rest[0].decode(), int(rest[1]), int(rest[19]), int(rest[2]))


def all_stats() -> Dict[int, Stat]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def children(pid: int, stats: Optional[Dict[int, Stat]] = None) -> List[Stat]:
    stats = all_stats() if stats is None else stats
    return sorted((s for s in stats.values() if s.ppid == pid), key=lambda s: s.pid)


def descendants(pid: int, stats: Optional[Dict[int, Stat]] = None) -> List[Stat]:
    """Every process below ``pid`` (children, grandchildren, ...), breadth first."""
    stats = all_stats() if stats is None else stats
    by_parent: Dict[int, List[Stat]] = collections.defaultdict(list)
    for stat in stats.values():
        by_parent[stat.ppid].append(stat)
    out: List[Stat] = []
    frontier = [pid]
    while frontier:
        nxt = []
        for parent in frontier:
            for child in sorted(by_parent.get(parent, ()), key=lambda s: s.pid):
                out.append(child)
                nxt.append(child.pid)
        frontier = nxt
    return out


def is_framework(stat: Stat) -> bool:
    """A process running one of the package's modules (``-m scaler.…``, or a vendored copy's).

    Other descendants can be transient: on Python 3.8, ``import uuid`` runs ``uname -p``
    in a subprocess (``platform.uname()``), in every worker and cluster process.
    """
    return "scaler." in " ".join(cmdline(stat.pid))


def framework_children(pid: int, stats: Optional[Dict[int, Stat]] = None) -> List[Stat]:
    """Live children of ``pid`` that run the package's modules."""
    return [s for s in children(pid, stats) if s.state != "Z" and is_framework(s)]


def group_members(pgrp: int) -> List[Stat]:
    """Every process of process group ``pgrp`` (our children are started as group leaders)."""
    return [s for s in all_stats().values() if s.pgrp == pgrp]


def proc_of(stat: Stat) -> Proc:
    return Proc(stat.pid, stat.starttime)


def identify(pid: int) -> Proc:
    stat = read_stat(pid)
    assert stat is not None, "process %d does not exist" % pid
    return Proc(pid, stat.starttime)


def is_present(proc: Proc) -> bool:
    """The process still exists in any form, zombie included."""
    stat = read_stat(proc.pid)
    return stat is not None and stat.starttime == proc.starttime


def has_exited(proc: Proc) -> bool:
    """The process is gone or is a zombie (exited, not reaped yet).

    Used after the process's parent was killed: the orphan is re-parented to PID 1, and on
    this machine PID 1 does not reap, so an exited orphan stays a zombie forever.
    """
    stat = read_stat(proc.pid)
    return stat is None or stat.starttime != proc.starttime or stat.state in ("Z", "X")


def cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def comm(pid: int) -> str:
    """The process's name (``ps -o comm``): a forked worker or processor names itself there."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def role(pid: int) -> str:
    """"worker", "processor", "cluster", "scheduler"... of a framework process: by its name if
    it was forked (its command line is then its parent's), else by its command line."""
    name = comm(pid)
    if name == "scaler-worker":
        return "worker"
    if name == "scaler-proc":
        return "processor"
    line = " ".join(cmdline(pid))
    for module, what in ((".worker_manager", "worker manager"), (".worker.processor", "processor"),
                         (".worker", "worker"), (".cluster", "cluster"),
                         (".scheduler", "scheduler"), (".object_storage", "object storage")):
        if "scaler" + module in line:
            return what
    return ""


def describe(procs: Iterable[Proc]) -> str:
    lines = []
    for proc in procs:
        stat = read_stat(proc.pid)
        state = "gone" if stat is None or stat.starttime != proc.starttime else stat.state
        lines.append("  pid %d [%s] (%s) %s" % (proc.pid, state, comm(proc.pid), " ".join(cmdline(proc.pid))[:200]))
    return "\n".join(lines)


# --- waiting --------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = POLL_SECONDS) -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``.

    Only for states of other processes that offer no event to wait on (a process exiting
    when it is not our child, /proc contents); everything else waits on an event.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_for_tree(root_pid: int, shape: Callable[[Dict[int, Stat]], bool], timeout: float,
                  what: str) -> List[Stat]:
    """Wait until the process tree below ``root_pid`` satisfies ``shape(stats)``; return it.

    The tree returned holds the package's processes (and zombies, which cannot be told
    apart), not transient helpers such as ``uname -p``.
    """
    result: List[List[Stat]] = []

    def check() -> bool:
        stats = all_stats()
        if shape(stats):
            result.append([s for s in descendants(root_pid, stats) if s.state == "Z" or is_framework(s)])
            return True
        return False

    wait_until(check, timeout, what)
    return result[0]


def combo_tree_complete(cluster_pid: int, n_workers: int) -> Callable[[Dict[int, Stat]], bool]:
    """The cluster process has ``n_workers`` live worker agents, each with a live processor."""

    def shape(stats: Dict[int, Stat]) -> bool:
        workers = framework_children(cluster_pid, stats)
        if len(workers) != n_workers:
            return False
        return all(framework_children(w.pid, stats) for w in workers)

    return shape


# --- tasks telling the test they run --------------------------------------------------------

class Announcements:
    """A listening socket that tasks connect to, to say "I am running, in process PID".

    A task calls ``socket.create_connection(("127.0.0.1", port))`` and sends ``b"%d\\n" % os.getpid()``;
    the test waits for that event with :meth:`accept` / :meth:`next_pid` (each with a timeout).
    """

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def next_pid(self, timeout: float = 60.0):
        pid, conn = self.accept(timeout)
        conn.close()
        return pid

    def accept(self, timeout: float = 60.0):
        """Wait for the next task to connect: (its pid, the open connection)."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            raise AssertionError("no task announced itself within %.0fs" % timeout)
        conn.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            data += chunk
        return int(data), conn

    def close(self):
        self.sock.close()


# --- ports ----------------------------------------------------------------------------------

def closed_by_peer(sock: socket.socket, seconds: float) -> bool:
    """The other side closed ``sock`` (end of stream or a reset) within ``seconds``; False if
    it is still open then (or sent something first)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port P such that P .. P + 2 were free a moment ago (scheduler, object storage, monitor)."""
    from scaler.io.address import free_tcp_port

    return free_tcp_port(host, count=3)


# --- subprocesses ---------------------------------------------------------------------------

def subprocess_env(extra: Optional[Dict[str, str]] = None,
                   pythonpath: Optional[str] = DEFAULT_PYTHONPATH) -> Dict[str, str]:
    """The test's environment without scaler settings, with PYTHONPATH set to ``pythonpath`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALER_")}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class LineReader:
    """Collects a child's output lines on a thread; lets the test wait for a line, with a deadline."""

    def __init__(self, stream, name: str = "output") -> None:
        self.lines: List[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), name="reader-%s" % name, daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip("\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line matching the regular expression ``pattern``; AssertionError on timeout or EOF."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    raise AssertionError("no line matching %r within %.0fs (%s); output was:\n%s"
                                         % (pattern, timeout, "stream closed" if self.closed else "timeout",
                                            self.text()))
                self._cond.wait(remaining)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-200:])


class Spawned:
    """A started child: the Popen, a reader of its merged stdout/stderr, its process group."""

    def __init__(self, popen: "subprocess.Popen[bytes]", name: str) -> None:
        self.popen = popen
        self.name = name
        self.pid = popen.pid
        self.output = LineReader(popen.stdout, name) if popen.stdout is not None else None

    def kill_group(self) -> None:
        """SIGKILL the child and every process in its group (the whole tree scaler started)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.kill()
        except OSError:
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _parent_death_signal() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes the child get SIGKILL when the test process dies (Linux).

    Command-line components started by a test have no lifeline: without this, a test run
    killed from outside (a CI timeout) would leave a scheduler or a cluster running. Their
    own children follow them through the framework's lifelines.
    """
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return set_signal


_DIE_WITH_PARENT = _parent_death_signal() if sys.platform.startswith("linux") else None


class ProcessRegistry:
    """Starts children in their own process group and kills every group at clean-up."""

    def __init__(self) -> None:
        self.spawned: List[Spawned] = []

    def start(self, args: Sequence[str], name: str, env: Optional[Dict[str, str]] = None,
              cwd: Optional[str] = None, stdin: bool = False) -> Spawned:
        popen = subprocess.Popen(list(args), cwd=cwd or REPO_ROOT, env=env if env is not None else subprocess_env(),
                                 stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_DIE_WITH_PARENT)
        child = Spawned(popen, name)
        self.spawned.append(child)
        return child

    def python(self, args: Sequence[str], name: str, **kwargs) -> Spawned:
        return self.start([sys.executable, *args], name, **kwargs)

    def cleanup(self) -> None:
        for child in reversed(self.spawned):
            child.kill_group()
        self.spawned.clear()


def exit_code_within(child, timeout: float) -> int:
    """The exit code of a :class:`Spawned` or a ``Popen``; AssertionError if it does not exit in time."""
    popen = child.popen if isinstance(child, Spawned) else child
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        output = child.output.text() if isinstance(child, Spawned) and child.output else ""
        raise AssertionError("%s (pid %d) did not exit within %.0fs; output:\n%s"
                             % (getattr(child, "name", "process"), popen.pid, timeout, output))
