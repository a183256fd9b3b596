"""A worker: an agent process (scheduler link, queue, objects) and a processor subprocess."""
