"""``import scaler`` stays light: what the public import and each child process load.

Every process the framework starts is a fresh interpreter that imports the package, and
``from scaler import Client, SchedulerClusterCombo`` is how user scripts start; so start-up
time is mostly import time (docs/performance.rst, "Start-up"). These tests pin *which*
modules get imported, not how long it takes (no wall-clock thresholds): a heavy module
creeping back onto an import path fails here, named.
"""

import os
import subprocess
import sys

import scaler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(scaler.__file__)))

# Imported where they are used, never by the public import: cloudpickle (and through it
# dataclasses, inspect, ast, dis) by the first function serialised, hashlib/hmac by a keyed
# handshake, subprocess/json by the first spawn, the configuration by a constructor.
HEAVY_FOR_THE_PUBLIC_IMPORT = (
    "cloudpickle", "dataclasses", "inspect", "ast", "dis", "hashlib", "_hashlib", "hmac", "uuid", "platform",
    "subprocess", "json", "random", "argparse", "asyncio", "ssl", "tomllib", "tomli", "graphlib", "urllib",
    "ipaddress", "pathlib", "multiprocessing", "concurrent.futures.process", "concurrent.futures.thread",
    "scaler.config", "scaler.config.components", "scaler.config.loader", "scaler.utility.graph",
    "scaler.scheduler", "scaler.worker", "scaler.io.tls",
)


def _modules_after(code: str) -> set:
    """The modules that running ``code`` in a fresh interpreter imports (beyond its start-up's:
    an editable install's finder, for one, imports pathlib before any script runs)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    script = "import sys\n_before = set(sys.modules)\n%s\nprint('\\n'.join(set(sys.modules) - _before))" % code
    out = subprocess.run([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, check=True,
                         timeout=60).stdout.decode()
    return set(out.split())


def test_public_import_leaves_heavy_modules_unloaded():
    loaded = _modules_after("from scaler import Client, SchedulerClusterCombo")
    assert {"scaler.client.client", "scaler.cluster"} <= loaded
    heavy = sorted(name for name in HEAVY_FOR_THE_PUBLIC_IMPORT if name in loaded)
    assert heavy == [], "imported by `from scaler import Client, SchedulerClusterCombo`: %s" % heavy


def test_message_classes_are_compiled_on_first_use():
    """Declaring the ~50 message classes compiles nothing; a class's constructor and encoder
    are generated when it is first used, and then behave as before."""
    code = ("from scaler.protocol import messages\n"
            "from scaler.protocol.codec import decode, encode\n"
            "assert messages.TaskSubmit.__init__.__name__ == 'first_init'\n"
            "msg = messages.TaskSubmit(b't', 1, b'f', b'c', '', 0)\n"
            "assert messages.TaskSubmit.__init__.__name__ == '__init__'\n"
            "assert decode(encode(msg)[8:]) == msg\n"
            "assert messages.TaskResult.__init__.__name__ == 'first_init'\n")
    _modules_after(code)  # raises CalledProcessError if an assertion fails
