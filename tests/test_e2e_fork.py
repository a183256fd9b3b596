"""End to end: a fixed pool forks its first workers, and a worker its first processor
(``utility.process.fork_child``), unless ``SCALER_FORK=0``. Either way a task must find the
same process around it, and a processor started later (a restart) is a new interpreter."""

import json
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
        "log_handlers": [(type(h).__name__, getattr(h, "stream", None) is sys.stderr) for h in root.handlers],
        "package_loggers": sorted({(name, lg.disabled, len(lg.handlers), lg.level)
                                   for name, lg in logging.Logger.manager.loggerDict.items()
                                   if isinstance(lg, logging.Logger) and name.startswith("scaler.")
                                   and (lg.disabled or lg.handlers or lg.level)}),
        "threads": threading.active_count(),
        "main_has_processor": hasattr(sys.modules["__main__"], "Processor"),
    }


def crash():
    os._exit(7)


LOGGING_CONFIG = {"version": 1, "handlers": {"out": {"class": "logging.StreamHandler"}},
                  "loggers": {"scaler.worker.agent": {"handlers": ["out"], "level": "DEBUG"}}}


@pytest.mark.parametrize("fork,logging_config", [("1", False), ("0", False), ("1", True), ("0", True)],
                         ids=["forked", "new-interpreters", "forked-logging-config", "new-logging-config"])
def test_a_task_finds_the_same_process_whether_its_processor_was_forked_or_not(make_combo, monkeypatch, tmp_path,
                                                                                fork, logging_config):
    """With a logging configuration too: the agent's (a dictConfig disables the loggers it
    does not name, and gives others handlers) must not reach a forked processor."""
    monkeypatch.setenv("SCALER_FORK", fork)
    options = {}
    if logging_config:
        path = tmp_path / "logging.json"
        path.write_text(json.dumps(LOGGING_CONFIG))
        options["logging_config_file"] = str(path)
    combo = make_combo(n_workers=1, **options)
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
                        "scheduler_address": combo.get_address(), "package_loggers": [],
                        "log_handlers": [("StreamHandler", True)], "threads": 2, "main_has_processor": True}

        # A processor that dies is replaced by a new interpreter (the agent has threads by then).
        with pytest.raises(Exception):
            client.submit(crash).result(timeout=TIMEOUT)
        later = client.submit(surroundings).result(timeout=TIMEOUT)
        assert later["pid"] != pid and role(later["pid"]) == "processor" and comm(later["pid"]) != "scaler-proc"
        later.pop("pid")
        assert later == seen
