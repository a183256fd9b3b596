"""The package works when vendored as ``hostpkg._vendor.scaler``, and imports nothing it may not.

The vendored run happens in a subprocess that cannot see the repository nor an installed
copy: PYTHONPATH holds only the temporary directory (and a copy of cloudpickle), site-packages
is off (``-S``), and the script asserts that a top-level ``scaler`` is not importable. Every
process the combo starts must run the vendored copy.
"""

import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from e2e_support import REPO_ROOT, subprocess_env

PACKAGE_DIR = os.path.join(REPO_ROOT, "scaler")
ABSOLUTE_IMPORT = re.compile(r"^\s*(from|import)\s+scaler\b", re.MULTILINE)

QUICK_START = r'''
import importlib.util
import os
import sys
import time

assert importlib.util.find_spec("scaler") is None, "a top-level 'scaler' is importable: the test is not isolated"

from hostpkg._vendor.scaler import Client, SchedulerClusterCombo


def add(a, b):
    return a + b


def loaded_scaler_modules():
    """Runs in a processor: which copies of the package are loaded there."""
    top = sorted(m for m in sys.modules if m == "scaler" or m.startswith("scaler."))
    vendored = any(m.startswith("hostpkg._vendor.scaler.") for m in sys.modules)
    return top, vendored


def descendant_cmdlines():
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            parents.setdefault(int(data[data.rindex(b")") + 2:].split()[1]), []).append(int(name))
    out, frontier = [], [os.getpid()]
    while frontier:
        pid = frontier.pop()
        for child in parents.get(pid, ()):
            frontier.append(child)
            try:
                with open("/proc/%d/cmdline" % child, "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode())
            except OSError:
                pass
    return out


if __name__ == "__main__":
    cluster = SchedulerClusterCombo(n_workers=2, logging_level="WARNING")
    try:
        with Client(address=cluster.get_address()) as client:
            future = client.submit(add, 2, 3)
            print(future.result(timeout=60))
            print(client.map(add, [1, 2, 3], [10, 20, 30]))
            ref = client.send_object(bytes(1000000))
            print(client.submit(len, ref).result(timeout=60))
            print("WORKER-MODULES", client.submit(loaded_scaler_modules).result(timeout=60))
            # The second worker's processor may still be starting: the tasks above need one worker.
            deadline = time.monotonic() + 60
            children = descendant_cmdlines()
            while len(children) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
                children = descendant_cmdlines()
            for line in children:
                print("CHILD", line)
    finally:
        cluster.shutdown()
    print("TOP-LEVEL-SCALER-LOADED", any(m == "scaler" or m.startswith("scaler.") for m in sys.modules))
'''


def test_vendored_copy_runs_the_quick_start(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    vendor = tmp_path / "hostpkg" / "_vendor"
    vendor.mkdir(parents=True)
    (tmp_path / "hostpkg" / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    shutil.copytree(PACKAGE_DIR, str(vendor / "scaler"), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    script = tmp_path / "quick_start.py"
    script.write_text(QUICK_START)

    # ``-S``: no site-packages, where a ``scaler`` may be installed (CI installs the project
    # into its venv). The only third-party dependencies are copied in beside the host package.
    deps = tmp_path / "_deps"
    deps.mkdir()
    for name in ("cloudpickle", "tomli"):
        _copy_module(name, deps)
    env = subprocess_env(pythonpath=os.pathsep.join([str(tmp_path), str(deps)]))
    try:
        done = subprocess.run([sys.executable, "-S", str(script)], cwd=str(tmp_path), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                              start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the vendored quick start did not finish in 120 s:\n%s"
                             % (exc.output or b"").decode(errors="replace"))
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    lines = output.splitlines()
    assert lines[:3] == ["5", "[11, 22, 33]", "1000000"], output
    assert "WORKER-MODULES ([], True)" in lines, output
    children = [line[len("CHILD "):] for line in lines if line.startswith("CHILD ")]
    assert len(children) >= 6, output  # scheduler, cluster, 2 workers, 2 processors
    for line in children:
        assert "-m hostpkg._vendor.scaler." in line, "a child runs something else than the vendored copy: " + line
    assert "TOP-LEVEL-SCALER-LOADED False" in lines, output


def _copy_module(name, target):
    """Copy an importable pure-Python module or package (if present) into ``target``."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return
    path = module.__file__
    if os.path.basename(path) == "__init__.py":
        source = os.path.dirname(path)
        shutil.copytree(source, str(target / os.path.basename(source)),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy(path, str(target))


def test_no_absolute_imports_of_the_package():
    offenders = []
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for match in ABSOLUTE_IMPORT.finditer(text):
                    line = text.count("\n", 0, match.start()) + 1
                    offenders.append("%s:%d: %s" % (os.path.relpath(path, REPO_ROOT), line,
                                                    text[match.start():text.find("\n", match.start())].strip()))
    assert not offenders, "absolute imports of 'scaler' break vendoring:\n" + "\n".join(offenders)


def _check_imports_tool():
    for candidate in (os.path.join(REPO_ROOT, "..", "shared", "tools", "check_imports.py"),
                      "/work/shared/tools/check_imports.py"):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def test_only_stdlib_and_cloudpickle_are_imported():
    tool = _check_imports_tool()
    if tool is None:
        pytest.skip("shared/tools/check_imports.py is not available here")
    if sys.version_info < (3, 10):
        pytest.skip("check_imports.py needs Python 3.10+ (sys.stdlib_module_names)")
    done = subprocess.run([sys.executable, tool, "scaler"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60)
    assert done.returncode == 0, done.stdout.decode(errors="replace")
