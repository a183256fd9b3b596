"""``scaler CONFIG.toml``: start every component a TOML file has a section for.

Order: ``[object_storage_server]``, ``[scheduler]``, ``[cluster]``, then each
``[[worker_manager]]`` entry. Every section is validated before anything starts, and the
listening sockets are bound here first, so a bad value or a busy port stops the launch
before any process exists. Each component is a child process (``utility.process.spawn``:
it dies with the launcher) whose output lines are prefixed with its name.

Ctrl-C or SIGTERM stops the components in reverse order (SIGTERM, then SIGKILL after a
grace period; a second Ctrl-C kills at once) and the launcher exits with 0. If a component
ends on its own, the launcher says which and with what exit code, stops the others and
exits with that component's status (128 + N if it was killed by signal N).
"""

import argparse
import dataclasses
import difflib
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from .config.commands import (CLUSTER, GUI, LAUNCHED_SECTIONS, OBJECT_STORAGE, SCHEDULER, SKIPPED_SECTIONS, WEBUI,
                              WORKER_MANAGER_TYPES)
from .config.loader import ConfigError, ConfigErrors, config_from_table, load_toml
from .io.address import connectable_host, listen, parse_address
from .utility import process as proc_util
from .version import __version__

PROG = "scaler"
GRACE_SECONDS = 10.0
POLL_SECONDS = 0.05


@dataclasses.dataclass
class Component:
    name: str                       # "scheduler", "worker_manager NAT|default", ...
    submodule: str                  # what to run: python -m scaler.<submodule>
    config: Any
    args: List[str] = dataclasses.field(default_factory=list)   # before --config-json
    sockets: Dict[str, socket.socket] = dataclasses.field(default_factory=dict)  # flag -> pre-bound socket


def plan(path: str) -> List[Component]:
    """Validate the whole file; return the components to start, in start order. Raises ConfigErrors."""
    data = load_toml(path)
    errors: List[ConfigError] = []
    for key, value in data.items():
        if key in LAUNCHED_SECTIONS or key in SKIPPED_SECTIONS:
            continue
        known = list(LAUNCHED_SECTIONS) + list(SKIPPED_SECTIONS)
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        what = "unknown section" if isinstance(value, (dict, list)) else "unknown top-level key"
        hint = " (did you mean [%s]?)" % close[0] if close else " (known sections: %s)" % ", ".join(
            "[%s]" % name for name in known)
        errors.append(ConfigError("%s [%s]" % (path, key), what + hint))

    components: List[Component] = []

    def add(name: str, submodule: str, command: Any, table: Any, where: str, args: Sequence[str] = ()) -> None:
        try:
            components.append(Component(name, submodule, config_from_table(command, table, where), list(args)))
        except ConfigErrors as exc:
            errors.extend(exc.errors)

    if "object_storage_server" in data:
        add("object_storage_server", "object_storage", OBJECT_STORAGE, data["object_storage_server"],
            "%s [object_storage_server]" % path)
    if "scheduler" in data:
        add("scheduler", "scheduler", SCHEDULER, data["scheduler"], "%s [scheduler]" % path)
    if "cluster" in data:
        add("cluster", "cluster", CLUSTER, data["cluster"], "%s [cluster]" % path)
    managers = data.get("worker_manager")
    if managers is not None:
        if not isinstance(managers, list):
            errors.append(ConfigError("%s [worker_manager]" % path,
                                      "expected an array of tables: write [[worker_manager]]"))
            managers = []
        ids: Dict[str, int] = {}
        for index, entry in enumerate(managers, 1):
            where = "%s [[worker_manager]] #%d" % (path, index)
            if not isinstance(entry, dict):
                errors.append(ConfigError(where, "expected a table"))
                continue
            kind = entry.get("type")
            command = WORKER_MANAGER_TYPES.get(kind) if isinstance(kind, str) else None
            if command is None:
                valid = ", ".join('"%s"' % name for name in WORKER_MANAGER_TYPES)
                message = ("missing key: expected one of %s" % valid if kind is None
                           else "unknown worker manager type %r: expected one of %s" % (kind, valid))
                errors.append(ConfigError(where + " type", message))
                continue
            label = entry.get("worker_manager_id") or "#%d" % index
            add("worker_manager %s" % label, "worker_manager", command, entry, where, [kind])
            manager_id = entry.get("worker_manager_id")
            if isinstance(manager_id, str) and manager_id:
                if manager_id in ids:
                    errors.append(ConfigError(where + " worker_manager_id", "%r is also the id of entry #%d: ids "
                                                                            "must be unique" % (manager_id,
                                                                                                ids[manager_id])))
                ids[manager_id] = index
    for section, command in (("gui", GUI), ("webui", WEBUI)):  # the web dashboard, under either name
        if section in data and components:  # (a dashboard alone is not a stack: "nothing to start" below)
            table = data[section]
            if isinstance(table, dict) and not table.get("monitor_address") and not table.get("address") \
                    and isinstance(data.get("scheduler"), dict):
                table = dict(table, monitor_address=_monitor_of(data["scheduler"]))  # the scheduler started here
            add(section, "gui", command, table, "%s [%s]" % (path, section))
    if errors:
        raise ConfigErrors(errors)
    if not components:
        raise ConfigErrors([ConfigError(path, "nothing to start: expected at least one of [object_storage_server], "
                                              "[scheduler], [cluster] or [[worker_manager]]")])
    storage = next((c for c in components if c.name == "object_storage_server"), None)
    scheduler = next((c for c in components if c.name == "scheduler"), None)
    if storage is not None and scheduler is not None and scheduler.config.object_storage_address is None:
        # Without this the scheduler would host a second object storage on its port + 1.
        scheduler.config.object_storage_address = str(connectable_host(parse_address(storage.config.address)))
    return components


