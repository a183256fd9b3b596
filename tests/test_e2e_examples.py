"""Every script in examples/ runs to completion, exits 0 and leaves no process behind."""

import glob
import os
import sys
import time

import pytest

from e2e_support import REPO_ROOT, describe, exit_code_within, group_members, proc_of

EXAMPLES = sorted(glob.glob(os.path.join(REPO_ROOT, "examples", "*.py")))
EXAMPLE_TIMEOUT = 120


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("path", EXAMPLES or [None], ids=[os.path.basename(p) for p in EXAMPLES] or ["none"])
def test_example_runs(path, procs):
    if path is None:
        pytest.skip("examples/ has no scripts yet")
    child = procs.python([path], os.path.basename(path), cwd=os.path.dirname(path))
    code = exit_code_within(child, EXAMPLE_TIMEOUT)
    child.output.join(10)
    assert code == 0, "%s exited with %d:\n%s" % (path, code, child.output.text())
    # Started as a group leader (the ``procs`` fixture kills the group if anything hangs):
    # whatever the example started is in its group, even once orphaned.
    deadline = time.monotonic() + 15
    while True:
        live = [s for s in group_members(child.pid) if s.state != "Z"]
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not live, "still running after %s exited:\n%s" % (path, describe(proc_of(s) for s in live))
