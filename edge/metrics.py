"""Prometheus metrics of a station, served on a local port ([station] metrics_port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from edge.outcome import Outcome, StationState


class StationMetrics:
    """A listener of the station's events plus gauges read at scrape time."""

    def __init__(self, station, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.scans = Counter("qrgate_station_scans", "Decided scans by result and reason",
                             ["result", "reason"], registry=self.registry)
        backlog = Gauge("qrgate_station_backlog_records", "Records waiting for the server's ack",
                        registry=self.registry)
        backlog.set_function(station.outbox.backlog)
        online = Gauge("qrgate_station_online", "1 while connected to the broker", registry=self.registry)
        online.set_function(lambda: float(station.publisher.online))
        synced = Gauge("qrgate_station_clock_synced", "1 while the clock is NTP-synchronised",
                       registry=self.registry)
        synced.set_function(lambda: float(bool(station.clock.synced())))
        self.fault = Gauge("qrgate_station_fault", "1 while the station shows this fault", ["fault"],
                           registry=self.registry)
        seq = Gauge("qrgate_station_next_seq", "Sequence number of the next record", registry=self.registry)
        seq.set_function(station.outbox.next_seq)
        self._fault_shown = ""

    def __call__(self, event: Outcome | StationState) -> None:
        if isinstance(event, Outcome):
            self.scans.labels(event.result.value, event.reason or "").inc()
        elif event.fault != self._fault_shown:
            if self._fault_shown:
                self.fault.labels(self._fault_shown).set(0)
            if event.fault:
                self.fault.labels(event.fault).set(1)
            self._fault_shown = event.fault

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
