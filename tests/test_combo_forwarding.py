"""``SchedulerClusterCombo`` and ``Cluster`` hand every constructor parameter to the component it configures.

No process is started: ``spawn`` is replaced by a recorder, and each recorded command line
is parsed back by the child's own parser (``resolve_command_line`` with the child's
command), so what is checked is the configuration the scheduler and the cluster would run
with. The parameters are enumerated from the constructor's signature: a parameter added
later without an entry in ``FORWARDED`` fails here, and so does one that never reaches its
component.
"""

import atexit
import inspect
import os
import shutil
import tempfile

import pytest

from scaler import Cluster, SchedulerClusterCombo
from scaler.config.commands import CLUSTER, SCHEDULER
from scaler.config.components import default_worker_count
from scaler.config.loader import resolve_command_line
from scaler.io.address import free_tcp_port
from scaler.utility import process as proc_util
from tls_support import OPENSSL, make_pki

AUTH_KEY_ENV = "SCALER_AUTH_KEY"


class Fresh:
    """A value made when the test runs (a free port)."""

    def __init__(self, make):
        self.make = make


class Refused:
    """A value the component refuses (``ValueError`` naming the parameter): nothing to forward."""

    def __init__(self, value):
        self.value = value


def _logging_ini():
    """A real logging.config file: the combo checks it as --logging-config-file does."""
    import tempfile
    path = os.path.join(tempfile.mkdtemp(prefix="scaler-test-"), "logging.ini")
    with open(path, "w") as f:
        f.write("[loggers]\nkeys=root\n[handlers]\nkeys=\n[formatters]\nkeys=\n[logger_root]\nhandlers=\n")
    return path


LOGGING_INI = _logging_ini()


def _free_address():
    return "tcp://127.0.0.1:%d" % free_tcp_port(count=3)


KEY_IN_FILE = "from-a-file"


_PKI = []


def _pki():
    """Certificates made once per run (tls_support.make_pki); the test using them skips without openssl."""
    if OPENSSL is None:
        pytest.skip("the openssl command is needed to make test certificates")
    if not _PKI:
        directory = tempfile.mkdtemp(prefix="scaler-test-pki-")
        atexit.register(shutil.rmtree, directory, True)
        _PKI.append(make_pki(directory))
    return _PKI[0]


def _security_config():
    from scaler.config.common.security import SecurityConfig

    pki = _pki()
    return SecurityConfig(tls_cert=pki.cert, tls_key=pki.key, tls_ca=pki.ca)


def _key_file():
    fd, path = tempfile.mkstemp(prefix="scaler-test-key-")  # mode 0600
    os.write(fd, KEY_IN_FILE.encode() + b"\n")
    os.close(fd)
    atexit.register(os.unlink, path)
    return path


SAME = object()  # the expected value is the parameter's value
IGNORED = "ignored"

# parameter -> (non-default value, [(component, field, expected)]); component is "scheduler"
# or "cluster" (a field of the config it parses), or "scheduler env" / "cluster env" (a
# variable of its environment).
FORWARDED = {
    "n_workers": (default_worker_count() + 2, [("cluster", "num_of_workers", SAME)]),
    "address": (Fresh(_free_address), [("scheduler", "address", SAME), ("cluster", "scheduler_address", SAME)]),
    "object_storage_address": (Fresh(_free_address), [("scheduler", "object_storage_address", SAME)]),
    "monitor_address": (Fresh(_free_address), [("scheduler", "monitor_address", SAME)]),
    "per_worker_capabilities": ({"linux": -1, "gpu": 2}, [("cluster", "per_worker_capabilities", "linux,gpu=2")]),
    "worker_io_threads": (3, [("cluster", "io_threads", SAME)]),
    "scheduler_io_threads": (3, [("scheduler", "io_threads", SAME)]),
    "max_number_of_tasks_waiting": (50, [("scheduler", "max_number_of_tasks_waiting", SAME)]),
    "heartbeat_interval_seconds": (0.5, [("cluster", "heartbeat_interval_seconds", SAME)]),
    "client_timeout_seconds": (7.0, [("scheduler", "client_timeout_seconds", SAME)]),
    "worker_timeout_seconds": (8.0, [("scheduler", "worker_timeout_seconds", SAME)]),
    "object_retention_seconds": (9.0, [("scheduler", "object_retention_seconds", SAME)]),
    "task_timeout_seconds": (10.0, [("cluster", "task_timeout_seconds", SAME)]),
    "death_timeout_seconds": (11.0, [("cluster", "death_timeout_seconds", SAME)]),
    "load_balance_seconds": (0.25, [("scheduler", "load_balance_seconds", SAME)]),
    "load_balance_trigger_times": (5, [("scheduler", "load_balance_trigger_times", SAME)]),
    "garbage_collect_interval_seconds": (12.0, [("cluster", "garbage_collect_interval_seconds", SAME)]),
    "trim_memory_threshold_bytes": (1 << 20, [("cluster", "trim_memory_threshold_bytes", SAME)]),
    "per_worker_task_queue_size": (13, [("cluster", "per_worker_task_queue_size", SAME),
                                        ("scheduler", "per_worker_queue_size", SAME)]),
    "hard_processor_suspend": (Refused(True), []),  # no processor is ever suspended (docs: Nested tasks)
    "protected": (False, [("scheduler", "protected", SAME)]),
    "scaler_policy": ("allocate=even_load; scaling=vanilla", [("scheduler", "policy_content", SAME)]),
    "event_loop": ("uvloop", [("scheduler", "event_loop", SAME), ("cluster", "event_loop", SAME)]),
    "logging_paths": (("/dev/stderr",), [("scheduler", "logging_paths", SAME), ("cluster", "logging_paths", SAME)]),
    "logging_level": ("DEBUG", [("scheduler", "logging_level", SAME), ("cluster", "logging_level", SAME)]),
    "logging_config_file": (LOGGING_INI, [("scheduler", "logging_config_file", SAME),
                                            ("cluster", "logging_config_file", SAME)]),
    "worker_manager_id": ("combo-7", [("cluster", "worker_manager_id", SAME)]),
    # upstream's TLS settings (plus tls_ca): the certificate to the scheduler, the CA to both
    "security_config": (Fresh(_security_config), [("scheduler", "tls_cert", lambda v: v.tls_cert),
                                                  ("scheduler", "tls_key", lambda v: v.tls_key),
                                                  ("scheduler", "tls_ca", lambda v: v.tls_ca),
                                                  ("cluster", "tls_ca", lambda v: v.tls_ca)]),
    "tls_ca": (Fresh(lambda: _pki().ca), [("scheduler", "tls_ca", SAME), ("cluster", "tls_ca", SAME)]),
    "auth_key": ("s3cret", [("scheduler env", AUTH_KEY_ENV, SAME), ("cluster env", AUTH_KEY_ENV, SAME)]),
    "per_worker_queue_size": (14, [("cluster", "per_worker_task_queue_size", SAME),
                                   ("scheduler", "per_worker_queue_size", SAME)]),
    "preload": ("json", [("cluster", "preload", SAME)]),
    "auth_key_file": (Fresh(_key_file), [("scheduler env", AUTH_KEY_ENV, KEY_IN_FILE),
                                         ("cluster env", AUTH_KEY_ENV, KEY_IN_FILE)]),
}

