"""Prometheus metrics of the server: ingest, refusals and the fleet, at GET /metrics."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from fastapi import APIRouter, Request
from fastapi.responses import Response


class ServerCollector:
    """Reads the bridge's counters and the database at scrape time."""

    def __init__(self, storage, bridge=None):
        self.storage = storage
        self.bridge = bridge

    def collect(self):
        stored = CounterMetricFamily("qrgate_records_stored", "Records stored by this bridge process")
        duplicate = CounterMetricFamily("qrgate_records_duplicate", "Repeated records acked again")
        refused = CounterMetricFamily("qrgate_records_refused", "Records refused, by reason", labels=["reason"])
        if self.bridge is not None:
            counters = dict(self.bridge.counters)
            stored.add_metric([], counters.get("stored", 0))
            duplicate.add_metric([], counters.get("duplicate", 0))
            for key, value in counters.items():
                if key.startswith("refused."):
                    refused.add_metric([key.split(".", 1)[1]], value)
        yield stored
        yield duplicate
        yield refused
        checkins = GaugeMetricFamily("qrgate_checkins", "Check-ins in the database")
        checkins.add_metric([], self.storage.count_checkins())
        yield checkins
        from server.ingest.fleet import Fleet

        rows = Fleet(self.storage).rows(int(time.time() * 1000))
        stations = GaugeMetricFamily("qrgate_stations", "Stations by state", labels=["state"])
        states = {"online": 0, "offline": 0, "retired": 0}
        for r in rows:
            states["retired" if r["status"] != "active" else ("online" if r["online"] else "offline")] += 1
        for state, n in states.items():
            stations.add_metric([state], n)
        yield stations
        backlog = GaugeMetricFamily("qrgate_station_backlog_records", "Backlog each station last reported",
                                    labels=["station"])
        for r in rows:
            if r["backlog"] is not None and r["status"] == "active":
                backlog.add_metric([r["station_id"]], r["backlog"])
        yield backlog


def registry(storage, bridge=None) -> CollectorRegistry:
    """One app's registry: the server's collector over ``storage`` and ``bridge``."""
    made = CollectorRegistry()
    made.register(ServerCollector(storage, bridge))
    return made


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request):
    """The server's figures in Prometheus' text format."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
