"""End to end: a fixed pool forks its first workers, and a worker its first processor
(``utility.process.fork_child``), unless ``SCALER_FORK=0``. Either way a task must find the
same process around it, and a processor started later (a restart) is a new interpreter."""

import logging
import os
import signal
import sys
import threading

import pytest

from e2e_support import comm, role

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forking children is Linux-only")

TIMEOUT = 60


def surroundings():
    """What a task sees of its process (run in the processor)."""
    root = logging.getLogger()
    stdin, null = os.fstat(0), os.stat(os.devnull)
    return {
        "pid": os.getpid(),
        "sigint": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "stdin_is_dev_null": (stdin.st_dev, stdin.st_ino) == (null.st_dev, null.st_ino),
        "scheduler_address": os.environ.get("SCALER_SCHEDULER_ADDRESS"),
        "pythonpath_set": bool(os.environ.get("PYTHONPATH")),
        "log_handlers": [(type(h).__name__, getattr(h, "stream", None) is sys.stderr) for h in root.handlers],
        "threads": threading.active_count(),
        "main_has_processor": hasattr(sys.modules["__main__"], "Processor"),
    }


def crash():
    os._exit(7)


@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "new-interpreters"])
def test_a_task_finds_the_same_process_whether_its_processor_was_forked_or_not(make_combo, monkeypatch, fork):
    monkeypatch.setenv("SCALER_FORK", fork)
    combo = make_combo(n_workers=1)
    from scaler import Client
    with Client(combo.get_address()) as client:
        seen = client.submit(surroundings).result(timeout=TIMEOUT)
        expected_role = "processor"
        assert role(seen["pid"]) == expected_role, (comm(seen["pid"]), seen)
        assert (comm(seen["pid"]) == "scaler-proc") == (fork == "1")
        agent = int(open("/proc/%d/stat" % seen["pid"]).read().rsplit(")", 1)[1].split()[1])
        assert role(agent) == "worker"
        assert (comm(agent) == "scaler-worker") == (fork == "1")
        pid = seen.pop("pid")
        assert seen == {"sigint": True, "sigterm": True, "stdin_is_dev_null": True,
                        "scheduler_address": combo.get_address(), "pythonpath_set": True,
                        "log_handlers": [("StreamHandler", True)], "threads": 2, "main_has_processor": True}

        # A processor that dies is replaced by a new interpreter (the agent has threads by then).
        with pytest.raises(Exception):
            client.submit(crash).result(timeout=TIMEOUT)
        later = client.submit(surroundings).result(timeout=TIMEOUT)
        assert later["pid"] != pid and role(later["pid"]) == "processor" and comm(later["pid"]) != "scaler-proc"
        later.pop("pid")
        assert later == seen