PARAMETERS = [name for name in inspect.signature(SchedulerClusterCombo.__init__).parameters if name != "self"]


class _Exited:
    """Stands in for a child's Popen: already exited, so stopping it is a no-op."""

    pid = 0
    returncode = 0

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0

    def kill(self):
        pass


@pytest.fixture
def started(monkeypatch):
    """Replace ``spawn``: record each child's argv and environment by submodule instead of starting it."""
    record = {}

    def spawn(name, submodule, args, env=None, **_options):
        record[submodule] = (list(args), dict(env or {}))
        return proc_util.Child(name, _Exited(), -1)

    monkeypatch.setattr(proc_util, "spawn", spawn)
    monkeypatch.delenv(AUTH_KEY_ENV, raising=False)
    return record


def run_combo(started, **params):
    """What the scheduler and the cluster would be configured with for these parameters."""
    started.clear()
    SchedulerClusterCombo(**params).shutdown()
    assert set(started) == {"scheduler", "cluster"}, started
    scheduler_args, scheduler_env = started["scheduler"]
    cluster_args, cluster_env = started["cluster"]
    return {"scheduler": resolve_command_line(SCHEDULER, scheduler_args).config, "scheduler env": scheduler_env,
            "scheduler argv": scheduler_args,
            "cluster": resolve_command_line(CLUSTER, cluster_args).config, "cluster env": cluster_env,
            "cluster argv": cluster_args}


def lookup(built, where, name):
    if where.endswith(" env"):
        return built[where].get(name)
    return getattr(built[where], name)


def test_the_table_names_every_parameter():
    assert sorted(FORWARDED) == sorted(PARAMETERS)


@pytest.mark.parametrize("name", PARAMETERS)
def test_parameter_reaches_its_component(started, name):
    assert name in FORWARDED, "add %s to FORWARDED: which component does it configure?" % name
    value, targets = FORWARDED[name]
    if isinstance(value, Fresh):
        value = value.make()
    if isinstance(value, Refused):
        with pytest.raises(ValueError, match=name):
            SchedulerClusterCombo(**{name: value.value})
        assert not started
        return
    built = run_combo(started, **{name: value})
    if targets == IGNORED:
        return
    default = run_combo(started)
    for where, field, expected in targets:
        expected = value if expected is SAME else expected(value) if callable(expected) else expected
        if isinstance(expected, tuple):
            assert isinstance(lookup(built, where, field), tuple)
        assert lookup(built, where, field) == expected, "%s=%r: %s %s" % (name, value, where, field)
        assert lookup(default, where, field) != expected, "%s: pick a value other than the default" % name


def test_the_key_is_never_on_a_command_line(started):
    built = run_combo(started, auth_key="s3cret")
    assert not any("s3cret" in word for word in built["scheduler argv"] + built["cluster argv"])


