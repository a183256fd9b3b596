"""Upstream's Python API as a whole: module paths, configuration objects, process handles.

Code written for OpenGRIS Scaler imports more than ``scaler.Client``: these tests import
every path such code uses, from an installed copy and from a vendored copy, check that each
configuration face validates as upstream does and stands for scaler's own configuration, and
drive the behaviours upstream users rely on (process handles, ``running()``, profiling,
binding at submit) on real processes.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import types

import pytest

from e2e_support import REPO_ROOT, exit_code_within, subprocess_env
from test_vendoring import _copy_module

TIMEOUT = 60

# (module, names): every upstream path this build provides.
UPSTREAM_PATHS = [
    ("scaler", ["Client", "ScalerFuture", "Serializer", "SchedulerClusterCombo", "Scheduler", "Cluster",
                "__version__"]),
    ("scaler.cluster.combo", ["SchedulerClusterCombo"]),
    ("scaler.cluster.cluster", ["Cluster"]),
    ("scaler.client.client", ["Client"]),
    ("scaler.client.future", ["ScalerFuture"]),
    ("scaler.client.object_reference", ["ObjectReference"]),
    ("scaler.client.serializer", ["Serializer", "DefaultSerializer"]),
    ("scaler.client.serializer.mixins", ["Serializer"]),
    ("scaler.client.serializer.default", ["DefaultSerializer"]),
    ("scaler.utility.exceptions", ["TaskNotFoundError", "WorkerDiedError", "NoWorkerError", "DisconnectedError",
                                   "ProcessorDiedError", "TaskExceptionNotSerializableError",
                                   "DeserializeObjectError", "MissingObjects", "ClientCancelledException",
                                   "ClientShutdownException", "ClientQuitException", "ObjectStorageException",
                                   "CapnpDeserializationError"]),
    ("scaler.utility.metadata.profile_result", ["ProfileResult"]),
    ("scaler.utility.graph", ["CycleError"]),
    ("scaler.config.section.scheduler", ["SchedulerConfig", "PolicyConfig"]),
    ("scaler.config.section.native_worker_manager", ["NativeWorkerManagerConfig", "NativeWorkerManagerMode"]),
    ("scaler.config.section.webgui", ["WebGUIConfig"]),
    ("scaler.config.common.worker", ["WorkerConfig"]),
    ("scaler.config.common.logging", ["LoggingConfig"]),
    ("scaler.config.common.worker_manager", ["WorkerManagerConfig"]),
    ("scaler.config.common.security", ["SecurityConfig"]),
    ("scaler.config.types.address", ["AddressConfig", "SocketType"]),
    ("scaler.config.types.worker", ["WorkerCapabilities", "WorkerNames"]),
    ("scaler.config.types.http", ["HTTPConfig"]),
    ("scaler.config.defaults", ["DEFAULT_CLIENT_TIMEOUT_SECONDS", "DEFAULT_WORKER_TIMEOUT_SECONDS",
                                "DEFAULT_HEARTBEAT_INTERVAL_SECONDS", "DEFAULT_WORKER_DEATH_TIMEOUT",
                                "DEFAULT_PER_WORKER_QUEUE_SIZE", "DEFAULT_MAX_TASK_CONCURRENCY",
                                "DEFAULT_LOGGING_LEVEL", "DEFAULT_LOGGING_PATHS", "DEFAULT_IO_THREADS"]),
    ("scaler.worker_manager_adapter.baremetal.native", ["NativeWorkerManager"]),
]

# Imports every path (under PREFIX), builds a few configurations, and reports what `import
# scaler` alone loaded. Runs in a fresh interpreter, so the modules loaded are its own.
IMPORT_SCRIPT = r'''
import importlib
import sys

PREFIX = sys.argv[1]
PATHS = %r

base = importlib.import_module(PREFIX + "scaler")
lazy = sorted(m[len(PREFIX):] for m in sys.modules if m.startswith(PREFIX + "scaler."))
print("AFTER-IMPORT", lazy)
for module_name, names in PATHS:
    module = importlib.import_module(PREFIX + module_name)
    for name in names:
        getattr(module, name)
print("IMPORTED", len(PATHS))
section = importlib.import_module(PREFIX + "scaler.config.section.native_worker_manager")
common = importlib.import_module(PREFIX + "scaler.config.common.worker_manager")
config = section.NativeWorkerManagerConfig(common.WorkerManagerConfig("tcp://127.0.0.1:8516", "m"), mode="fixed")
print("MODE", config.to_scaler().mode)
scheduler = importlib.import_module(PREFIX + "scaler.config.section.scheduler")
try:
    scheduler.PolicyConfig(policy_content="allocate=bogus")
except ValueError:
    print("POLICY-REFUSED")
print("TOP-LEVEL-SCALER", PREFIX != "" and any(m == "scaler" or m.startswith("scaler.") for m in sys.modules))
''' % (UPSTREAM_PATHS,)

# What `import scaler` may load: the package, its version, and nothing of the API.
IMPORT_SCALER_LOADS = ["scaler.version"]


def _run_import_script(tmp_path, prefix, pythonpath, isolated):
    script = tmp_path / "import_paths.py"
    script.write_text(IMPORT_SCRIPT)
    args = [sys.executable] + (["-S"] if isolated else []) + [str(script), prefix]
    done = subprocess.run(args, cwd=str(tmp_path), env=subprocess_env(pythonpath=pythonpath),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    lines = output.splitlines()
    assert "AFTER-IMPORT %r" % (IMPORT_SCALER_LOADS,) in lines, output
    assert "IMPORTED %d" % len(UPSTREAM_PATHS) in lines, output
    assert "MODE fixed" in lines and "POLICY-REFUSED" in lines, output
    assert "TOP-LEVEL-SCALER False" in lines, output


def test_every_path_imports_from_the_installed_copy(tmp_path):
    # cwd and PYTHONPATH away from the repository: the package comes from site-packages.
    probe = subprocess.run([sys.executable, "-c", "import scaler"], cwd=str(tmp_path),
                           env=subprocess_env(pythonpath=None), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        pytest.skip("scaler is not installed in this interpreter (pip install -e .)")
    _run_import_script(tmp_path, "", pythonpath=None, isolated=False)


def test_every_path_imports_from_a_vendored_copy(tmp_path):
    vendor = tmp_path / "hostpkg" / "_vendor"
    vendor.mkdir(parents=True)
    (tmp_path / "hostpkg" / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    shutil.copytree(os.path.join(REPO_ROOT, "scaler"), str(vendor / "scaler"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    deps = tmp_path / "_deps"
    deps.mkdir()
    for name in ("cloudpickle", "tomli"):
        _copy_module(name, deps)
    _run_import_script(tmp_path, "hostpkg._vendor.", pythonpath=os.pathsep.join([str(tmp_path), str(deps)]),
                       isolated=True)


# --------------------------------------------------------------------------------------
# configuration faces: scaler's defaults, upstream's validation


def test_defaults_are_read_from_scalers_config():
    from scaler.config import components, defaults
    from scaler.config.common.logging import LoggingConfig
    from scaler.config.common.worker import WorkerConfig
    from scaler.config.section.scheduler import PolicyConfig, SchedulerConfig

    scheduler = components.SchedulerConfig()
    assert defaults.DEFAULT_CLIENT_TIMEOUT_SECONDS == scheduler.client_timeout_seconds
    assert defaults.DEFAULT_LOAD_BALANCE_SECONDS == scheduler.load_balance_seconds
    worker = components.WorkerSettings()
    assert defaults.DEFAULT_WORKER_DEATH_TIMEOUT == worker.death_timeout_seconds
    assert defaults.DEFAULT_HEARTBEAT_INTERVAL_SECONDS == worker.heartbeat_interval_seconds
    assert defaults.DEFAULT_MAX_TASK_CONCURRENCY == components.default_worker_count()

    face = WorkerConfig()
    assert face.scaler_fields() == {name: getattr(worker, name) for name in face.scaler_fields()}
    assert PolicyConfig().policy_content == scheduler.policy_content
    assert LoggingConfig().level == scheduler.logging_level
    converted = SchedulerConfig("tcp://127.0.0.1:8516").to_scaler()
    assert converted == dataclasses.replace(scheduler, address="tcp://127.0.0.1:8516")


@pytest.mark.parametrize("build", [
    lambda m: m["SchedulerConfig"]("tcp://127.0.0.1:8516", client_timeout_seconds=0),
    lambda m: m["SchedulerConfig"]("tcp://127.0.0.1:8516", worker_timeout_seconds=-1),
    lambda m: m["SchedulerConfig"]("tcp://127.0.0.1:8516", object_retention_seconds=0),
    lambda m: m["SchedulerConfig"]("tcp://127.0.0.1:8516", load_balance_seconds=0),
    lambda m: m["SchedulerConfig"]("tcp://127.0.0.1:8516", max_number_of_tasks_waiting=-2),
    lambda m: m["WorkerConfig"](heartbeat_interval_seconds=0),
    lambda m: m["WorkerConfig"](death_timeout_seconds=0),
    lambda m: m["WorkerConfig"](task_timeout_seconds=-1),
    lambda m: m["WorkerConfig"](per_worker_task_queue_size=0),
    lambda m: m["WorkerConfig"](io_threads=0),
    lambda m: m["WorkerConfig"](event_loop="bogus"),
    lambda m: m["WorkerConfig"](per_worker_capabilities="gpu=many"),
])
def test_non_positive_timeouts_and_bad_values_raise_value_error(build):
    from scaler.config.common.worker import WorkerConfig
    from scaler.config.section.scheduler import SchedulerConfig

    with pytest.raises(ValueError):
        build({"SchedulerConfig": SchedulerConfig, "WorkerConfig": WorkerConfig})


@pytest.mark.parametrize("text", ["127.0.0.1:8516", "tcp://127.0.0.1", "tcp://:8516", "tcp://host:port",
                                  "udp://127.0.0.1:1", "tcp://127.0.0.1:70000", "ws://127.0.0.1:8516"])
def test_a_bad_address_raises_value_error(text):
    from scaler.config.common.worker_manager import WorkerManagerConfig
    from scaler.config.section.scheduler import SchedulerConfig
    from scaler.config.types.address import AddressConfig

    with pytest.raises(ValueError):
        AddressConfig.from_string(text)
    with pytest.raises(ValueError):
        SchedulerConfig(text)
    with pytest.raises(ValueError):
        WorkerManagerConfig(text)


def test_address_config_round_trips():
    from scaler.config.types.address import AddressConfig, SocketType

    address = AddressConfig.from_string("tcp://127.0.0.1:8516")
    assert (address.type, address.host, address.port) == (SocketType.tcp, "127.0.0.1", 8516)
    assert str(address) == repr(address) == "tcp://127.0.0.1:8516"
    assert str(AddressConfig.from_string("ipc:///tmp/sock")) == "ipc:///tmp/sock"
    assert str(AddressConfig(SocketType.tcp, "::1", 9000)) == "tcp://[::1]:9000"
    with pytest.raises(ValueError):
        AddressConfig(SocketType.tcp, "127.0.0.1")  # no port
    with pytest.raises(TypeError):
        AddressConfig("tcp", "127.0.0.1", 1)


@pytest.mark.parametrize("policy", ["allocate=bogus", "scaling=bogus", "bogus=even_load", "allocate"])
def test_an_unknown_policy_raises_value_error(policy, make_combo):
    from scaler.config.section.scheduler import PolicyConfig

    with pytest.raises(ValueError):
        PolicyConfig(policy_content=policy)
    with pytest.raises(ValueError):
        PolicyConfig(policy_engine_type="bogus")
    with pytest.raises(ValueError, match="engine"):  # refused before anything starts
        make_combo(n_workers=1, scaler_policy=types.SimpleNamespace(policy_engine_type="waterfall_v1",
                                                                     policy_content="1,combo"))


def test_security_config_checks_its_files_at_once(tmp_path):
    """SecurityConfig carries real TLS settings now (tests/test_tls.py and test_e2e_tls.py use them):
    half a pair and files that cannot be loaded are refused when it is built, naming the file."""
    from scaler import Client, SchedulerClusterCombo
    from scaler.config.common.security import SecurityConfig

    assert not SecurityConfig().has_credentials()
    with pytest.raises(ValueError, match="together"):
        SecurityConfig(tls_cert="cert.pem")
    missing = str(tmp_path / "cert.pem")
    with pytest.raises(ValueError, match="cannot read TLS certificate"):
        SecurityConfig(tls_cert=missing, tls_key=missing)
    with pytest.raises(ValueError, match="CA file"):
        SecurityConfig(tls_ca=missing)
    asking = types.SimpleNamespace(tls_cert=missing, tls_key=missing, tls_ca=None)
    with pytest.raises(ValueError, match="cannot read TLS certificate"):
        SchedulerClusterCombo(n_workers=1, security_config=asking)
    with pytest.raises(ValueError, match="CA file"):
        Client("tls://127.0.0.1:1", tls_ca=missing)


def test_capabilities_names_and_logging():
    from scaler.config.common.logging import LoggingConfig
    from scaler.config.types.http import HTTPConfig
    from scaler.config.types.worker import WorkerCapabilities, WorkerNames

    capabilities = WorkerCapabilities.from_string("linux, gpu=2")
    assert capabilities.capabilities == {"linux": -1, "gpu": 2}
    assert str(capabilities) == "linux,gpu=2" and str(WorkerCapabilities()) == "<empty>"
    for bad in ("gpu=x", "a b", "gpu=-5", "x,x"):
        with pytest.raises(ValueError):
            WorkerCapabilities.from_string(bad)
    with pytest.raises(ValueError):
        WorkerCapabilities({"gpu": 1.5})
    names = WorkerNames.from_string("a, b,c")
    assert names.names == ["a", "b", "c"] and len(names) == 3 and str(names) == "a,b,c"
    assert LoggingConfig(level="debug").level == "DEBUG"
    with pytest.raises(ValueError):
        LoggingConfig(level="LOUD")
    assert str(HTTPConfig.from_string("0.0.0.0:50001")) == "0.0.0.0:50001"
    with pytest.raises(ValueError):
        HTTPConfig.from_string("0.0.0.0")


def test_native_worker_manager_config_is_a_face_over_scalers():
    from scaler.config import components
    from scaler.config.common.worker import WorkerConfig
    from scaler.config.common.worker_manager import WorkerManagerConfig
    from scaler.config.section.native_worker_manager import NativeWorkerManagerConfig, NativeWorkerManagerMode

    face = NativeWorkerManagerConfig(
        worker_manager_config=WorkerManagerConfig("tcp://127.0.0.1:8516", "gpu-box", max_task_concurrency=3),
        worker_config=WorkerConfig(per_worker_capabilities={"gpu": 1}, death_timeout_seconds=30),
        mode=NativeWorkerManagerMode.FIXED)
    own = face.to_scaler()
    assert isinstance(own, components.WorkerManagerConfig)
    assert (own.scheduler_address, own.worker_manager_id, own.max_task_concurrency, own.mode,
            own.per_worker_capabilities, own.death_timeout_seconds) == (
        "tcp://127.0.0.1:8516", "gpu-box", 3, "fixed", "gpu=1", 30)
    assert NativeWorkerManagerConfig.from_scaler(own) == face
    assert NativeWorkerManagerConfig(face.worker_manager_config, mode="DYNAMIC").mode is NativeWorkerManagerMode.DYNAMIC
    with pytest.raises(ValueError):  # fixed mode needs a count
        NativeWorkerManagerConfig(WorkerManagerConfig("tcp://127.0.0.1:8516", max_task_concurrency=-1), mode="fixed")
    with pytest.raises(ValueError):
        NativeWorkerManagerConfig(face.worker_manager_config, mode="elastic")


def test_scheduler_config_face_runs_as_a_scheduler(tmp_path):
    from scaler import Scheduler
    from scaler.config.section.scheduler import PolicyConfig, SchedulerConfig

    face = SchedulerConfig("tcp://127.0.0.1:8516", protected=False,
                           policy=PolicyConfig(policy_content="allocate=capability; scaling=no"))
    scheduler = Scheduler(face)
    assert scheduler.config.protected is False
    assert scheduler.config.policy_content == "allocate=capability; scaling=no"


def test_web_gui_config_is_checked_and_start_webgui_serves_the_dashboard(make_combo):
    import json
    import threading
    import urllib.request

    from scaler.config.section.webgui import WebGUIConfig, start_webgui
    from scaler.io.address import free_tcp_port

    config = WebGUIConfig("tcp://127.0.0.1:8518", gui_address="127.0.0.1:50001")
    assert config.gui_address.port == 50001
    for bad in (dict(broadcast_interval_seconds=0), dict(task_log_max_size=0), dict(worker_display_limit=0)):
        with pytest.raises(ValueError):
            WebGUIConfig("tcp://127.0.0.1:8518", **bad)
    with pytest.raises(ValueError):
        WebGUIConfig("nowhere")

    combo = make_combo(n_workers=1)
    port = free_tcp_port()
    config = WebGUIConfig(combo.monitor_address, gui_address="127.0.0.1:%d" % port)
    stop = threading.Event()
    thread = threading.Thread(target=start_webgui, args=(config, stop), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % port, timeout=10) as response:
                    status = json.loads(response.read())
                if status.get("connected") and (status.get("status") or {}).get("workers"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not show the cluster"
            time.sleep(0.2)
        assert len(status["status"]["workers"]) == 1
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_cycle_error_is_graphlibs_and_a_value_error():
    from scaler.utility.graph import CycleError, plan_graph

    assert issubclass(CycleError, ValueError)
    if sys.version_info >= (3, 9):
        import graphlib
        assert issubclass(CycleError, graphlib.CycleError)
    with pytest.raises(ValueError):
        plan_graph({"a": (add, "b", 1), "b": (add, "a", 1)}, ["a"])


def test_serializer_package_keeps_the_old_import():
    from scaler import Serializer as top
    from scaler.client.serializer import DefaultSerializer, Serializer
    from scaler.client.serializer.default import DefaultSerializer as default_class
    from scaler.client.serializer.mixins import Serializer as mixin_class

    assert top is Serializer is mixin_class and DefaultSerializer is default_class
    with pytest.raises(TypeError):
        Serializer()  # abstract
    assert DefaultSerializer.deserialize(DefaultSerializer.serialize([1, "a"])) == [1, "a"]


# --------------------------------------------------------------------------------------
# behaviour, on real processes


def add(a, b):
    return a + b


def allocate(n):
    block = bytearray(n)
    for i in range(0, n, 4096):
        block[i] = 1
    return len(block)


def burn_cpu(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return seconds


def wait_forever():
    time.sleep(3600)


def test_running_is_true_from_submit_until_done(client):
    future = client.submit(add, 1, 2)
    assert future.running() or future.done()  # it may already be done: a done future is not running
    pending = client.submit(wait_forever)
    assert pending.running() and not pending.done()
    assert future.result(timeout=TIMEOUT) == 3
    assert not future.running()
    assert pending.cancel()
    assert not pending.running()


def test_profiling_info(shared_combo):
    from scaler import Client
    from scaler.utility.metadata.profile_result import ProfileResult

    with Client(shared_combo.get_address(), profiling=True) as client:
        pending = client.submit(wait_forever)
        with pytest.raises(ValueError, match="not done"):
            pending.profiling_info()
        pending.cancel()
        big = client.submit(allocate, 64 * 1024 * 1024)
        assert big.result(timeout=TIMEOUT) == 64 * 1024 * 1024
        profile = big.profiling_info()
        assert isinstance(profile, ProfileResult)
        if sys.platform.startswith("linux"):  # the exact peak (VmHWM); elsewhere a lower bound
            assert profile.memory_peak >= 60 * 1024 * 1024  # the block was touched page by page
        assert profile.duration_s > 0
        busy = client.submit(burn_cpu, 0.2)
        busy.result(timeout=TIMEOUT)
        assert busy.profiling_info().cpu_time_s >= 0.2  # the task spins until the processor used that much
    with Client(shared_combo.get_address()) as client:
        plain = client.submit(add, 1, 1)
        plain.result(timeout=TIMEOUT)
        with pytest.raises(ValueError, match="profiling=True"):
            plain.profiling_info()


def test_submit_binds_arguments_to_the_signature(client):
    with pytest.raises(TypeError, match="missing"):
        client.submit(add, 1)
    with pytest.raises(TypeError):
        client.submit(add, 1, 2, c=3)
    with pytest.raises(TypeError):
        client.submit(add, 1, 2, 3)
    assert client.submit(add, b=2, a=1).result(timeout=TIMEOUT) == 3
    assert client.submit(max, 4, 9).result(timeout=TIMEOUT) == 9  # no signature to check: not checked


def _children_of(pid):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(b")") + 2:].split()[1]) == pid:
                found.append(int(name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_combo_process_handles_behave_like_multiprocessing(make_combo):
    from scaler import Client
    from scaler.cluster.combo import SchedulerClusterCombo
    from scaler.config.section.native_worker_manager import NativeWorkerManagerConfig, NativeWorkerManagerMode
    from scaler.config.section.scheduler import PolicyConfig

    combo = make_combo(n_workers=2, per_worker_capabilities={"linux": -1},
                       scaler_policy=PolicyConfig(policy_content="allocate=even_load; scaling=vanilla"))
    assert isinstance(combo, SchedulerClusterCombo)
    with Client(combo.get_address()) as client:
        assert client.submit(add, 1, 2).result(timeout=TIMEOUT) == 3

    config = combo._worker_manager.config
    assert isinstance(config, NativeWorkerManagerConfig) and config.mode is NativeWorkerManagerMode.FIXED
    assert config.worker_manager_config.max_task_concurrency == 2
    assert config.worker_manager_config.worker_manager_id == "combo"
    assert str(config.worker_manager_config.scheduler_address) == combo.get_address()
    assert config.worker_config.per_worker_capabilities.capabilities == {"linux": -1}

    manager, scheduler = combo._worker_manager_process, combo._scheduler
    for handle in (manager, scheduler):
        assert isinstance(handle.pid, int) and handle.is_alive() and handle.exitcode is None
    workers = _children_of(manager.pid)
    assert len(workers) == 2, workers  # the workers are the pool's direct children

    manager.join(timeout=0.01)  # a join that times out returns, as multiprocessing's
    assert manager.is_alive()
    manager.terminate()
    manager.join(timeout=TIMEOUT)
    assert not manager.is_alive() and manager.exitcode is not None
    scheduler.kill()
    scheduler.join(timeout=TIMEOUT)
    assert scheduler.exitcode == -9 and not scheduler.is_alive()
    combo.shutdown()  # still fine after a drill


NATIVE_MANAGER_SCRIPT = '''
import sys
from scaler.config.common.worker import WorkerConfig
from scaler.config.common.worker_manager import WorkerManagerConfig
from scaler.config.section.native_worker_manager import NativeWorkerManagerConfig, NativeWorkerManagerMode
from scaler.config.types.address import AddressConfig
from scaler.worker_manager_adapter.baremetal.native import NativeWorkerManager

config = NativeWorkerManagerConfig(
    worker_manager_config=WorkerManagerConfig(
        scheduler_address=AddressConfig.from_string(sys.argv[1]), worker_manager_id="from-python",
        max_task_concurrency=1),
    worker_config=WorkerConfig(per_worker_capabilities={"special": -1}),
    mode=NativeWorkerManagerMode.FIXED,
)
print("RUNNING", flush=True)
sys.exit(NativeWorkerManager(config).run())
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_native_worker_manager_built_from_a_config_runs_from_python(make_combo, procs, tmp_path):
    from scaler import Client

    combo = make_combo(n_workers=0)  # a scheduler with no workers of its own
    script = tmp_path / "native_manager.py"
    script.write_text(NATIVE_MANAGER_SCRIPT)
    env = subprocess_env(pythonpath=os.pathsep.join([REPO_ROOT, os.path.dirname(os.path.abspath(__file__))]))
    manager = procs.python([str(script), combo.get_address()], "native-manager", env=env)
    manager.output.wait_for("RUNNING", TIMEOUT)
    with Client(combo.get_address()) as client:
        # only the manager's worker exists, so the task running proves it started and joined
        assert client.submit_verbose(add, (2, 3), {}, capabilities={"special": -1}).result(timeout=TIMEOUT) == 5
    manager.popen.terminate()
    assert exit_code_within(manager, TIMEOUT) == 0, manager.output.text()


def test_native_worker_manager_needs_the_main_thread():
    import threading

    from scaler.config.common.worker_manager import WorkerManagerConfig
    from scaler.config.section.native_worker_manager import NativeWorkerManagerConfig
    from scaler.worker_manager_adapter.baremetal.native import NativeWorkerManager

    manager = NativeWorkerManager(NativeWorkerManagerConfig(WorkerManagerConfig("tcp://127.0.0.1:1", "x")))
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, manager.run)))
    thread.start()
    thread.join(TIMEOUT)
    assert errors and "main thread" in str(errors[0].value)
    with pytest.raises(TypeError):
        NativeWorkerManager("tcp://127.0.0.1:1")


def test_upstream_style_example_is_collected_by_the_examples_test():
    path = os.path.join(REPO_ROOT, "examples", "upstream_style_client.py")
    with open(path) as f:
        text = f.read()
    for line in ("from scaler.cluster.combo import SchedulerClusterCombo",
                 "from scaler.config.section.scheduler import PolicyConfig",
                 "from scaler.client.serializer.mixins import Serializer"):
        assert line in text
    assert "profiling_info()" in text
