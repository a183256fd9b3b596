"""Client(stream_output=True): a task's prints reach the client while it runs, in order."""

import os
import subprocess
import sys
import textwrap
import time

from e2e_support import subprocess_env
from scaler import Client

TIMEOUT = 60


def talk_then_wait(release_path):
    print("started", flush=False)  # a plain print: a complete line is sent without flush()
    print("to stderr", file=sys.stderr)
    deadline = time.monotonic() + 60
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    print("finished")
    return 7


def count_lines(n):
    for i in range(n):
        print("line %d" % i)
    sys.stdout.write("no newline at the end")
    return n


def big_print(size):
    print("x" * size)
    return size


def quiet_print():
    print("should stay on the worker")
    return 1


def _wait_for(predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def test_output_appears_while_the_task_runs_and_before_its_result(shared_combo, capsys, tmp_path):
    release = str(tmp_path / "release")
    seen = {"out": "", "err": ""}

    def grab():
        captured = capsys.readouterr()
        seen["out"] += captured.out
        seen["err"] += captured.err
        return seen

    with Client(shared_combo.get_address(), stream_output=True) as client:
        future = client.submit(talk_then_wait, release)
        _wait_for(lambda: "started\n" in grab()["out"], "the first line")
        assert not future.done()  # it arrived while the task was still running
        _wait_for(lambda: "to stderr\n" in grab()["err"], "the stderr line")
        open(release, "w").close()
        assert future.result(timeout=TIMEOUT) == 7
        assert "finished\n" in grab()["out"]  # the output arrives before the result


def test_order_is_kept_and_the_last_partial_line_is_not_lost(shared_combo, capsys):
    with Client(shared_combo.get_address(), stream_output=True) as client:
        assert client.submit(count_lines, 2000).result(timeout=TIMEOUT) == 2000
    out = capsys.readouterr().out
    expected = "".join("line %d\n" % i for i in range(2000)) + "no newline at the end"
    assert out == expected


def test_a_large_print_arrives_whole_and_map_streams_every_task(shared_combo, capsys):
    with Client(shared_combo.get_address(), stream_output=True) as client:
        assert client.submit(big_print, 300_000).result(timeout=TIMEOUT) == 300_000
        assert capsys.readouterr().out == "x" * 300_000 + "\n"
        assert client.map(big_print, [10, 20, 30]) == [10, 20, 30]
    lines = sorted(capsys.readouterr().out.splitlines())
    assert lines == ["x" * 10, "x" * 20, "x" * 30]


def test_without_stream_output_nothing_reaches_the_client(client, capsys):
    assert client.submit(quiet_print).result(timeout=TIMEOUT) == 1
    time.sleep(0.2)
    captured = capsys.readouterr()
    assert "should stay on the worker" not in captured.out + captured.err


def test_a_script_sees_its_tasks_output_on_its_own_stdout(shared_combo, tmp_path):
    script = tmp_path / "streaming.py"
    script.write_text(textwrap.dedent("""
        import sys
        from scaler import Client

        def shout(i):
            print("task %d says hi" % i)
            print("task %d complains" % i, file=sys.stderr)
            return i

        with Client(sys.argv[1], stream_output=True) as client:
            print(sum(client.map(shout, range(5))), flush=True)
    """))
    done = subprocess.run([sys.executable, str(script), shared_combo.get_address()], capture_output=True,
                          text=True, timeout=TIMEOUT, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    out_lines = done.stdout.splitlines()
    assert out_lines[-1] == "10"
    assert sorted(out_lines[:-1]) == ["task %d says hi" % i for i in range(5)]
    assert sorted(line for line in done.stderr.splitlines() if "complains" in line) == [
        "task %d complains" % i for i in range(5)]


def test_a_task_that_closes_or_replaces_its_stdout_does_not_break_the_worker(shared_combo, capsys):
    def rude():
        sys.stdout.close()
        sys.stdout = open(os.devnull, "w")
        return "ok"

    def polite():
        print("still fine")
        return "fine"

    with Client(shared_combo.get_address(), stream_output=True) as client:
        assert client.submit(rude).result(timeout=TIMEOUT) == "ok"
        assert [client.submit(polite).result(timeout=TIMEOUT) for _ in range(4)] == ["fine"] * 4
    assert capsys.readouterr().out == "still fine\n" * 4
