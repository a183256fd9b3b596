"""What a worker tells the scheduler for monitors: a ``WorkerStatus`` with each heartbeat.

Kept apart from the agent's task logic: the agent calls :meth:`StatusReporter.report`
with what only it knows (its processor's pid, how many tasks run, how many processors are
suspended); this measures the CPU and memory of the agent and of that processor.
"""

from typing import Optional

from ..protocol.messages import WorkerStatus
from ..utility.procstat import ProcessMeter


class StatusReporter:
    def __init__(self) -> None:
        self._agent = ProcessMeter()
        self._processor: Optional[ProcessMeter] = None

    def report(self, processor_pid: int, running: int, suspended: int = 0) -> WorkerStatus:
        agent_cpu, agent_rss = self._agent.sample()
        processor_cpu, processor_rss = 0.0, 0
        if processor_pid > 0:
            if self._processor is None or self._processor.pid != processor_pid:
                self._processor = ProcessMeter(processor_pid)  # a new processor: its first figure is 0 %
            processor_cpu, processor_rss = self._processor.sample()
        else:
            self._processor = None
        return WorkerStatus(agent_cpu, agent_rss, max(0, processor_pid), processor_cpu, processor_rss, running,
                            suspended)