def _monitor_of(scheduler: Dict[str, Any]) -> str:
    """The monitor address of a [scheduler] section: as given, else its address's port + 2."""
    given = scheduler.get("monitor_address")
    if isinstance(given, str) and given:
        return given
    address = scheduler.get("scheduler_address") or scheduler.get("address") or ""
    try:
        return str(connectable_host(parse_address(address).with_port_offset(2)))
    except (ValueError, TypeError, AttributeError):
        return ""


class _Output:
    """Copies children's output lines to our stdout with a ``[name]`` prefix."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: List[threading.Thread] = []
        self.stream = getattr(sys.stdout, "buffer", None)

    def say(self, text: str) -> None:
        self.write(b"[scaler] " + text.encode("utf-8", "replace") + b"\n")

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                if self.stream is not None:
                    self.stream.write(data)
                    self.stream.flush()
                else:
                    sys.stdout.write(data.decode("utf-8", "replace"))
                    sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def follow(self, name: str, pipe: Any) -> None:
        prefix = ("[%s] " % name).encode("utf-8", "replace")

        def copy() -> None:
            try:
                for line in iter(pipe.readline, b""):
                    self.write(prefix + (line if line.endswith(b"\n") else line + b"\n"))
            except (OSError, ValueError):
                pass
            finally:
                try:
                    pipe.close()
                except OSError:
                    pass

        thread = threading.Thread(target=copy, name="output %s" % name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def bind(components: List[Component]) -> None:
    """Bind every listening socket before any process starts (raises OSError naming the component)."""
    try:
        for component in components:
            config = component.config
            if component.name == "object_storage_server":
                component.sockets["--listen-fd"] = _listen(component, config.address)
            elif component.name == "scheduler":
                component.sockets["--listen-fd"] = _listen(component, config.address)
                if config.object_storage_address is None:
                    storage = str(parse_address(config.address).with_port_offset(1))
                    component.sockets["--storage-listen-fd"] = _listen(component, storage)
    except BaseException:
        for component in components:
            _close_sockets(component)
        raise


def _listen(component: Component, address: str) -> socket.socket:
    try:
        return listen(parse_address(address))
    except OSError as exc:
        raise OSError(exc.errno, "[%s] %s" % (component.name, exc.strerror or exc)) from None


def _close_sockets(component: Component) -> None:
    for sock in component.sockets.values():
        sock.close()
    component.sockets.clear()


def _describe(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal %d" % -code
        return "was killed by %s (exit code %d)" % (name, code)
    return "exited with exit code %d" % code


def _spawn(component: Component, output: _Output) -> proc_util.Child:
    args = list(component.args)
    fds = []
    for flag, sock in component.sockets.items():
        args += [flag, str(sock.fileno())]
        fds.append(sock.fileno())
    try:
        child = proc_util.spawn_component(component.name, component.submodule, component.config, args,
                                          pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True)
    finally:
        _close_sockets(component)  # the child has its copies
    output.follow(component.name, child.popen.stdout)
    return child


class Launcher:
    def __init__(self, components: List[Component], grace_seconds: float = GRACE_SECONDS) -> None:
        self.components = components
        self.grace_seconds = grace_seconds
        self.output = _Output()
        self.children: List[proc_util.Child] = []
        self.signals: List[int] = []

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        exit_code = 0
        try:
            try:
                bind(self.components)
            except OSError as exc:
                print("%s: error: %s" % (PROG, exc.strerror or exc), file=sys.stderr)
                return 1
            for component in self.components:
                if self.signals:
                    break
                child = _spawn(component, self.output)
                self.children.append(child)
                self.output.say("started %s (pid %d)" % (component.name, child.pid))
            exit_code = self._watch()
        finally:
            for component in self.components:
                _close_sockets(component)
            self._stop_all()
            self.output.drain(2.0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return exit_code

    def _watch(self) -> int:
        while not self.signals:
            for child in self.children:
                code = child.poll()
                if code is not None:
                    self.output.say("%s (pid %d) %s: stopping the other components"
                                    % (child.name, child.pid, _describe(code)))
                    return code if code >= 0 else 128 - code
            time.sleep(POLL_SECONDS)
        self.output.say("received %s: stopping all components" % signal.Signals(self.signals[0]).name)
        return 0

    def _stop_all(self) -> None:
        """Stop the children in reverse start order: SIGTERM, grace period, SIGKILL."""
        signals_seen = len(self.signals)
        for child in reversed(self.children):
            if child.is_alive():
                self.output.say("stopping %s (pid %d)" % (child.name, child.pid))
                child.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + self.grace_seconds
                while child.poll() is None and time.monotonic() < deadline and len(self.signals) <= signals_seen:
                    time.sleep(POLL_SECONDS)
                if child.poll() is None:
                    self.output.say("%s (pid %d) is still running: killing it" % (child.name, child.pid))
                    child.popen.kill()
            child.popen.wait()
            child.close_lifeline()  # its own children see their lifeline close and exit
        if self.children:
            self.output.say("all components stopped")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start every scaler component that a TOML file has a section for: [object_storage_server], "
                    "[scheduler], [cluster] and each [[worker_manager]] (type = \"baremetal_native\"), in that "
                    "order. Ctrl-C or SIGTERM stops them in reverse order.",
        epilog="Sections [gui] and [webui] start the web dashboard (its monitor_address defaults to the "
               "[scheduler]'s port + 2).\nSections [top] and the worker adapters' sections are accepted and not "
               "started.\n"
               "See docs/configuration.rst for the keys of each section.")
    parser.add_argument("--version", action="version", version="%s %s" % (PROG, __version__))
    parser.add_argument("--check", action="store_true",
                        help="validate the file, print what would start, and exit (default: false)")
    parser.add_argument("config", metavar="CONFIG.toml", nargs="?", help="the TOML file")
    parser.add_argument("-c", "--config", dest="config_option", metavar="CONFIG.toml",
                        help="the TOML file, as every command takes it (the same as the positional)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named first: 'scaler --bogus' is about --bogus, not about a missing file
        parser.error("unrecognized arguments: %s" % " ".join(unknown))
    if args.config and args.config_option and args.config != args.config_option:
        parser.error("two files given: %s and -c %s" % (args.config, args.config_option))
    args.config = args.config or args.config_option
    if not args.config:
        parser.error("the following arguments are required: CONFIG.toml (or -c CONFIG.toml)")
    try:
        components = plan(args.config)
    except ConfigErrors as exc:
        for error in exc.errors:
            print("%s: error: %s" % (PROG, error), file=sys.stderr)
        return 2
    except ConfigError as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 2
    data_sections = [name for name in SKIPPED_SECTIONS if name in _sections(args.config)]
    for name in data_sections:
        print("[scaler] not starting [%s]: %s" % (name, SKIPPED_SECTIONS[name]), flush=True)
    if args.check:
        for component in components:
            print("[scaler] would start %s: %s" % (component.name, _summary(component)), flush=True)
        return 0
    return Launcher(components).run()


def _sections(path: str) -> List[str]:
    return list(load_toml(path))


def _summary(component: Component) -> str:
    config = component.config
    if component.name == "object_storage_server":
        return "listening on %s" % config.address
    if component.name == "scheduler":
        storage = config.object_storage_address or "in-process on port + 1"
        return "listening on %s, object storage %s, policy %r" % (config.address, storage, config.policy_content)
    if component.name == "cluster":
        return "%d worker(s) for %s" % (config.num_of_workers, config.scheduler_address)
    return "%s mode, max_task_concurrency %d, for %s" % (config.mode, config.max_task_concurrency,
                                                          config.scheduler_address)


if __name__ == "__main__":
    sys.exit(main())
