"""Worker manager commands.

- ``scaler_worker_manager baremetal_native SCHEDULER_ADDRESS`` /
  ``python -m scaler.worker_manager baremetal_native SCHEDULER_ADDRESS``
  (``[[worker_manager]]`` entries with ``type = "baremetal_native"``);
- ``scaler_worker_adapter_native`` (``[native_worker_adapter]``, dynamic mode) and
  ``scaler_worker_adapter_fixed_native`` (``[fixed_native_worker_adapter]``, fixed mode),
  the older names of the same manager.

All three build a ``WorkerManagerConfig`` and call ``run_worker_manager``. Hidden flags
used by the spawner: ``--lifeline-fd``, ``--config-json``.
"""

import difflib
import sys
from typing import List, Optional, Sequence

from ..config.commands import FIXED_NATIVE_ADAPTER, NATIVE_ADAPTER, WORKER_MANAGER_TYPES
from ..config.loader import Command
from ..utility.process import run_main
from ..version import __version__

PROG = "scaler_worker_manager"
_HIDDEN_WITH_VALUE = ("--lifeline-fd", "--config-json")


def _usage() -> str:
    lines = ["usage: %s TYPE [options] SCHEDULER_ADDRESS" % PROG, "",
             "Start and stop workers for a scheduler.", "", "types:"]
    for name, command in WORKER_MANAGER_TYPES.items():
        lines.append("  %-18s %s" % (name, command.description))
    lines += ["", "options:", "  -h, --help          show this help message and exit",
              "  --version           show program's version number and exit", "",
              "Run '%s TYPE -h' for the options of a type. With -c FILE the [[worker_manager]] entry" % PROG,
              "whose type = \"TYPE\" is read from FILE."]
    return "\n".join(lines)


def _split_type(argv: Sequence[str]) -> "tuple":
    """Find the TYPE word (the first word that is not an option or a hidden flag's value)."""
    skip = False
    for index, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word in _HIDDEN_WITH_VALUE:
            skip = True
            continue
        if word.startswith(tuple(flag + "=" for flag in _HIDDEN_WITH_VALUE)):
            continue
        if word in ("-h", "--help"):
            return None, "help"
        if word == "--version":
            return None, "version"
        if word.startswith("-"):
            return None, word
        return word, list(argv[:index]) + list(argv[index + 1:])
    return None, None


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    kind, rest = _split_type(argv)
    if kind is None:
        if rest == "help":
            print(_usage())
            return 0
        if rest == "version":
            print("scaler_worker_manager %s (scaler)" % __version__)
            return 0
        valid = ", ".join(WORKER_MANAGER_TYPES)
        if rest is None:
            _error("give a worker manager type first (valid types: %s)" % valid)
        _error("give a worker manager type before the options, got %r (valid types: %s)" % (rest, valid))
    command = WORKER_MANAGER_TYPES.get(kind)
    if command is None:
        close = difflib.get_close_matches(kind, list(WORKER_MANAGER_TYPES), n=1, cutoff=0.5)
        hint = " (did you mean '%s'?)" % close[0] if close else ""
        _error("unknown worker manager type %r%s; valid types: %s" % (kind, hint, ", ".join(WORKER_MANAGER_TYPES)))
    return run(command, rest)


def run(command: Command, argv: Optional[Sequence[str]]) -> int:
    from . import run_worker_manager
    return run_main(command, argv, "worker manager",
                    lambda loaded: run_worker_manager(loaded.config, loaded.lifeline_fd))


def native_adapter_main(argv: Optional[List[str]] = None) -> int:
    """``scaler_worker_adapter_native SCHEDULER_ADDRESS``: dynamic mode."""
    return run(NATIVE_ADAPTER, argv)


def fixed_native_adapter_main(argv: Optional[List[str]] = None) -> int:
    """``scaler_worker_adapter_fixed_native SCHEDULER_ADDRESS``: fixed mode."""
    return run(FIXED_NATIVE_ADAPTER, argv)


def _error(message: str) -> None:
    print("usage: %s TYPE [options] SCHEDULER_ADDRESS" % PROG, file=sys.stderr)
    print("%s: error: %s" % (PROG, message), file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
