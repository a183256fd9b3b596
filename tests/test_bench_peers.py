"""benchmarks/bench_peers.py: its pure parts (arguments, nearest rank, targets, table, JSON
shape) on a made-up result set, and the "not installable" path. No engine runs and no
wall-clock threshold is checked: the benchmark itself runs in CI as ``--quick``."""

import json
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks", "peers"))

import bench_peers as bp  # noqa: E402
import peer_harness  # noqa: E402


def test_arguments_defaults_and_quick():
    args = bp.parse_args([])
    assert args.engines == list(bp.ENGINES) and args.workers == 2 and args.timeout == 300
    quick = bp.parse_args(["--quick"])
    assert quick.engines == ["scaler", "ppe", "pool", "pool1"] and quick.timeout == 60
    chosen = bp.parse_args(["--quick", "--peers", "pool,dask, scaler", "--workers", "3", "--timeout", "5"])
    assert chosen.engines == ["scaler", "dask", "pool"]  # table order, whatever the order given
    assert (chosen.workers, chosen.timeout) == (3, 5)


@pytest.mark.parametrize("argv", [["--peers", "scaler,ray"], ["--peers", ","], ["--workers", "0"],
                                  ["--timeout", "-1"], ["--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    assert bp.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("module", [bp, peer_harness])
def test_nearest_rank(module):
    values = list(range(1, 101))
    assert module.nearest_rank(values, 99) == 99
    assert module.nearest_rank(values, 50) == 50
    assert module.nearest_rank(values, 100) == 100
    assert module.nearest_rank([7.0], 99) == 7.0
    assert module.nearest_rank([1, 2, 3], 99) == 3
    assert module.nearest_rank(list(range(1, 301)), 99) == 297


def test_pool_chunksize_is_multiprocessing_pools():
    assert bp.pool_chunksize(20000, 2) == 2500
    assert bp.pool_chunksize(2001, 2) == 251
    assert bp.pool_chunksize(3, 2) == 1


def fake_run():
    """A made-up full-size result set: scaler meets some targets and misses others;
    upstream could not be installed; dask timed out on one workload; loky crashed on one
    and has an n/a."""
    sizes = dict(bp.FULL_SIZES)
    engines = list(bp.ENGINES)
    peers = {e: {"status": "ok", "python_version": "3.11.7", "versions": {}} for e in engines}
    peers["scaler"]["versions"] = {"scaler": "0.1.0"}
    peers["upstream"] = {"status": "not installable", "reason": "Python 3.11: pip install failed (exit 1): boom"}
    peers["dask"]["versions"] = {"dask": "1.0", "distributed": "1.0"}
    peers["loky"]["versions"] = {"loky": "3.7.0"}
    results = {w: {} for w in bp.WORKLOADS}

    def put(engine, **per_workload):
        for workload, entry in per_workload.items():
            results[workload][engine] = entry

    put("scaler", startup={"seconds": 0.3}, latency={"median_ms": 0.35, "p99_ms": 0.9},
        map={"tasks_per_s": 31000.0}, short_tasks={"efficiency": 0.9}, object_in={"seconds": 1.2},
        result_out={"seconds": 0.4, "beyond_build_s": 0.15}, graph={"nodes_per_s": 7000.0},
        memory={"bytes_per_task": 900.0, "scheduler_bytes_per_task": 140.0})
    put("ppe", startup={"seconds": 0.01}, latency={"median_ms": 0.3, "p99_ms": 0.5},
        map={"tasks_per_s": 7000.0, "chunksize": 1}, short_tasks={"efficiency": 0.7}, object_in={"seconds": 6.0},
        result_out={"seconds": 0.3, "beyond_build_s": 0.2}, graph={"nodes_per_s": 8000.0},
        memory={"bytes_per_task": 2100.0, "scheduler_na": "no scheduler process"})
    put("pool", short_tasks={"efficiency": 0.99})  # chunks of 250: context only
    put("pool1", short_tasks={"efficiency": 0.8})
    put("dask", startup={"seconds": 0.8}, latency={"error": "TIMEOUT after 300 s"},
        map={"error": "skipped: the engine process was ended before it"})
    put("loky", startup={"seconds": 0.4}, graph={"na": "no graphs here"}, map={"error": "BenchError: wrong"})
    imports = {"scaler": {"ms": 35.0}, "ppe": {"ms": 8.0}, "dask": {"error": "RuntimeError: no"}}
    return sizes, engines, peers, results, imports


def test_targets_on_a_fake_run():
    sizes, _, _, results, imports = fake_run()
    targets = bp.evaluate_targets(results, imports, sizes)
    status = {key: value[0] for key, value in targets.items()}
    assert status == {
        "latency_median": "PASS",  # 0.35 <= 0.4 and 0.35 <= 1.5 * 0.3
        "latency_p99": "PASS",
        "map": "PASS",  # 31 000 >= 30 000 and >= 4 x 7 000
        "short_tasks": "PASS",  # 90 % >= 85 % and ahead of the Pool's 80 % at chunksize 1
        "object_in": "MISS",  # 1.2 s > 1.0 s
        "result_beyond": "PASS",
        "memory": "PASS",
        "import": "PASS",
        "startup": "MISS",  # 0.3 s > 0.25 s
    }
    assert "(4.43x)" in targets["map"][1]

    results["latency"]["ppe"]["median_ms"] = 0.2  # now 0.35 > 1.5 x 0.2
    assert bp.evaluate_targets(results, imports, sizes)["latency_median"][0] == "MISS"
    results["short_tasks"]["pool1"]["efficiency"] = 0.95
    assert bp.evaluate_targets(results, imports, sizes)["short_tasks"][0] == "MISS"


def test_size_dependent_targets_are_not_judged_at_quick_sizes():
    _, _, _, results, imports = fake_run()
    targets = bp.evaluate_targets(results, imports, dict(bp.QUICK_SIZES))
    for key in ("object_in", "result_beyond", "memory"):
        assert targets[key][0] == "n/a" and "full size" in targets[key][1]
    assert targets["latency_p99"][0] == "PASS"


def test_table_shows_every_engine_and_why_a_cell_is_empty():
    sizes, engines, peers, results, imports = fake_run()
    targets = bp.evaluate_targets(results, imports, sizes)
    header, rows, notes = bp.build_table(engines, peers, results, imports, targets, sizes, 2)
    assert header[1:-1] == ["scaler", "upstream", "Dask", "loky", "PPE", "mp.Pool", "mp.Pool c=1"]
    assert all(len(row) == len(header) for row in rows)
    by_key = dict(zip(["version"] + [key for key, _, _, _ in bp.ROWS], rows))
    # the peer that could not be installed is in every row, and the reason is printed
    assert all(row[2] == "not installable" for row in rows)
    assert "upstream: not installable: Python 3.11: pip install failed (exit 1): boom" in notes
    assert by_key["version"][1] == "0.1.0 (3.11)" and by_key["version"][3] == "1.0 (3.11)"
    assert by_key["latency_median"][3] == "TIMEOUT" and by_key["map"][3] == "skipped"
    assert by_key["map"][4] == "ERROR" and by_key["graph"][4] == "n/a"
    assert by_key["import"][3] == "ERROR"
    assert "loky / graph: n/a: no graphs here" in notes
    assert "Dask / latency_median: TIMEOUT after 300 s" in notes
    assert by_key["map"][1] == "31,000/s" and by_key["short_tasks"][1] == "90 %"
    assert by_key["memory"][1] == "900 B" and by_key["memory_scheduler"][5] == "n/a"
    assert by_key["memory"][-1].endswith("PASS") and by_key["startup"][-1].endswith("MISS")
    assert "Pool chunksize=2,500" in by_key["map"][0] and "Pool c=1 chunksize=1" in by_key["map"][0]
    assert by_key["short_tasks"][6] == "99 %" and by_key["short_tasks"][7] == "80 %"
    assert by_key["latency_median"][7] == "-"  # pool1 runs the map workloads only
    assert "c=1" not in [note for note in notes if note.startswith("import time:")][0]
    text = bp.format_table(header, rows)
    lines = text.splitlines()
    assert lines[0].startswith("workload") and set(lines[1]) <= {"-", " "}
    assert len(lines) == len(rows) + 2


def test_crashes_decide_the_exit_status_not_misses_or_na():
    _, _, _, results, _ = fake_run()
    failed = sorted((w, e) for w, e, _ in bp.crashed(results))
    assert failed == [("latency", "dask"), ("map", "loky")]  # not the skip, not the n/a


def test_json_document_shape():
    sizes, engines, peers, results, imports = fake_run()
    targets = bp.evaluate_targets(results, imports, sizes)
    floor = {"bytes": 1, "copy_s": 0.1, "pickle_dumps_s": 0.1, "pickle_loads_s": 0.1, "tcp_transfer_s": 0.1,
             "tcp_ping_pong_median_us": 30.0, "tcp_ping_pong_p99_us": 40.0}
    env = bp.environment_info(bp.parse_args([]), 2)
    document = bp.build_document(env, sizes, peers, results, imports, floor, targets, None, 12.5)
    document = json.loads(json.dumps(document))  # serialisable as is
    assert set(document) == {"environment", "sizes", "peers", "imports", "results", "floor", "targets",
                             "cpu_profile", "total_seconds", "steal_percent", "machine_speed_ms", "paired"}
    assert {"python", "cpu_count", "date", "workers", "mode"} <= set(document["environment"])
    assert document["peers"]["upstream"]["status"] == "not installable"
    assert document["results"]["memory"]["scaler"]["bytes_per_task"] == 900.0
    assert document["targets"]["object_in"] == {"status": "MISS", "description": "<= 1 s: MISS"}
    assert "TCP ping-pong" in bp.format_floor(floor)


def _pair(scaler_ms, ppe_ms, scaler_tps, ppe_tps, start=0.2):
    return {"scaler": {"startup": {"seconds": start}, "latency": {"median_ms": scaler_ms},
                       "map": {"tasks_per_s": scaler_tps}},
            "ppe": {"startup": {"seconds": 0.01}, "latency": {"median_ms": ppe_ms}, "map": {"tasks_per_s": ppe_tps}}}


def test_the_paired_pass_decides_the_ratio_targets_and_the_start_up():
    sizes, _, _, results, imports = fake_run()
    results["latency"]["ppe"]["median_ms"] = 0.2  # the main pass: 0.35 / 0.2 = 1.75x, a MISS
    results["map"]["ppe"]["tasks_per_s"] = 9000.0  # 31 000 / 9 000 = 3.4x, a MISS
    pairs = [_pair(0.33, 0.25, 32000.0, 7000.0, 0.22), _pair(0.36, 0.20, 30000.0, 8000.0, 0.26),
             _pair(0.30, 0.24, 33000.0, 7500.0, 0.24)]
    paired = bp.paired_figures(pairs)
    assert paired["latency_ratio"] == pytest.approx([1.32, 1.8, 1.25])
    assert paired["scaler_startup_s"] == [0.22, 0.26, 0.24]
    targets = bp.evaluate_targets(results, imports, sizes, paired)
    # the median of the paired ratios (1.32x, 4.4x), not the main pass's
    assert targets["latency_median"][0] == "PASS" and "paired 1.32x, median of 3; main pass 1.75x" in \
        targets["latency_median"][1]
    assert targets["map"][0] == "PASS" and "paired 4.40x, median of 3; main pass 3.44x" in targets["map"][1]
    # the start-up: the median of the main pass's 0.3 s and the three paired starts
    assert targets["startup"] == ("PASS", "<= 0.25 s (median of 4 starts, 0.250 s): PASS")
    # the absolute figures stay the main pass's
    results["latency"]["scaler"]["median_ms"] = 0.41
    assert bp.evaluate_targets(results, imports, sizes, paired)["latency_median"][0] == "MISS"
    # a round where either engine failed gives no ratio; none at all falls back on the main pass
    failed = _pair(0.3, 0.2, 30000.0, 7000.0)
    failed["ppe"]["latency"] = {"error": "TIMEOUT after 300 s"}
    assert bp.paired_figures([failed])["latency_ratio"] == []
    assert bp.paired_figures([failed])["map_ratio"] == pytest.approx([30000.0 / 7000.0])
    del failed["scaler"]["map"]
    assert bp.paired_figures([failed])["map_ratio"] == []
    results["latency"]["scaler"]["median_ms"] = 0.35
    assert bp.evaluate_targets(results, imports, sizes, bp.paired_figures([failed]))["latency_median"] == (
        "MISS", "<= 0.4 ms, <= 1.5x PPE (1.75x): MISS")
    table = bp.format_pairs(paired).splitlines()
    assert "3 round(s)" in table[0] and table[2].split()[:6] == ["1", "0.220", "s", "0.330", "ms", "0.250"]
    assert bp.format_pairs(bp.paired_figures([])) == "" and bp.format_pairs(None) == ""


def test_pairs_argument_and_machine_speed():
    assert bp.parse_args([]).pairs == bp.FULL_PAIRS and bp.parse_args(["--quick"]).pairs == bp.QUICK_PAIRS
    assert bp.parse_args(["--pairs", "0"]).pairs == 0
    assert bp.main(["--pairs", "-1"]) == 2
    assert bp.machine_speed(n=1000, repeats=1) > 0
    assert bp.format_speed({"scaler": 120.4, "dask": None}).endswith("lower is faster): scaler 120")
    assert bp.format_speed({}) == ""


def test_steal_is_read_from_the_cpu_line_of_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert bp.cpu_ticks(str(stat)) == (35, 1000)
    assert bp.steal_percent((35, 1000), (85, 1500)) == pytest.approx(10.0)
    assert bp.steal_percent(None, (1, 2)) is None and bp.steal_percent((5, 10), (5, 10)) is None
    assert bp.cpu_ticks(str(tmp_path / "missing")) is None
    assert bp.format_steal({"scaler": 10.0, "dask": None}) == (
        "CPU time stolen by the hypervisor while each engine ran (/proc/stat): scaler 10.0 %")
    assert bp.format_steal({"scaler": None}) == ""


def test_cpu_profile_formatting():
    profile = {"tasks": 100, "workers": 2, "seconds": 0.01, "tasks_per_s": 10000.0,
               "processes": [{"pid": 1, "role": "scheduler", "cpu_s": 0.002, "cpu_us_per_task": 20.0}],
               "all": {"role": "all", "cpu_s": 0.002, "cpu_us_per_task": 20.0}}
    text = bp.format_cpu_profile(profile)
    assert "scheduler" in text and "20.0" in text and "round trips" not in text
    assert bp.format_cpu_profile({"error": "boom"}).endswith("ERROR: boom")
    profile["processes"][0]["wakeups_per_task"] = 0.02
    profile["round_trips"] = {"count": 50, "median_us": 280.0, "seconds": 0.014,
                              "processes": [{"pid": 1, "role": "scheduler", "cpu_s": 0.005,
                                             "cpu_us_per_task": 100.0, "wakeups_per_task": 2.0}],
                              "all": {"role": "all", "cpu_s": 0.005, "cpu_us_per_task": 100.0,
                                      "wakeups_per_task": 2.0}}
    lines = bp.format_cpu_profile(profile).splitlines()
    assert "50 submit(noop).result() round trips" in lines[-4] and "median 280 us" in lines[-4]
    assert lines[-2].split() == ["scheduler", "0.01", "100.0", "2.00"]
    assert lines[2].split()[-1] == "0.02" and lines[3].split()[-1] == "-"  # (an "all" row without wake-ups)


def test_a_missing_interpreter_is_not_installable(tmp_path):
    info = bp.ensure_venv("loky", str(tmp_path), pythons=[str(tmp_path / "no-python")])
    assert info["status"] == "not installable"
    assert "no such interpreter" in info["reason"]


def test_a_failing_installation_is_reported_not_raised(tmp_path, monkeypatch):
    """The internal hook points the peer at a package that does not exist (a local path, so
    pip fails at once, without the network): the peer is "not installable", with pip's
    reason, and no half-made environment is left. (The environment borrows the base
    interpreter's pip instead of running ensurepip, which would cost seconds.)"""
    monkeypatch.setenv(bp.REQUIREMENTS_HOOK, json.dumps({"loky": [str(tmp_path / "no-such-package")]}))
    info = bp.ensure_venv("loky", str(tmp_path / "venvs"), pythons=[sys.executable],
                          venv_options=["--without-pip", "--system-site-packages"])
    assert info["status"] == "not installable"
    assert "pip install failed" in info["reason"] and "Python %d.%d" % sys.version_info[:2] in info["reason"]
    assert not os.path.exists(str(tmp_path / "venvs" / ("loky-%d.%d" % sys.version_info[:2])))
