"""``--auth-key-file`` / ``auth_key_file``: the shared key read from a private file.

Precedence: the key itself (``--auth-key`` / ``auth_key``) > the key file > ``SCALER_AUTH_KEY``
(between a flag and a TOML value, the flag wins, as for every setting). A file that group or
other users may read or write, a missing file and an empty one are refused with one line.
"""

import os
import signal
import subprocess
import sys

import pytest

from e2e_support import REPO_ROOT, exit_code_within, free_port_pair, subprocess_env
from scaler.config.commands import ALL_COMMANDS, CLUSTER, GUI, OBJECT_STORAGE, SCHEDULER, TOP, WORKER_MANAGER_BAREMETAL
from scaler.config.key_file import read_key_file
from scaler.config.loader import ConfigError, ConfigErrors, config_from_table, resolve_command_line

KEY = "file-s3cret"
TIMEOUT = 60


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """start_component, called in-process here, installs SIGINT/SIGTERM handlers for its
    process: put this one's back (a later test's Ctrl-C handling depends on them)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def add(a, b):
    return a + b


def key_file(tmp_path, text=KEY + "\n", mode=0o600, name="key"):
    path = tmp_path / name
    path.write_text(text)
    os.chmod(str(path), mode)
    return str(path)


def problems(command, argv):
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        resolve_command_line(command, argv)
    exc = info.value
    return [str(e) for e in exc.errors] if isinstance(exc, ConfigErrors) else [str(exc)]


# --- reading the file --------------------------------------------------------------------------

def test_one_trailing_newline_is_stripped(tmp_path):
    assert read_key_file(key_file(tmp_path, "abc\n")) == "abc"
    assert read_key_file(key_file(tmp_path, "abc")) == "abc"
    assert read_key_file(key_file(tmp_path, "abc\r\n")) == "abc"
    assert read_key_file(key_file(tmp_path, "abc\n\n")) == "abc\n"  # only one
    assert read_key_file(key_file(tmp_path, " a b \n")) == " a b "  # nothing else is touched


def test_owner_only_modes_are_accepted(tmp_path):
    assert read_key_file(key_file(tmp_path, mode=0o400)) == KEY
    assert read_key_file(key_file(tmp_path, mode=0o600)) == KEY


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o610])
def test_a_file_other_users_can_reach_is_refused(tmp_path, mode):
    path = key_file(tmp_path, mode=mode)
    with pytest.raises(ValueError) as info:
        read_key_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert path in message and "%04o" % mode in message and "chmod 600" in message


@pytest.mark.parametrize("text", ["", "\n"])
def test_an_empty_file_is_refused(tmp_path, text):
    path = key_file(tmp_path, text)
    with pytest.raises(ValueError, match="empty"):
        read_key_file(path)


def test_a_missing_file_is_refused(tmp_path):
    path = str(tmp_path / "nope")
    with pytest.raises(ValueError) as info:
        read_key_file(path)
    assert path in str(info.value) and "no such file" in str(info.value).lower()


def test_a_directory_is_refused(tmp_path):
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="(?i)not a regular file|is a directory"):
        read_key_file(str(directory))


def test_a_binary_file_is_refused(tmp_path):
    path = tmp_path / "bin"
    path.write_bytes(b"\xff\xfekey")
    os.chmod(str(path), 0o600)
    with pytest.raises(ValueError, match="UTF-8"):
        read_key_file(str(path))


# --- every command that takes --auth-key takes --auth-key-file ---------------------------------------

def test_every_command_with_auth_key_has_auth_key_file():
    for command in ALL_COMMANDS:
        names = command.option_map()
        if "auth_key" in names:
            assert "auth_key_file" in names, command.prog
            assert "--auth-key-file" in names["auth_key_file"].flags
            assert "auth_key_file" in names["auth_key_file"].toml_keys


COMMANDS = [(SCHEDULER, "tcp://127.0.0.1:8516"), (OBJECT_STORAGE, "tcp://127.0.0.1:8517"),
            (CLUSTER, "tcp://127.0.0.1:8516"), (WORKER_MANAGER_BAREMETAL, "tcp://127.0.0.1:8516"),
            (TOP, "tcp://127.0.0.1:8518"), (GUI, "tcp://127.0.0.1:8518")]
SCHEDULER_ADDRESS = "tcp://127.0.0.1:8516"


@pytest.mark.parametrize("command,address", COMMANDS, ids=[c.prog for c, _ in COMMANDS])
def test_flag_and_toml_key(tmp_path, command, address):
    path = key_file(tmp_path)
    config = resolve_command_line(command, [address, "--auth-key-file", path]).config
    assert config.auth_key == KEY
    config = config_from_table(command, {command.positional: address, "auth_key_file": path}, "f")
    assert config.auth_key == KEY


def test_the_key_wins_over_the_file(tmp_path):
    path = key_file(tmp_path)
    address = SCHEDULER_ADDRESS
    assert resolve_command_line(SCHEDULER, [address, "--auth-key", "flag", "--auth-key-file", path]).config.auth_key \
        == "flag"
    table = {"address": address, "auth_key": "toml", "auth_key_file": path}
    assert config_from_table(SCHEDULER, table, "f").auth_key == "toml"


def test_a_flag_wins_over_the_file_s_toml_setting(tmp_path):
    """Between sources the usual order holds: a flag overrides the TOML file, whichever is the key."""
    path = key_file(tmp_path)
    toml = tmp_path / "c.toml"
    toml.write_text('[scheduler]\naddress = "tcp://127.0.0.1:8516"\nauth_key = "toml"\n')
    assert resolve_command_line(SCHEDULER, ["-c", str(toml), "--auth-key-file", path]).config.auth_key == KEY
    toml.write_text('[scheduler]\naddress = "tcp://127.0.0.1:8516"\nauth_key_file = "%s"\n' % path)
    assert resolve_command_line(SCHEDULER, ["-c", str(toml), "--auth-key", "flag"]).config.auth_key == "flag"


def test_the_file_wins_over_the_environment(tmp_path, monkeypatch):
    from scaler.utility.process import start_component

    monkeypatch.setenv("SCALER_AUTH_KEY", "from-env")
    config = resolve_command_line(SCHEDULER, [SCHEDULER_ADDRESS, "--auth-key-file", key_file(tmp_path),
                                              "-lp", str(tmp_path / "log")]).config
    start_component(config, "test")
    assert config.auth_key == KEY
    config = resolve_command_line(SCHEDULER, [SCHEDULER_ADDRESS, "-lp", str(tmp_path / "log")]).config
    start_component(config, "test")
    assert config.auth_key == "from-env"


def test_bad_key_files_are_one_line_naming_the_flag_or_key(tmp_path):
    path = key_file(tmp_path, mode=0o644)
    lines = problems(SCHEDULER, [SCHEDULER_ADDRESS, "--auth-key-file", path])
    assert len(lines) == 1 and lines[0].startswith("argument --auth-key-file: key file"), lines
    assert "chmod 600" in lines[0]
    with pytest.raises(ConfigErrors) as info:
        config_from_table(SCHEDULER, {"address": SCHEDULER_ADDRESS, "auth_key_file": str(tmp_path / "no")},
                          "f.toml [scheduler]")
    assert [str(e) for e in info.value.errors][0].startswith("f.toml [scheduler] auth_key_file: ")


def test_the_key_is_never_passed_on_to_children_as_a_path_or_on_a_command_line(tmp_path, monkeypatch):
    from scaler.utility import process as proc_util

    record = {}

    class Exited:
        pid = 0
        returncode = 0

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    def spawn(name, submodule, args, env=None, **_options):
        record["args"], record["env"] = list(args), dict(env or {})
        return proc_util.Child(name, Exited(), -1)

    monkeypatch.setattr(proc_util, "spawn", spawn)
    config = resolve_command_line(CLUSTER, [SCHEDULER_ADDRESS, "--auth-key-file", key_file(tmp_path)]).config
    proc_util.spawn_component("cluster", "cluster", config)
    assert record["env"]["SCALER_AUTH_KEY"] == KEY
    assert not any(KEY in word or "key" == os.path.basename(word) for word in record["args"])
    child = resolve_command_line(CLUSTER, record["args"]).config
    assert child.auth_key is None and child.auth_key_file is None


# --- Python API ------------------------------------------------------------------------------------

def test_python_api_takes_a_key_file(tmp_path, monkeypatch):
    from scaler import Client, Cluster, SchedulerClusterCombo

    monkeypatch.delenv("SCALER_AUTH_KEY", raising=False)
    good = key_file(tmp_path)
    bad = key_file(tmp_path, mode=0o644, name="bad")
    for make in (lambda f: Client("tcp://127.0.0.1:1", auth_key_file=f, timeout_seconds=1),
                 lambda f: Cluster("tcp://127.0.0.1:1", n_workers=1, auth_key_file=f),
                 lambda f: SchedulerClusterCombo(n_workers=0, auth_key_file=f)):
        with pytest.raises(ValueError, match="chmod 600"):
            make(bad)
    assert Cluster("tcp://127.0.0.1:1", n_workers=1, auth_key_file=good)._auth_key == KEY
    assert Cluster("tcp://127.0.0.1:1", n_workers=1, auth_key="k", auth_key_file=good)._auth_key == "k"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="e2e tests need Linux")
def test_end_to_end_with_key_files(tmp_path, procs):
    from scaler import Client
    from scaler.utility.exceptions import AuthenticationError

    path = key_file(tmp_path)
    port = free_port_pair()
    address = "tcp://127.0.0.1:%d" % port
    toml = tmp_path / "cluster.toml"
    toml.write_text('[cluster]\nscheduler_address = "%s"\nnum_of_workers = 1\nauth_key_file = "%s"\n'
                    % (address, path))
    scheduler = procs.python(["-m", "scaler.scheduler", address, "--auth-key-file", path], "scheduler")
    cluster = procs.python(["-m", "scaler.cluster", "-c", str(toml)], "cluster")
    try:
        with Client(address, auth_key_file=path, timeout_seconds=TIMEOUT) as client:
            assert client.submit(add, 20, 22).result(timeout=TIMEOUT) == 42
    except Exception:
        raise AssertionError("no result:\n--- scheduler ---\n%s\n--- cluster ---\n%s"
                             % (scheduler.output.text(), cluster.output.text()))
    with pytest.raises(AuthenticationError):
        Client(address, auth_key="wrong", timeout_seconds=10)
    with open("/proc/%d/cmdline" % scheduler.pid, "rb") as f:
        assert KEY.encode() not in f.read()
    for child in (cluster, scheduler):
        child.popen.send_signal(15)
    assert exit_code_within(cluster, 20) == 0, cluster.output.text()
    assert exit_code_within(scheduler, 20) == 0, scheduler.output.text()
    assert KEY not in scheduler.output.text() + cluster.output.text()


@pytest.mark.parametrize("module", [["scaler.scheduler", "tcp://127.0.0.1:1"],
                                    ["scaler.object_storage", "tcp://127.0.0.1:1"],
                                    ["scaler.cluster", "tcp://127.0.0.1:1"],
                                    ["scaler.worker_manager", "baremetal_native", "tcp://127.0.0.1:1"],
                                    ["scaler.top", "tcp://127.0.0.1:1"]])
def test_a_readable_key_file_stops_the_command_with_one_line(tmp_path, module):
    path = key_file(tmp_path, mode=0o644)
    run = subprocess.run([sys.executable, "-m", *module, "--auth-key-file", path], cwd=REPO_ROOT,
                         env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "error: argument --auth-key-file: key file %r" % path in lines[0] and "chmod 600" in lines[0], lines[0]


def test_the_launcher_reads_key_files_of_every_section(tmp_path):
    from scaler.launcher import plan

    path = key_file(tmp_path)
    toml = tmp_path / "all.toml"
    toml.write_text('[scheduler]\nbind_address = "tcp://127.0.0.1:8516"\nauth_key_file = "%s"\n\n'
                    '[[worker_manager]]\ntype = "baremetal_native"\nscheduler_address = "tcp://127.0.0.1:8516"\n'
                    'auth_key_file = "%s"\n' % (path, path))
    components = plan(str(toml))
    assert [c.config.auth_key for c in components] == [KEY, KEY]
    os.chmod(path, 0o644)
    with pytest.raises(ConfigErrors) as info:
        plan(str(toml))
    assert len(info.value.errors) == 2 and all("chmod 600" in str(e) for e in info.value.errors)
