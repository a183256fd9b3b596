"""client.map(progress=True) and scaler.progress(futures) in a real script on a real cluster."""

import os
import pty
import subprocess
import sys
import textwrap
import time

from e2e_support import subprocess_env

TIMEOUT = 60

SCRIPT = textwrap.dedent("""
    import sys, time
    import scaler
    from scaler import Client

    def work(x):
        time.sleep(0.01)
        return x * 2

    with Client(sys.argv[1]) as client:
        results = client.map(work, range(200), progress=True)
        futures = scaler.progress(client.map_futures(work, range(50)), description="second")
        print(sum(results), sum(f.result() for f in futures), flush=True)
""")


def _run(script, address, stderr_to_terminal):
    if not stderr_to_terminal:
        done = subprocess.run([sys.executable, str(script), address], capture_output=True, text=True,
                              timeout=TIMEOUT, env=subprocess_env())
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(script), address], stdout=subprocess.PIPE, stderr=slave,
                            env=subprocess_env())
    os.close(slave)
    data = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            data += chunk
        out = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, out.decode(), data.decode(errors="replace")


def test_a_bar_on_a_terminal_and_nothing_on_a_pipe(shared_combo, tmp_path):
    script = tmp_path / "with_progress.py"
    script.write_text(SCRIPT)
    code, out, err = _run(script, shared_combo.get_address(), stderr_to_terminal=True)
    assert code == 0, err
    assert out.split() == [str(sum(x * 2 for x in range(200))), str(sum(x * 2 for x in range(50)))]
    assert "200/200 100%" in err and "second [" in err and "50/50 100%" in err
    code, out, err = _run(script, shared_combo.get_address(), stderr_to_terminal=False)
    assert code == 0, err
    assert "100%" not in err and "/s" not in err