def test_a_policy_object_is_taken_as_its_string(started):
    from scaler.config.policy import Policy, parse_policy

    policy = Policy(scaling="vanilla", upper_task_ratio=4)
    assert parse_policy(run_combo(started, scaler_policy=policy)["scheduler"].policy_content) == policy


def test_a_bad_policy_is_refused_before_anything_starts(started):
    with pytest.raises(ValueError, match="scaling=sometimes"):
        SchedulerClusterCombo(scaler_policy="scaling=sometimes")
    assert started == {}


# Cluster(address, ...): parameter -> (non-default value, cluster config field, expected)
CLUSTER_ADDRESS = "tcp://127.0.0.1:8516"
CLUSTER_FORWARDED = {
    "address": ("tcp://127.0.0.1:9999", "scheduler_address", SAME),
    "n_workers": (default_worker_count() + 2, "num_of_workers", SAME),
    "worker_names": (("a", "b"), "worker_names", SAME),
    "per_worker_capabilities": ("linux,gpu=2", "per_worker_capabilities", SAME),
    "per_worker_task_queue_size": (13, "per_worker_task_queue_size", SAME),
    "heartbeat_interval_seconds": (0.5, "heartbeat_interval_seconds", SAME),
    "task_timeout_seconds": (10.0, "task_timeout_seconds", SAME),
    "death_timeout_seconds": (11.0, "death_timeout_seconds", SAME),
    "garbage_collect_interval_seconds": (12.0, "garbage_collect_interval_seconds", SAME),
    "trim_memory_threshold_bytes": (1 << 20, "trim_memory_threshold_bytes", SAME),
    "hard_processor_suspend": (Refused(True), "hard_processor_suspend", SAME),
    "worker_io_threads": (3, "io_threads", SAME),
    "event_loop": ("uvloop", "event_loop", SAME),
    "preload": ("json", "preload", SAME),
    "logging_paths": (("/dev/stderr",), "logging_paths", SAME),
    "logging_level": ("DEBUG", "logging_level", SAME),
    "logging_config_file": (LOGGING_INI, "logging_config_file", SAME),
    "auth_key": ("s3cret", AUTH_KEY_ENV, SAME),
    "object_storage_address": ("tcp://127.0.0.1:9998", "object_storage_address", SAME),
    "auth_key_file": (Fresh(_key_file), AUTH_KEY_ENV, KEY_IN_FILE),
    "tls_ca": (Fresh(lambda: _pki().ca), "tls_ca", SAME),
}
CLUSTER_PARAMETERS = [name for name in inspect.signature(Cluster.__init__).parameters if name != "self"]


def run_cluster(started, **params):
    params.setdefault("address", CLUSTER_ADDRESS)
    started.clear()
    Cluster(**params).start()
    assert set(started) == {"cluster"}, started
    args, env = started["cluster"]
    return resolve_command_line(CLUSTER, args).config, env


def test_the_cluster_table_names_every_parameter():
    assert sorted(CLUSTER_FORWARDED) == sorted(CLUSTER_PARAMETERS)


@pytest.mark.parametrize("name", CLUSTER_PARAMETERS)
def test_cluster_parameter_reaches_the_pool(started, name):
    value, field, expected = CLUSTER_FORWARDED[name]
    if isinstance(value, Fresh):
        value = value.make()
    if isinstance(value, Refused):
        with pytest.raises(ValueError, match=name):
            Cluster(CLUSTER_ADDRESS, **{name: value.value})
        assert not started
        return
    expected = value if expected is SAME else expected
    config, env = run_cluster(started, **{name: value})
    default_config, default_env = run_cluster(started)
    if field == AUTH_KEY_ENV:
        assert env.get(field) == expected and default_env.get(field) != expected
        return
    assert getattr(config, field) == expected, "%s=%r" % (name, value)
    assert getattr(default_config, field) != expected, "%s: pick a value other than the default" % name


@pytest.mark.parametrize("kwargs, named", [
    (dict(event_loop="bogus"), "event_loop"),
    (dict(logging_level="loud"), "logging_level"),
    (dict(heartbeat_interval_seconds=0), "heartbeat_interval_seconds"),
    (dict(scheduler_io_threads=0), "scheduler_io_threads"),
    (dict(per_worker_task_queue_size="many"), "per_worker_task_queue_size"),
    (dict(logging_config_file="/nonexistent/logging.ini"), "logging_config_file"),
    (dict(per_worker_capabilities={"gpu": "two"}), "per_worker_capabilities"),
])
def test_invalid_values_are_refused_as_the_command_line_refuses_them(started, kwargs, named):
    """One validation for Python and the command line: the same message, naming the argument."""
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError, match=r"SchedulerClusterCombo\(%s=\.\.\.\)" % named):
        SchedulerClusterCombo(**kwargs)
    assert started == {}
    assert set(os.listdir("/proc/self/fd")) <= before  # the sockets bound for it were closed
    with pytest.raises(ValueError, match=r"Cluster\(event_loop=\.\.\.\): expected one of builtin, uvloop"):
        Cluster("tcp://127.0.0.1:8516", event_loop="bogus")
