"""Shared fixtures for the end-to-end tests (real scheduler, real workers, real sockets).

- ``shared_combo``: one SchedulerClusterCombo (2 workers) for the whole session, for tests
  that do not disturb each other; ``client`` is a fresh Client on it per test.
- ``make_combo``: a factory for private combos (destructive tests); all are shut down at
  the end of the test, whatever happened.
- ``procs``: starts subprocesses in their own process group and SIGKILLs every group at
  the end of the test, so a failing test leaves no process behind.

Task functions live at module level in the test modules: workers import them by name
(the combo passes this interpreter's ``sys.path`` to its children through PYTHONPATH).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from e2e_support import REPO_ROOT, Announcements, ProcessRegistry  # noqa: E402

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

E2E_WORKERS = 2


@pytest.fixture(scope="session", autouse=True)
def _no_ambient_scaler_settings():
    """An auth key or scheduler address in the caller's environment must not leak into the tests."""
    saved = {name: os.environ.pop(name) for name in ("SCALER_AUTH_KEY", "SCALER_SCHEDULER_ADDRESS")
             if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def shared_combo():
    from scaler import SchedulerClusterCombo

    combo = SchedulerClusterCombo(n_workers=E2E_WORKERS, logging_level="WARNING")
    try:
        yield combo
    finally:
        combo.shutdown()


@pytest.fixture
def client(shared_combo):
    from scaler import Client

    with Client(shared_combo.get_address()) as c:
        yield c


@pytest.fixture
def make_combo():
    from scaler import SchedulerClusterCombo

    combos = []

    def make(**kwargs):
        kwargs.setdefault("logging_level", "WARNING")
        combo = SchedulerClusterCombo(**kwargs)
        combos.append(combo)
        return combo

    try:
        yield make
    finally:
        for combo in reversed(combos):
            combo.shutdown()


@pytest.fixture
def procs():
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.cleanup()


@pytest.fixture
def announcements():
    """See ``e2e_support.Announcements``: tasks connect to ``announcements.port`` when they start."""
    listener = Announcements()
    try:
        yield listener
    finally:
        listener.close()
