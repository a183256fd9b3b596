"""Configuration without processes: flags, TOML sections, precedence, aliases, validation.

The seed documents' command lines and TOML files are parsed here exactly as written
(tests/test_cli.py and tests/test_launcher.py run them for real).
"""

import os
import textwrap

import pytest

from scaler.config import components
from scaler.config.commands import (ALL_COMMANDS, CLUSTER, FIXED_NATIVE_ADAPTER, NATIVE_ADAPTER, OBJECT_STORAGE,
                                    SCHEDULER, WORKER_MANAGER_BAREMETAL)
from scaler.config.loader import (ConfigError, ConfigErrors, build_parser, config_from_table, parse_or_exit,
                                  resolve_command_line)
from scaler.version import __version__

SEED_004_UNIFIED = """\
# This is a unified configuration file for all Scaler components.

[scheduler]
scheduler_address = "tcp://127.0.0.1:6378"
object_storage_address = "tcp://127.0.0.1:6379"
monitor_address = "tcp://127.0.0.1:6380"
allocate_policy = "even"
logging_level = "INFO"
logging_paths = ["/dev/stdout", "/var/log/scaler/scheduler.log"]

[cluster]
scheduler_address = "tcp://127.0.0.1:6378"
num_of_workers = 8
per_worker_capabilities = "linux,cpu=8"
task_timeout_seconds = 600

[object_storage_server]
object_storage_address = "tcp://127.0.0.1:6379"

[webui]
monitor_address = "tcp://127.0.0.1:6380"
web_port = 8081
"""

SEED_003_DYNAMIC = """\
[[worker_manager]]
type = "baremetal_native"
scheduler_address = "tcp://127.0.0.1:8516"
worker_manager_id = "NAT|default"
max_task_concurrency = 4
logging_level = "INFO"
task_timeout_seconds = 60
"""

SEED_003_FIXED = """\
[[worker_manager]]
type = "baremetal_native"
scheduler_address = "tcp://127.0.0.1:8516"
worker_manager_id = "NAT|fixed"
mode = "fixed"
max_task_concurrency = 8
logging_level = "INFO"
"""

SEED_000_FIXED_ADAPTER = """\
# config.toml

[fixed_native_worker_adapter]
adapter_web_host = "0.0.0.0"
adapter_web_port = 8080
max_workers = 8
logging_level = "INFO"
task_timeout_seconds = 60
"""

SEED_001_NATIVE_ADAPTER = """\
# config.toml

[native_worker_adapter]
adapter_web_host = "0.0.0.0"
adapter_web_port = 8080
max_workers = 4
logging_level = "INFO"
task_timeout_seconds = 60
"""


