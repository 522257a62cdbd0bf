"""Prometheus metrics and health endpoints of the node agent (prometheus-client).

Names follow kube-proxy's where one exists (`kubeproxy_sync_proxy_rules_duration_seconds` ->
`kernsplit_sync_proxy_rules_duration_seconds`). Per-backend connection counts are read from the
kernel's own counters at scrape time (rule counters or BPF maps), cached briefly so that a burst of
scrapes costs one read; they are what `kernsplit show` prints.

Endpoints on `--metrics-addr`: `/metrics`; `/healthz` (200 while the loop is alive and a sync
succeeded within two resync intervals); `/readyz` (200 once the first full sync is done).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kernsplit.agent.dataplane.base import ObservedSplit

NS = "kernsplit"
BACKEND_LABELS = ("dataplane", "namespace", "service", "port", "split", "backend")
# Sync durations from sub-millisecond eBPF map writes to multi-second iptables-nft full syncs.
SYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class KernelCollector:
    """Per-backend connections and weights, and map fill ratios, read from the kernel."""

    def __init__(self, observe: Callable[[], list[ObservedSplit]],
                 capacity: Callable[[], Mapping[str, tuple[int, int]]] | None = None,
                 max_age: float = 2.0) -> None:
        self._observe = observe
        self._capacity = capacity
        self._max_age = max_age
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, object]] = {}

    def _read(self, what: str, read: Callable[[], object]) -> object:
        """`read()`, at most once per `max_age` (both reads walk kernel tables or maps)."""
        with self._lock:
            at, value = self._cached.get(what, (float("-inf"), None))
            if time.monotonic() - at > self._max_age:
                value = read()
                self._cached[what] = (time.monotonic(), value)
            return value

    def _splits(self) -> list[ObservedSplit]:
        return self._read("splits", self._observe)

    def collect(self) -> Iterable:
        conns = CounterMetricFamily(f"{NS}_split_backend_connections", "New connections the kernel "
                                    "sent to a split backend since its rules were installed.",
                                    labels=BACKEND_LABELS)
        weight = GaugeMetricFamily(f"{NS}_split_backend_desired_weight", "Configured (normalised) "
                                   "weight of a split backend, as programmed.", labels=BACKEND_LABELS)
        share = GaugeMetricFamily(f"{NS}_split_backend_desired_share", "Desired share (0..1) of a "
                                  "split port's new connections, as programmed.", labels=BACKEND_LABELS)
        for s in self._splits():
            for b in s.backends:
                labels = [s.dataplane, s.namespace, s.service, str(s.port), s.split, b.service]
                conns.add_metric(labels, b.connections)
                weight.add_metric(labels, b.weight)
                share.add_metric(labels, float(b.share))
        yield from (conns, weight, share)
        if self._capacity is not None:
            fill = GaugeMetricFamily(f"{NS}_bpf_map_fill_ratio", "Entries in use / max entries of "
                                     "each BPF map of the eBPF dataplane.", labels=["map"])
            for name, (used, size) in sorted(self._read("capacity", self._capacity).items()):
                fill.add_metric([name], used / size if size else 0.0)
            yield fill


class Metrics:
    """The agent's metrics; the reconcile loop and sources call the `record_*`/`set_*` methods."""

    def __init__(self, resync_interval: float, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.resync_interval = resync_interval
        r = self.registry
        self.sync_duration = Histogram(f"{NS}_sync_proxy_rules_duration_seconds", "Duration of one "
                                       "sync of the kernel tables.", ["dataplane", "kind"],
                                       buckets=SYNC_BUCKETS, registry=r)
        self.sync_failures = Counter(f"{NS}_sync_proxy_rules_failures", "Syncs that failed "
                                     "(the loop retries; the kernel keeps its last state).",
                                     ["dataplane"], registry=r)
        self.last_sync = Gauge(f"{NS}_sync_proxy_rules_last_timestamp_seconds", "Unix time of the "
                               "last successful sync.", registry=r)
        self.split_ports = Gauge(f"{NS}_split_ports", "Split ports in the desired state.", registry=r)
        self.object_errors = Gauge(f"{NS}_config_object_errors", "Objects whose latest version has "
                                   "errors (their last good version, or nothing, stays in force).",
                                   ["kind"], registry=r)
        self.watch_restarts = Counter(f"{NS}_watch_restarts", "Watch streams that ended and were "
                                      "resumed.", ["resource"], registry=r)
        self.relists = Counter(f"{NS}_watch_relists", "Full re-lists (410 Gone or start).",
                               ["resource"], registry=r)
        self.objects = Gauge(f"{NS}_watched_objects", "Objects held in the agent's store.", ["kind"],
                             registry=r)
        self.repairs = Counter(f"{NS}_kernel_repairs", "Drift found and repaired in the kernel by a "
                               "full resync.", ["what"], registry=r)
        self.lock_waits = Counter(f"{NS}_iptables_lock_waits", "Times an iptables write found the "
                                  "xtables lock held and waited for it (counted also when the wait "
                                  "ran out and the sync failed).", registry=r)
        self._alive = time.monotonic()
        self._last_ok: float | None = None
        self._ready = False

    # --- recorded by the loop -------------------------------------------------------------
    def record_sync(self, dataplane: str, seconds: float, *, full: bool, ok: bool) -> None:
        self.sync_duration.labels(dataplane, "full" if full else "partial").observe(seconds)
        if ok:
            self._last_ok = time.monotonic()
            self.last_sync.set_to_current_time()
            if full:
                self._ready = True
        else:
            self.sync_failures.labels(dataplane).inc()

    # --- reported by the dataplane as it happens (`dataplane.base.Events`) ----------------------
    def record_lock_wait(self) -> None:
        self.lock_waits.inc()

    # --- reported by the Kubernetes source's reflectors (`WatchObserver`) -----------------------
    def relisted(self, resource: str) -> None:
        self.relists.labels(resource).inc()

    def watch_restarted(self, resource: str) -> None:
        self.watch_restarts.labels(resource).inc()

    # --- kept by the loop as objects come and go -------------------------------------------------
    def count_object(self, kind: str, delta: int) -> None:
        self.objects.labels(kind).inc(delta)

    def count_object_errors(self, kind: str, delta: int) -> None:
        self.object_errors.labels(kind).inc(delta)

    def heartbeat(self) -> None:
        """The loop is alive (called every iteration, even when there is nothing to do)."""
        self._alive = time.monotonic()

    def add_kernel(self, collector: KernelCollector) -> None:
        self.registry.register(collector)

    # --- health -----------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        now, bound = time.monotonic(), 2 * self.resync_interval
        if now - self._alive > bound:
            return False, f"the sync loop has not run for {now - self._alive:.0f}s"
        if self._ready and self._last_ok is not None and now - self._last_ok > bound:
            return False, f"no successful sync for {now - self._last_ok:.0f}s (bound {bound:g}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        return (True, "ok") if self._ready else (False, "first full sync not done yet")


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:      # scrapes every few seconds are not news
        pass


def _app(metrics: Metrics):
    exposition = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok, why = metrics.healthy() if path == "/healthz" else metrics.ready()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [why.encode() + b"\n"]
        if path == "/metrics":
            return exposition(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /healthz, /readyz\n"]
    return app


def serve(metrics: Metrics, address: str) -> _ThreadingWSGIServer:
    """Serve in a daemon thread on HOST:PORT ("[::1]:9464" for IPv6); returns the server (its
    `server_address` has the port actually bound when PORT is 0)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    server = make_server(host, int(port), _app(metrics), server_class=server_class,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
