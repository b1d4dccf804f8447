"""The server's Prometheus metrics (prometheus-client), in a registry of its own per app: jobs by state, queue
depth, wait and run time, forwards, rejections by reason, whether the queue is held (the state folder cannot
be written)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self, store):
        self.registry = CollectorRegistry()
        self.store = store
        self.jobs = Gauge("infolens_jobs", "jobs by state", ["state"], registry=self.registry)
        self.queue = Gauge("infolens_queue_depth", "jobs queued or running", registry=self.registry)
        self.wait = Histogram("infolens_job_wait_seconds", "from submission to the first chunk", buckets=_SECONDS,
                              registry=self.registry)
        self.run = Histogram("infolens_job_run_seconds", "from the first chunk to the end", buckets=_SECONDS,
                             registry=self.registry)
        self.forwards = Counter("infolens_forwards", "classifier forwards run", registry=self.registry)
        self.rejections = Counter("infolens_rejections", "requests refused", ["reason"], registry=self.registry)
        self.held = Gauge("infolens_queue_held", "1 while the queue waits for a state folder that cannot be written",
                          registry=self.registry)

    def waited(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def ran(self, seconds: float) -> None:
        self.run.observe(seconds)

    def render(self) -> bytes:
        """The exposition text, job gauges read from the store now."""
        counts = self.store.counts()
        for state, n in counts.items():
            self.jobs.labels(state).set(n)
        self.queue.set(counts["queued"] + counts["running"])
        return generate_latest(self.registry)
