"""Route tasks by capability: only a worker that has every capability a task asks for runs it.

    python examples/task_capabilities.py

Starts a scheduler with ``allocate=capability``, one plain worker and one worker that
advertises ``gpu=1`` (as ``scaler_cluster --per-worker-capabilities gpu=1`` would), then
sends plain tasks and tasks that ask for ``{"gpu": 1}``. Each task returns the pid of the
worker that ran it; the monitor's snapshot says which worker has the GPU. The last line
printed is ``gpu tasks: 20 on the gpu worker; plain tasks: 20``.
"""

import os
import sys

try:
    import scaler  # noqa: F401
except ImportError:  # run from a source checkout without installing: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaler import Client, Cluster, SchedulerClusterCombo
from scaler.monitor import wait_for


def worker_pid(x):
    """The task's worker (its processor's parent): which one ran it."""
    return os.getppid()


def main(argv):
    # One plain worker with the scheduler...
    with SchedulerClusterCombo(n_workers=1, scaler_policy="allocate=capability; scaling=no",
                               logging_level="WARNING") as combo:
        # ...and one more worker, elsewhere in real life, that has a GPU.
        gpu_pool = Cluster(combo.get_address(), n_workers=1, per_worker_capabilities={"gpu": 1},
                           worker_names=["gpu-box"], logging_level="WARNING")
        gpu_pool.start()
        try:
            status = wait_for(combo.monitor_address, lambda s: len(s["workers"]) == 2, timeout=60)
            gpu_worker = next(w["pid"] for w in status["workers"] if "gpu" in w["capabilities"])
            with Client(combo.get_address()) as client:
                on_gpu = client.map(worker_pid, range(20), capabilities={"gpu": 1})
                plain = client.map(worker_pid, range(20))
                one = client.submit_verbose(worker_pid, (0,), {}, capabilities={"gpu": 1}).result(timeout=60)
        finally:
            gpu_pool.terminate()
            gpu_pool.join(30)
    assert set(on_gpu) == {gpu_worker} and one == gpu_worker, "a gpu task ran on a worker without a gpu"
    print("gpu tasks: %d on the gpu worker; plain tasks: %d" % (len(on_gpu), len(plain)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
