"""GET /metrics: the service in Prometheus' text format, read from the records at each scrape
(transfers by state, bytes and objects moved per route, the current throughput of running
transfers) and from this process' tallies (retried requests and failed objects by kind)."""
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloudmesh.transfer import tally
from cloudmesh.transfer.records.base import State


class TransferCollector:
    """Builds the metrics from the records when Prometheus asks. The throughput is the bytes the
    running transfers moved since the previous scrape over the time since it (their average rate
    at the first scrape)."""

    def __init__(self, api):
        self.api, self.lock = api, threading.Lock()
        self.seen: dict[str, tuple[int, float]] = {}  # running transfer -> bytes done, when

    def collect(self):
        statistic = self.api.statistic()
        transfers = GaugeMetricFamily("cms_transfer_transfers", "Transfers by state", labels=["state"])
        for state in State:
            transfers.add_metric([state.value], statistic["transfers"].get(state.value, 0))
        yield transfers
        moved = CounterMetricFamily("cms_transfer_bytes", "Bytes moved per route", labels=["route"])
        objects = CounterMetricFamily("cms_transfer_objects", "Objects done per route", labels=["route"])
        for route, totals in statistic["by_route"].items():
            moved.add_metric([route], totals["bytes"])
            objects.add_metric([route], totals["objects"])
        yield moved
        yield objects
        yield GaugeMetricFamily("cms_transfer_throughput_bytes_per_second",
                                "Bytes per second the running transfers move now", value=self.throughput())
        for name, text, counts in (("cms_transfer_retries", "Requests tried again, by kind", tally.RETRIES),
                                   ("cms_transfer_errors", "Objects failed, by kind of error", tally.ERRORS)):
            family = CounterMetricFamily(name, text, labels=["kind"])
            for kind, count in sorted(counts.snapshot().items()):
                family.add_metric([kind], count)
            yield family

    def throughput(self) -> float:
        now, rate, seen = time.time(), 0.0, {}
        with self.lock:
            for status in self.api.transfers(State.RUNNING):
                bytes_done = status["bytes_done"]
                before = self.seen.get(status["id"])
                if before and now > before[1]:
                    rate += max(bytes_done - before[0], 0) / (now - before[1])
                elif status["seconds"]:
                    rate += bytes_done / status["seconds"]
                seen[status["id"]] = (bytes_done, now)
            self.seen = seen
        return rate


class Metrics:
    """The service's registry: one collector over its Transfer for the records."""

    def __init__(self, api):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TransferCollector(api))

    def text(self) -> bytes:
        return generate_latest(self.registry)