@pytest.fixture
def toml(tmp_path):
    """Write a TOML file (dedented) and return its path."""
    def write(text, name="config.toml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


def load(command, argv):
    return resolve_command_line(command, argv).config


@pytest.fixture
def preload_modules(tmp_path, monkeypatch):
    """The modules the seeds' --preload examples name: the commands look for them at start."""
    for package, module in (("mypackage", "init"), ("pkg", "mod")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / (module + ".py")).write_text("def setup():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def problems(command, argv):
    """The error lines a command line produces (ConfigError(s) from values or files)."""
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        resolve_command_line(command, argv)
    exc = info.value
    return [str(e) for e in exc.errors] if isinstance(exc, ConfigErrors) else [str(exc)]


def table_problems(command, table, where="example.toml [section]"):
    with pytest.raises(ConfigErrors) as info:
        config_from_table(command, table, where)
    return [str(e) for e in info.value.errors]


# --- the seed examples, as written -----------------------------------------------------------------

def test_seed_004_unified_file_each_command_reads_its_own_section(toml):
    path = toml(SEED_004_UNIFIED)
    scheduler = load(SCHEDULER, ["--config", path])
    assert scheduler.address == "tcp://127.0.0.1:6378"
    assert scheduler.object_storage_address == "tcp://127.0.0.1:6379"
    assert scheduler.monitor_address == "tcp://127.0.0.1:6380"
    assert scheduler.policy_content == "allocate=even_load; scaling=no"  # allocate_policy = "even"
    assert scheduler.logging_paths == ("/dev/stdout", "/var/log/scaler/scheduler.log")
    assert scheduler.protected is True

    cluster = load(CLUSTER, ["--config", path])
    assert (cluster.scheduler_address, cluster.num_of_workers) == ("tcp://127.0.0.1:6378", 8)
    assert cluster.per_worker_capabilities == "linux,cpu=8"
    assert cluster.task_timeout_seconds == 600

    storage = load(OBJECT_STORAGE, ["--config", path])
    assert storage.address == "tcp://127.0.0.1:6379"


def test_seed_004_scenario_2_flag_overrides_the_section(toml):
    path = toml(SEED_004_UNIFIED)
    cluster = load(CLUSTER, ["--config", path, "--num-of-workers", "12"])
    assert cluster.num_of_workers == 12
    assert cluster.scheduler_address == "tcp://127.0.0.1:6378"  # the rest still from [cluster]
    assert cluster.per_worker_capabilities == "linux,cpu=8"


def test_seed_004_command_lines(preload_modules):
    assert load(SCHEDULER, ["tcp://127.0.0.1:8516", "-p", "False"]).protected is False
    assert load(SCHEDULER, ["tcp://127.0.0.1:8516", "-e", "uvloop"]).event_loop == "uvloop"
    cluster = load(CLUSTER, ["-n", "10", "tcp://127.0.0.1:8516", "-ds", "300"])
    assert (cluster.num_of_workers, cluster.death_timeout_seconds) == (10, 300)
    assert load(CLUSTER, ["tcp://127.0.0.1:8516", "--preload", "mypackage.init:setup"]).preload == \
        "mypackage.init:setup"
    preload = "mypackage.init:configure('production', debug=False)"
    assert load(CLUSTER, ["tcp://127.0.0.1:8516", "--preload", preload]).preload == preload


def test_seed_002_and_003_command_lines():
    scheduler = load(SCHEDULER, ["tcp://127.0.0.1:8516", "-pc", "allocate=even_load; scaling=vanilla"])
    assert scheduler.policy_content == "allocate=even_load; scaling=vanilla"
    assert load(SCHEDULER, ["tcp://127.0.0.1:8516", "--policy-content",
                            "allocate=even_load; scaling=vanilla"]).policy_content.endswith("vanilla")
    fixed = load(WORKER_MANAGER_BAREMETAL, ["tcp://127.0.0.1:8516", "--mode", "fixed", "--max-task-concurrency", "4"])
    assert (fixed.mode, fixed.max_task_concurrency, fixed.scheduler_address) == ("fixed", 4, "tcp://127.0.0.1:8516")
    dynamic = load(WORKER_MANAGER_BAREMETAL, ["tcp://127.0.0.1:8516", "--max-task-concurrency", "4"])
    assert (dynamic.mode, dynamic.max_task_concurrency) == ("dynamic", 4)
    assert load(WORKER_MANAGER_BAREMETAL, ["tcp://127.0.0.1:8516", "--mode", "FIXED", "-mtc", "8"]).mode == "fixed"
    native = load(NATIVE_ADAPTER, ["tcp://127.0.0.1:8516", "--max-workers", "8"])
    assert (native.mode, native.max_task_concurrency) == ("dynamic", 8)


def test_seed_003_worker_manager_files(toml):
    dynamic = load(WORKER_MANAGER_BAREMETAL, ["-c", toml(SEED_003_DYNAMIC)])
    assert (dynamic.worker_manager_id, dynamic.mode, dynamic.max_task_concurrency) == ("NAT|default", "dynamic", 4)
    assert dynamic.task_timeout_seconds == 60
    fixed = load(WORKER_MANAGER_BAREMETAL, ["-c", toml(SEED_003_FIXED)])
    assert (fixed.worker_manager_id, fixed.mode, fixed.max_task_concurrency) == ("NAT|fixed", "fixed", 8)


def test_seed_000_and_001_adapters_flags_and_files(toml, preload_modules):
    fixed_argv = ["tcp://127.0.0.1:8516", "--adapter-web-host", "0.0.0.0", "--adapter-web-port", "8080",
                  "--max-workers", "8", "--logging-level", "INFO", "--task-timeout-seconds", "60"]
    from_flags = load(FIXED_NATIVE_ADAPTER, fixed_argv)
    from_file = load(FIXED_NATIVE_ADAPTER, ["tcp://127.0.0.1:8516", "--config", toml(SEED_000_FIXED_ADAPTER)])
    assert from_flags == from_file
    assert (from_file.mode, from_file.max_task_concurrency, from_file.adapter_web_port) == ("fixed", 8, 8080)

    native_argv = ["tcp://127.0.0.1:8516", "--adapter-web-host", "0.0.0.0", "--adapter-web-port", "8080",
                   "--max-workers", "4", "--logging-level", "INFO", "--task-timeout-seconds", "60"]
    from_flags = load(NATIVE_ADAPTER, native_argv)
    from_file = load(NATIVE_ADAPTER, ["tcp://127.0.0.1:8516", "--config", toml(SEED_001_NATIVE_ADAPTER, "n.toml")])
    assert from_flags == from_file
    assert (from_file.mode, from_file.max_task_concurrency, from_file.adapter_web_host) == ("dynamic", 4, "0.0.0.0")
    assert load(FIXED_NATIVE_ADAPTER, ["tcp://127.0.0.1:8516", "-mw", "0", "-wit", "2", "--preload", "pkg.mod"]) \
        .io_threads == 2


def test_adapter_defaults():
    assert load(NATIVE_ADAPTER, ["tcp://127.0.0.1:8516"]).max_task_concurrency == -1
    assert load(FIXED_NATIVE_ADAPTER, ["tcp://127.0.0.1:8516"]).max_task_concurrency == \
        components.default_worker_count()


# --- precedence ---------------------------------------------------------------------------------

def test_precedence_flag_over_toml_over_default(toml):
    path = toml("""
        [scheduler]
        scheduler_address = "tcp://127.0.0.1:7000"
        client_timeout_seconds = 30
        protected = false
        logging_paths = ["/dev/stderr"]
    """)
    default = load(SCHEDULER, ["tcp://127.0.0.1:7000"])
    assert (default.client_timeout_seconds, default.protected, default.worker_timeout_seconds) == (60, True, 60)
    from_file = load(SCHEDULER, ["-c", path])
    assert (from_file.client_timeout_seconds, from_file.protected) == (30, False)
    assert from_file.logging_paths == ("/dev/stderr",)
    assert from_file.worker_timeout_seconds == 60  # not in the file: default
    from_flags = load(SCHEDULER, ["-c", path, "tcp://127.0.0.1:7001", "-ct", "5", "-p", "true", "-lp", "/dev/stdout"])
    assert from_flags.address == "tcp://127.0.0.1:7001"
    assert (from_flags.client_timeout_seconds, from_flags.protected) == (5, True)
    assert from_flags.logging_paths == ("/dev/stdout",)


def test_positional_may_come_from_the_file(toml):
    path = toml('[cluster]\nscheduler_address = "tcp://127.0.0.1:7000"\n')
    assert load(CLUSTER, ["-c", path]).scheduler_address == "tcp://127.0.0.1:7000"
    assert load(CLUSTER, ["-c", path, "tcp://127.0.0.1:7001"]).scheduler_address == "tcp://127.0.0.1:7001"


def test_allocate_policy_and_policy_content(toml):
    path = toml("""
        [scheduler]
        scheduler_address = "tcp://127.0.0.1:7000"
        policy_content = "allocate=even_load; scaling=vanilla"
        allocate_policy = "capability"
    """)
    assert load(SCHEDULER, ["-c", path]).policy_content == "allocate=capability; scaling=vanilla"
    # a --policy-content flag wins over the file's allocate_policy
    assert load(SCHEDULER, ["-c", path, "-pc", "allocate=even_load; scaling=no"]).policy_content == \
        "allocate=even_load; scaling=no"
    assert load(SCHEDULER, ["tcp://127.0.0.1:7000", "--allocate-policy", "even"]).policy_content == \
        "allocate=even_load; scaling=no"


def test_defaults_match_upstream_and_seeds():
    scheduler = load(SCHEDULER, ["tcp://127.0.0.1:8516"])
    assert scheduler.protected is True  # seed 004
    assert scheduler.policy_content == "allocate=even_load; scaling=no"
    assert scheduler.object_storage_address is None  # hosted on port + 1
    assert (scheduler.client_timeout_seconds, scheduler.worker_timeout_seconds) == (60, 60)
    assert scheduler.logging_paths == ("/dev/stdout",) and scheduler.logging_level == "INFO"
    cluster = load(CLUSTER, ["tcp://127.0.0.1:8516"])
    assert cluster.num_of_workers == components.default_worker_count()
    assert (cluster.heartbeat_interval_seconds, cluster.death_timeout_seconds, cluster.task_timeout_seconds) == \
        (2, 300, 0)
    assert (cluster.garbage_collect_interval_seconds, cluster.trim_memory_threshold_bytes) == (30, 1073741824)
    manager = load(WORKER_MANAGER_BAREMETAL, ["tcp://127.0.0.1:8516"])
    assert (manager.mode, manager.max_task_concurrency) == ("dynamic", components.default_worker_count())


# --- aliases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["scheduler_address", "bind_address", "address", "scheduler-address"])
def test_scheduler_address_keys(key):
    config = config_from_table(SCHEDULER, {key: "tcp://127.0.0.1:7000"}, "f [scheduler]")
    assert config.address == "tcp://127.0.0.1:7000"


@pytest.mark.parametrize("key", ["object_storage_address", "bind_address", "address"])
def test_object_storage_address_keys(key):
    assert config_from_table(OBJECT_STORAGE, {key: "tcp://127.0.0.1:7001"}, "f").address == "tcp://127.0.0.1:7001"


def test_object_storage_older_name_and_port():
    assert config_from_table(OBJECT_STORAGE, {"port": 7005}, "f").address == "tcp://127.0.0.1:7005"
    assert load(OBJECT_STORAGE, ["-n", "0.0.0.0", "-p", "7006"]).address == "tcp://0.0.0.0:7006"


@pytest.mark.parametrize("key", ["max_task_concurrency", "num_of_workers", "max-task-concurrency"])
def test_worker_manager_count_keys(key):
    table = {"type": "baremetal_native", "scheduler_address": "tcp://127.0.0.1:1", key: 5}
    assert config_from_table(WORKER_MANAGER_BAREMETAL, table, "f").max_task_concurrency == 5


@pytest.mark.parametrize("flag", ["-mtc", "-n", "--num-of-workers", "--max-task-concurrency"])
def test_worker_manager_count_flags(flag):
    assert load(WORKER_MANAGER_BAREMETAL, ["tcp://127.0.0.1:1", flag, "3"]).max_task_concurrency == 3


@pytest.mark.parametrize("key", ["max_workers", "max_task_concurrency", "num_of_workers"])
def test_adapter_count_keys(key):
    assert config_from_table(NATIVE_ADAPTER, {"scheduler_address": "tcp://127.0.0.1:1", key: 6}, "f") \
        .max_task_concurrency == 6


@pytest.mark.parametrize("argv,field,value", [
    (["-ds", "7"], "death_timeout_seconds", 7),
    (["-dts", "7"], "death_timeout_seconds", 7),
    (["--death-timeout-seconds", "7"], "death_timeout_seconds", 7),
    (["-hi", "3"], "heartbeat_interval_seconds", 3),
    (["-his", "3"], "heartbeat_interval_seconds", 3),
    (["--heartbeat-interval", "3"], "heartbeat_interval_seconds", 3),
    (["-it", "2"], "io_threads", 2),
    (["-wit", "2"], "io_threads", 2),
    (["--worker-io-threads", "2"], "io_threads", 2),
    (["-el", "builtin"], "event_loop", "builtin"),
    (["-hps", "false"], "hard_processor_suspend", False),
    (["--hard-processor-suspend=no"], "hard_processor_suspend", False),
    (["-wn", "a,b"], "worker_names", ("a", "b")),
    (["-pwc", "linux,cpu=4"], "per_worker_capabilities", "linux,cpu=4"),
    (["-wtqs", "10"], "per_worker_task_queue_size", 10),
    (["-gc", "5"], "garbage_collect_interval_seconds", 5),
    (["-tm", "100"], "trim_memory_threshold_bytes", 100),
    (["-tts", "9"], "task_timeout_seconds", 9),
    (["-osa", "tcp://127.0.0.1:9"], "object_storage_address", "tcp://127.0.0.1:9"),
    (["-ll", "debug"], "logging_level", "DEBUG"),
    (["-lp", "/dev/stdout", "/dev/stderr"], "logging_paths", ("/dev/stdout", "/dev/stderr")),
])
def test_cluster_flag_spellings(argv, field, value):
    # (a list flag takes every following word, as upstream: the address goes first)
    assert getattr(load(CLUSTER, ["tcp://127.0.0.1:8516"] + argv), field) == value


@pytest.mark.parametrize("table,field,value", [
    ({"heartbeat_interval": 4}, "heartbeat_interval_seconds", 4),
    ({"heartbeat_interval_seconds": 4}, "heartbeat_interval_seconds", 4),
    ({"worker_io_threads": 2}, "io_threads", 2),
    ({"io_threads": 2}, "io_threads", 2),
    ({"worker_names": ["a", "b"], "num_of_workers": 2}, "worker_names", ("a", "b")),
    ({"worker_names": "a,b"}, "num_of_workers", 2),
    ({"per_worker_capabilities": {"linux": -1, "cpu": 8}}, "per_worker_capabilities", "linux,cpu=8"),
    ({"hard-processor-suspend": False}, "hard_processor_suspend", False),
])
def test_cluster_toml_spellings(table, field, value):
    table = dict(table, scheduler_address="tcp://127.0.0.1:8516")
    assert getattr(config_from_table(CLUSTER, table, "f [cluster]"), field) == value


@pytest.mark.parametrize("argv,expected", [
    (["-p", "False"], False), (["-p", "false"], False), (["--protected", "true"], True), (["-p", "no"], False),
    (["-p", "0"], False), (["--protected=off"], False), (["-p"], True), ([], True),
])
def test_boolean_flags_take_a_value(argv, expected):
    assert load(SCHEDULER, ["tcp://127.0.0.1:8516"] + argv).protected is expected


@pytest.mark.parametrize("argv", [["-hps"], ["--hard-processor-suspend", "true"]])
def test_hard_processor_suspend_true_is_refused_with_the_reason(argv):
    with pytest.raises(Exception, match="hard_processor_suspend = true is not supported: scaler suspends no "
                                        "processor"):
        load(CLUSTER, ["tcp://127.0.0.1:8516"] + argv)


def test_bare_boolean_flag_does_not_swallow_the_address():
    config = load(SCHEDULER, ["-p", "tcp://127.0.0.1:8516"])
    assert (config.protected, config.address) == (True, "tcp://127.0.0.1:8516")


def test_scheduler_upstream_flags_are_accepted():
    config = load(SCHEDULER, [
        "tcp://127.0.0.1:8516", "-mt", "-1", "-ot", "30", "-ls", "-1", "-lbt", "3", "-it", "2", "-wit", "2",
        "-et", "simple", "-awu", "http://127.0.0.1:8080", "http://127.0.0.1:8081", "-qs", "50", "-sri", "0.5",
        "-ct", "10", "-wt", "20", "-ma", "tcp://127.0.0.1:9000", "-aosa", "tcp://10.0.0.1:8517", "-el", "builtin"])
    assert config.max_number_of_tasks_waiting == -1
    assert config.adapter_webhook_urls == ("http://127.0.0.1:8080", "http://127.0.0.1:8081")
    assert (config.per_worker_queue_size, config.status_report_interval_seconds) == (50, 0.5)
    assert (config.client_timeout_seconds, config.worker_timeout_seconds) == (10, 20)
    assert config.monitor_address == "tcp://127.0.0.1:9000"


# --- validation: one line naming file, section, key and what was expected -------------------------

@pytest.mark.parametrize("table,message", [
    ({"num_of_worker": 8}, "example.toml [cluster] num_of_worker: unknown key (did you mean 'num_of_workers'?)"),
    ({"num_of_workers": "eight"},
     "example.toml [cluster] num_of_workers: expected an integer >= 0, got 'eight'"),
    ({"num_of_workers": "8"},
     "example.toml [cluster] num_of_workers: expected an integer >= 0, got '8' (a string: write the number "
     "without quotes)"),
    ({"num_of_workers": 2.5}, "example.toml [cluster] num_of_workers: expected an integer >= 0, got 2.5"),
    ({"num_of_workers": True}, "example.toml [cluster] num_of_workers: expected an integer >= 0, got true"),
    ({"num_of_workers": -2}, "example.toml [cluster] num_of_workers: expected an integer >= 0, got -2"),
    ({"death_timeout_seconds": 0}, "example.toml [cluster] death_timeout_seconds: expected a number > 0, got 0"),
    ({"hard_processor_suspend": "maybe"},
     "example.toml [cluster] hard_processor_suspend: expected true or false, got 'maybe'"),
    ({"logging_level": "LOUD"},
     "example.toml [cluster] logging_level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
    ({"logging_paths": [1]},
     "example.toml [cluster] logging_paths: expected one or more of /dev/stdout, /dev/stderr or writable file "
     "paths, got an array"),
    ({"per_worker_capabilities": "cpu=many"},
     "example.toml [cluster] per_worker_capabilities: expected capabilities like linux,cpu=4, got 'cpu=many' "
     "('many' is not an integer)"),
    ({"worker_names": "a,a", "num_of_workers": 2}, "example.toml [cluster] worker_names: 'a' is given twice"),
    ({"fancy": 1}, "example.toml [cluster] fancy: unknown key (run 'scaler_cluster -h' to list the valid keys)"),
    ({"event_loop": "asyncio"}, "example.toml [cluster] event_loop: expected one of builtin, uvloop, got 'asyncio'"),
])
def test_bad_cluster_values(table, message):
    table = dict({"scheduler_address": "tcp://127.0.0.1:8516"}, **table)
    assert table_problems(CLUSTER, table, "example.toml [cluster]") == [message]


@pytest.mark.parametrize("table,message", [
    ({"scheduler_address": "tcp://127.0.0.1:70000"},
     "[scheduler] scheduler_address: expected an address like tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH; "
     "address "
     "'tcp://127.0.0.1:70000': port 70000 is out of range 1-65535"),
    ({"scheduler_address": "127.0.0.1:8516"},
     "[scheduler] scheduler_address: expected an address like tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH; "
     "address "
     "'127.0.0.1:8516' has no scheme: expected tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH"),
    ({"scheduler_address": "udp://127.0.0.1:8516"},
     "[scheduler] scheduler_address: expected an address like tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH; "
     "address "
     "'udp://127.0.0.1:8516': unsupported scheme 'udp' (supported: tcp, tls, ipc)"),
    ({"scheduler_address": 6378},
     "[scheduler] scheduler_address: expected an address like tcp://HOST:PORT, tls://HOST:PORT or ipc://PATH, "
     "got 6378"),
    ({"protected": "maybe"}, "[scheduler] protected: expected true or false, got 'maybe'"),
    ({"client_timeout_seconds": 0}, "[scheduler] client_timeout_seconds: expected a number > 0, got 0"),
    ({"load_balance_seconds": 0}, "[scheduler] load_balance_seconds: expected a number other than 0, got 0"),
    ({"max_number_of_tasks_waiting": -2},
     "[scheduler] max_number_of_tasks_waiting: expected an integer >= -1, got -2"),
    ({"policy_content": "allocate=evn"},
     "[scheduler] policy_content: policy 'allocate=evn': allocate=evn is not one of even_load, capability"),
    ({"allocate_policy": "random"},
     "[scheduler] allocate_policy: expected one of even, even_load, capability, got 'random'"),
    ({"protectd": False}, "[scheduler] protectd: unknown key (did you mean 'protected'?)"),
    ({"tls_cert": "/etc/cert.pem"},
     "[scheduler] tls_key: --tls-cert and --tls-key go together: give both (tls_cert and tls_key in TOML)"),
    ({"scheduler_address": "tls://127.0.0.1:8516"},
     "[scheduler] scheduler_address: a tls:// address needs --tls-cert and --tls-key (tls_cert and tls_key in "
     "TOML): the certificate this side presents"),
    ({"tls_ca": "/nonexistent/ca.pem"},
     "[scheduler] tls_ca: cannot read TLS CA file '/nonexistent/ca.pem': No such file or directory"),
    ({"logging_config_file": "/nonexistent/logging.ini"},
     "[scheduler] logging_config_file: expected a path to a logging.config file, got '/nonexistent/logging.ini' "
     "(no such file)"),
    ({"policy_engine_type": "waterfall_v1"},
     "[scheduler] policy_engine_type: 'waterfall_v1' is not available in this build: expected simple"),
    ({"object_storage_address": "tcp://127.0.0.1:8516"},
     "[scheduler] object_storage_address: must differ from the scheduler address tcp://127.0.0.1:8516"),
])
def test_bad_scheduler_values(table, message):
    table = dict({"scheduler_address": "tcp://127.0.0.1:8516"}, **table)
    assert table_problems(SCHEDULER, table, "[scheduler]") == [message]


def test_every_problem_of_a_section_is_reported():
    lines = table_problems(SCHEDULER, {"scheduler_address": "x", "protectd": 1, "client_timeout_seconds": -1},
                           "f.toml [scheduler]")
    assert [line.split(":")[0] for line in lines] == [
        "f.toml [scheduler] scheduler_address", "f.toml [scheduler] protectd",
        "f.toml [scheduler] client_timeout_seconds"]


def test_secrets_are_not_echoed():
    assert table_problems(SCHEDULER, {"scheduler_address": "tcp://127.0.0.1:1", "auth_key": 12345678}, "f") == [
        "f auth_key: expected a string, got a value of type int"]


def test_same_setting_twice_under_two_names():
    assert table_problems(SCHEDULER, {"scheduler_address": "tcp://127.0.0.1:1", "bind_address": "tcp://127.0.0.1:2"},
                          "f [scheduler]") == ["f [scheduler] bind_address: given twice (also as 'scheduler_address')"]


def test_log_path_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = str(blocker / "scheduler.log")
    assert table_problems(SCHEDULER, {"scheduler_address": "tcp://127.0.0.1:1", "logging_paths": [path]}, "f") == [
        "f logging_paths: cannot create log file %r: %r is not a writable directory" % (path, str(blocker))]


def test_logging_config_file_is_parsed(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[handlers]\nkeys=\n")
    lines = table_problems(CLUSTER, {"scheduler_address": "tcp://127.0.0.1:1", "logging_config_file": str(bad)}, "f")
    assert lines == ["f logging_config_file: %r is not a usable logging.config file: no [loggers] section" % str(bad)]
    good = tmp_path / "good.json"
    good.write_text('{"version": 1}')
    assert config_from_table(CLUSTER, {"scheduler_address": "tcp://127.0.0.1:1", "logging_config_file": str(good)},
                             "f").logging_config_file == str(good)


def test_missing_required_value(toml):
    assert table_problems(CLUSTER, {"num_of_workers": 2}, "example.toml [cluster]") == [
        "example.toml [cluster] scheduler_address: missing required value (or give SCHEDULER_ADDRESS on the "
        "command line)"]
    assert problems(SCHEDULER, []) == [
        "ADDRESS is required: give it on the command line, or as 'scheduler_address' in [scheduler] of a --config "
        "file"]
    path = toml("[scheduler]\nprotected = false\n", "s.toml")
    assert problems(SCHEDULER, ["-c", path]) == [
        "%s [scheduler] scheduler_address: missing required value (or give ADDRESS on the command line)" % path]


def test_worker_names_must_match_the_count():
    assert table_problems(CLUSTER, {"scheduler_address": "tcp://127.0.0.1:1", "worker_names": ["a", "b"],
                                    "num_of_workers": 3}, "f [cluster]") == [
        "f [cluster] worker_names: 2 names given for 3 workers (num_of_workers): give one name per worker"]


def test_fixed_mode_needs_a_count():
    table = {"type": "baremetal_native", "scheduler_address": "tcp://127.0.0.1:1", "mode": "fixed",
             "max_task_concurrency": -1}
    assert table_problems(WORKER_MANAGER_BAREMETAL, table, "f [[worker_manager]] #1") == [
        "f [[worker_manager]] #1 max_task_concurrency: fixed mode starts exactly this many workers: expected an "
        "integer >= 0, got -1"]


def test_adapter_rejects_keys_it_fixes():
    assert table_problems(NATIVE_ADAPTER, {"scheduler_address": "tcp://127.0.0.1:1", "mode": "fixed"}, "f") == [
        "f mode: not used by scaler_worker_adapter_native"]
    assert table_problems(NATIVE_ADAPTER, {"scheduler_address": "tcp://127.0.0.1:1", "adapter_web_port": 70000},
                          "f") == ["f adapter_web_port: expected an integer from 1 to 65535, got 70000"]


def test_port_plus_one_out_of_range():
    assert problems(SCHEDULER, ["tcp://127.0.0.1:65535"]) == [
        "argument ADDRESS: port + 1 (the default object_storage_address) is out of range: give "
        "--object-storage-address"]


def test_file_problems(toml, tmp_path):
    missing = str(tmp_path / "missing.toml")
    assert problems(SCHEDULER, ["-c", missing]) == ["%s: cannot read the file: No such file or directory" % missing]
    broken = toml("[scheduler\n", "broken.toml")
    [line] = problems(SCHEDULER, ["-c", broken])
    assert line.startswith("%s: not valid TOML: " % broken)
    other = toml(SEED_004_UNIFIED, "unified.toml")
    assert problems(WORKER_MANAGER_BAREMETAL, ["-c", other]) == [
        '%s: no [[worker_manager]] entry with type = "baremetal_native"' % other]
    assert problems(NATIVE_ADAPTER, ["-c", other]) == [
        "%s: no [native_worker_adapter] section for scaler_worker_adapter_native (sections found: [scheduler], "
        "[cluster], [object_storage_server], [webui])" % other]
    two = toml(SEED_003_DYNAMIC + "\n" + SEED_003_FIXED, "two.toml")
    assert problems(WORKER_MANAGER_BAREMETAL, ["-c", two]) == [
        '%s: 2 [[worker_manager]] entries with type = "baremetal_native" (entries #1, #2): this command runs one; '
        "use the 'scaler' launcher to run several" % two]
    wrong = toml('[[worker_manager]]\ntype = "baremetal_native"\nmax_task_concurrency = "four"\n', "w.toml")
    assert problems(WORKER_MANAGER_BAREMETAL, ["-c", wrong]) == [
        "%s [[worker_manager]] #1 max_task_concurrency: expected an integer >= -1, got 'four'" % wrong]


def test_errors_exit_2_with_one_line_per_problem(toml, capsys):
    path = toml('[cluster]\nscheduler_address = "tcp://127.0.0.1:8516"\nnum_of_worker = 8\n', "example.toml")
    with pytest.raises(SystemExit) as info:
        parse_or_exit(CLUSTER, ["-c", path])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "scaler_cluster: error: %s [cluster] num_of_worker: unknown key (did you mean " \
                  "'num_of_workers'?)\n" % path


@pytest.mark.parametrize("command,argv,message", [
    (CLUSTER, ["-n", "eight", "tcp://127.0.0.1:1"], "argument -n/--num-of-workers: expected an integer >= 0, got "
                                                      "'eight'"),
    (SCHEDULER, ["tcp://127.0.0.1:70000"], "argument ADDRESS: expected an address like tcp://HOST:PORT, "
                                           "tls://HOST:PORT or ipc://PATH; address 'tcp://127.0.0.1:70000': port "
                                           "70000 is out of range 1-65535"),
    (SCHEDULER, ["tcp://127.0.0.1:1", "-p", "maybe"], "unrecognized arguments: maybe"),
    (SCHEDULER, ["tcp://127.0.0.1:1", "-ct", "0"], "argument -ct/--client-timeout-seconds: expected a number > 0, "
                                                   "got '0'"),
    (SCHEDULER, ["tcp://127.0.0.1:1", "-e", "tornado"], "argument -el/-e/--event-loop: expected one of builtin, "
                                                        "uvloop, got 'tornado'"),
    (FIXED_NATIVE_ADAPTER, ["tcp://127.0.0.1:1", "-mw", "-1"], "argument -mw/--max-workers/--max-task-concurrency/"
                                                               "--num-of-workers: expected an integer >= 0, got "
                                                               "'-1'"),
    (CLUSTER, ["tcp://127.0.0.1:1", "--num-workers", "3"], "unrecognized arguments: --num-workers 3"),
])
def test_bad_flag_values_exit_2(command, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_or_exit(command, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "%s: error: %s" % (command.prog, message)
    assert "Traceback" not in err


# --- the declarations themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: c.prog)
def test_help_lists_every_flag_with_its_default(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    text = build_parser(command).format_help()
    for option in command.options():
        if option.positional:
            assert option.metavar in text
            continue
        for flag in option.flags:
            assert flag in text, flag
        assert "(default: %s)" % option.default_text() in " ".join(text.split()), option.name
    assert "--config" in text and "--version" in text


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: c.prog)
def test_version(command, capsys):
    with pytest.raises(SystemExit) as info:
        parse_or_exit(command, ["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == "%s %s (scaler)\n" % (command.prog, __version__)  # it names the command


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: c.prog)
def test_declarations_are_consistent(command):
    keys = {}
    for option in command.options():
        assert option.spec.help, option.name
        for key in option.toml_keys:
            assert key not in keys, "%s: key %s declared twice" % (command.prog, key)
            keys[key] = option.name
        assert option.key == option.long.replace("-", "_") or option.positional, option.name
        if option.kind == "choice":
            assert option.default() is None or option.default() in option.spec.choices
    # every declared default is itself valid
    defaults = {o.name: o.default() for o in command.options()}
    assert command.config_class(**{**{f: v for f, v in defaults.items()}, **command.fixed})


def test_config_objects_stay_plain_dataclasses():
    # the rest of scaler builds these directly with keyword arguments
    config = components.SchedulerConfig(address="tcp://127.0.0.1:1", protected=False)
    assert config.protected is False and config.policy_content == "allocate=even_load; scaling=no"
    components.ClusterConfig(scheduler_address="tcp://127.0.0.1:1", num_of_workers=2)
    components.WorkerManagerConfig(scheduler_address="tcp://127.0.0.1:1", mode="fixed")
    components.WorkerConfig(scheduler_address="tcp://127.0.0.1:1", name="w")


def test_launcher_plan(toml):
    from scaler.launcher import plan
    components_ = plan(toml(SEED_004_UNIFIED))
    assert [c.name for c in components_] == ["object_storage_server", "scheduler", "cluster", "webui"]
    assert components_[3].config.monitor_address == "tcp://127.0.0.1:6380"  # the file's [webui]
    # a [gui] without a monitor address reads the [scheduler]'s: its port + 2
    gui = plan(toml('[scheduler]\nscheduler_address = "tcp://127.0.0.1:7000"\n[gui]\ngui_address = "127.0.0.1:0"\n',
                    "gui.toml"))
    assert [c.name for c in gui] == ["scheduler", "gui"] and gui[1].config.monitor_address == "tcp://127.0.0.1:7002"
    only_manager = plan(toml(SEED_003_DYNAMIC, "wm.toml"))
    assert [c.name for c in only_manager] == ["worker_manager NAT|default"]
    storage_and_scheduler = plan(toml('[object_storage_server]\nbind_address = "tcp://0.0.0.0:7001"\n'
                                      '[scheduler]\nbind_address = "tcp://127.0.0.1:7000"\n', "oss.toml"))
    # the scheduler uses the file's object storage server instead of hosting its own on port + 1
    assert storage_and_scheduler[1].config.object_storage_address == "tcp://127.0.0.1:7001"


@pytest.mark.parametrize("text,messages", [
    ("[schedular]\nbind_address = \"tcp://127.0.0.1:1\"\n",
     ["{path} [schedular]: unknown section (did you mean [scheduler]?)"]),
    ("[webui]\nweb_port = 1\n",
     ["{path}: nothing to start: expected at least one of [object_storage_server], [scheduler], [cluster] or "
      "[[worker_manager]]"]),
    ("[[worker_manager]]\ntype = \"symphony\"\n",
     ["{path} [[worker_manager]] #1 type: unknown worker manager type 'symphony': expected one of "
      "\"baremetal_native\""]),
    ("[worker_manager]\ntype = \"baremetal_native\"\n",
     ["{path} [worker_manager]: expected an array of tables: write [[worker_manager]]"]),
    ("[scheduler]\nbind_address = \"tcp://127.0.0.1:1\"\nprotectd = 1\n[cluster]\nnum_of_workers = \"x\"\n",
     ["{path} [scheduler] protectd: unknown key (did you mean 'protected'?)",
      "{path} [cluster] num_of_workers: expected an integer >= 0, got 'x'"]),
])
def test_launcher_plan_errors(toml, text, messages):
    from scaler.launcher import plan
    path = toml(text, "bad.toml")
    with pytest.raises(ConfigErrors) as info:
        plan(path)
    assert [str(e) for e in info.value.errors] == [m.format(path=path) for m in messages]


def test_import_scaler_stays_light():
    import subprocess
    import sys
    code = "import sys, scaler; print(sorted(m for m in sys.modules if m.startswith('scaler')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "['scaler', 'scaler.version']", out.stderr


@pytest.mark.parametrize("spec, problem", [
    ("nosuchmodule:setup", "no module named 'nosuchmodule'"),
    ("json.nosuch", "no module named 'json.nosuch'"),
    ("itertools.chain:x", "'itertools' is a module, not a package"),
    ("setup.py", "looks like a file path"),
    ("json:loads(", "cannot parse"),
    ("json:loads(x)", "arguments must be literals"),
])
def test_a_bad_preload_is_one_line_when_the_command_starts(spec, problem, capsys, tmp_path):
    """Checked once by the command (without running the module's code), not by every worker."""
    for command in (CLUSTER, WORKER_MANAGER_BAREMETAL, FIXED_NATIVE_ADAPTER, NATIVE_ADAPTER):
        with pytest.raises(SystemExit) as info:
            parse_or_exit(command, ["tcp://127.0.0.1:8516", "--preload", spec])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert problem in err and spec in err and len(err.splitlines()) == 1, err
    table = tmp_path / "bad_preload.toml"
    table.write_text('[cluster]\nscheduler_address = "tcp://127.0.0.1:8516"\npreload = "%s"\n' % spec.replace('"', '\\"'))
    with pytest.raises(SystemExit):
        parse_or_exit(CLUSTER, ["-c", str(table)])
    assert problem in capsys.readouterr().err


def test_checking_a_preload_runs_none_of_its_code(tmp_path, monkeypatch):
    from scaler.config.preload import check_preload

    (tmp_path / "noisy_pkg").mkdir()
    (tmp_path / "noisy_pkg" / "__init__.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "noisy_pkg" / "hooks.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_preload("noisy_pkg.hooks:setup(1, debug=True)")
    import sys
    assert "noisy_pkg" not in sys.modules and "noisy_pkg.hooks" not in sys.modules
