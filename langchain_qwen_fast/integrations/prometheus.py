"""Prometheus collectors that read ``BatchedChatQwen.stats()`` (and a queue worker's counters) on scrape.

Custom collectors, not counters updated on the hot path: the model already keeps its numbers, so
a scrape copies one snapshot and the dispatcher pays nothing between scrapes. Any service that
embeds ``BatchedChatQwen`` can register one::

    from prometheus_client import REGISTRY, start_http_server
    from langchain_qwen_fast.integrations.prometheus import QwenStatsCollector
    REGISTRY.register(QwenStatsCollector(model))
    start_http_server(9464)

Keys the ``stats()`` contract marks as newer (per endpoint ``in_flight``, ``limit``, ``healthy``) are
exported when present and skipped when not, so the collector works across versions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
        SummaryMetricFamily,
    )
    from prometheus_client.samples import Sample
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("the collectors need the 'queue' extra: pip install 'langchain-qwen-fast[queue]'") from e

from langchain_qwen_fast._stats import Histogram
from langchain_qwen_fast._urls import redact_url

__all__ = ["QwenStatsCollector", "WorkerCollector"]
#: Upper bounds of the batch-size histogram: prompts per HTTP request (lists hold up to max_batch_size).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


def _summary(name: str, doc: str, labels: tuple[str, ...], rows: list[tuple[tuple[str, ...], Any]]) -> Metric:
    """A summary from ``{count, mean, p50, p95, p99}`` dicts: quantiles over the model's recent window."""
    fam = SummaryMetricFamily(name, doc, labels=list(labels))
    for values, s in rows:
        if not isinstance(s, Mapping):
            continue
        count = int(s.get("count") or 0)
        mean = s.get("mean")
        fam.add_metric(list(values), count, float(mean) * count if mean is not None else 0.0)
        base = dict(zip(labels, values, strict=True))
        for q, key in _QUANTILES:
            if s.get(key) is not None:
                fam.samples.append(Sample(name, {**base, "quantile": q}, float(s[key])))
    return fam


def _histogram(name: str, doc: str, snap: Mapping[str, Any], labels: Mapping[str, str]) -> HistogramMetricFamily:
    """A histogram family from a ``_stats.Histogram`` snapshot: ``{"buckets": {upper bound: count}, "sum": s}``."""
    buckets, running = [], 0
    for le, n in snap["buckets"].items():
        running += n
        buckets.append(("+Inf" if math.isinf(le) else repr(float(le)), float(running)))
    fam = HistogramMetricFamily(name, doc, labels=list(labels))
    fam.add_metric(list(labels.values()), buckets, float(snap["sum"]))
    return fam


def _batch_histogram(name: str, sizes: Mapping[Any, int], labels: Mapping[str, str]) -> HistogramMetricFamily:
    """``stats()`` counts each batch size exactly; Prometheus gets them in :data:`BATCH_BUCKETS`."""
    hist = Histogram(BATCH_BUCKETS)
    for size, count in sizes.items():
        hist.add(int(size), int(count))
    return _histogram(name, "Prompts per HTTP request (completions lists coalesce many).", hist.snapshot(), labels)


class QwenStatsCollector:
    """Exports one model's ``stats()``; ``prefix`` names the metrics, ``labels`` are added to every sample."""

    def __init__(self, model: Any, prefix: str = "qwen_fast", labels: Mapping[str, str] | None = None) -> None:
        self.model, self.prefix = model, prefix
        self.labels = dict(labels or {})

    def describe(self) -> list[Metric]:
        return []  # no eager collect() at registration: that would start the model's pool before it is used

    def collect(self) -> Iterator[Metric]:
        s = self.model.stats()
        p, extra = self.prefix, self.labels
        names, values = tuple(extra), tuple(extra.values())

        def counter(name: str, doc: str, value: Any) -> CounterMetricFamily:
            fam = CounterMetricFamily(f"{p}_{name}", doc, labels=list(names))
            fam.add_metric(list(values), float(value or 0))
            return fam

        def gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(f"{p}_{name}", doc, labels=list(names))
            fam.add_metric(list(values), float(value or 0))
            return fam

        yield counter("items", "Calls answered (a list of 32 prompts counts 32).", s.get("items"))
        yield counter("items_failed", "Calls that ended in an error.", s.get("items_failed"))
        yield counter("items_cancelled", "Calls cancelled by their caller.", s.get("cancelled"))
        yield counter("requests", "HTTP requests sent (batches).", s.get("batches"))
        yield counter("list_splits", "Completions lists split after a 400.", s.get("list_splits"))
        yield gauge("in_flight", "Sequences admitted and not finished.", s.get("in_flight"))
        yield gauge("max_in_flight", "Most sequences in flight at once so far.", s.get("max_in_flight"))
        yield gauge("queued", "Calls waiting for admission in the client.", s.get("queued"))
        yield _batch_histogram(f"{p}_batch_size", s.get("batch_size_histogram") or {}, extra)
        yield _summary(f"{p}_queue_wait_seconds", "Time from call to dispatch (recent window).", names,
                       [(values, s.get("queue_wait_s"))])
        yield _summary(f"{p}_latency_seconds", "Time from call to answer (recent window).", names,
                       [(values, s.get("latency_s"))])
        yield from self._endpoints(s.get("endpoints") or {}, names, values)

    def _endpoints(self, eps: Mapping[str, Any], names: tuple[str, ...], values: tuple[str, ...]) -> Iterator[Metric]:
        p, lab = self.prefix, [*names, "endpoint"]
        req = CounterMetricFamily(f"{p}_endpoint_requests", "HTTP requests per replica.", labels=lab)
        ret = CounterMetricFamily(f"{p}_endpoint_retries", "Retries sent to a replica.", labels=lab)
        err = CounterMetricFamily(f"{p}_endpoint_errors", "Failed requests per replica, by error type.",
                                  labels=[*lab, "type"])
        gauges = {
            "outstanding": GaugeMetricFamily(f"{p}_endpoint_outstanding", "Requests in flight at a replica.",
                                             labels=lab),
            "ejected": GaugeMetricFamily(f"{p}_endpoint_ejected", "1 while a replica is ejected after errors.",
                                         labels=lab),
            "in_flight": GaugeMetricFamily(f"{p}_endpoint_in_flight", "Sequences in flight at a replica.", labels=lab),
            "limit": GaugeMetricFamily(f"{p}_endpoint_limit", "Sequences a replica is admitted at most.", labels=lab),
            "healthy": GaugeMetricFamily(f"{p}_endpoint_healthy", "1 while a replica counts as healthy.", labels=lab),
        }
        rows = []
        for url, e in eps.items():
            v = [*values, redact_url(url)]  # stats() redacts already; a label must never carry a password
            req.add_metric(v, float(e.get("requests") or 0))
            ret.add_metric(v, float(e.get("retries") or 0))
            for kind, n in (e.get("errors") or {}).items():
                err.add_metric([*v, kind], float(n))
            for key, fam in gauges.items():
                if e.get(key) is not None:
                    fam.add_metric(v, float(e[key]))
            rows.append((tuple(v), e.get("latency_s")))
        yield from (req, ret, err)
        yield from (fam for fam in gauges.values() if fam.samples)
        yield _summary(f"{p}_endpoint_latency_seconds", "Request latency per replica (recent window).",
                       tuple(lab), rows)


class WorkerCollector:
    """Exports a ``StreamWorker``'s counters: jobs read, acknowledged, retried, dead-lettered, in flight, lag."""

    def __init__(self, worker: Any, prefix: str = "qwen_fast_worker") -> None:
        self.worker, self.prefix = worker, prefix

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s, p = self.worker.stats(), self.prefix
        read = CounterMetricFamily(f"{p}_jobs_read", "Jobs taken from the stream.", labels=["source"])
        read.add_metric(["new"], float(s["read_new"]))
        read.add_metric(["reclaimed"], float(s["read_reclaimed"]))
        yield read
        for key, doc in (
            ("acked", "Jobs acknowledged (each only after its result was written)."),
            ("results_written", "Results written (once per job id)."),
            ("duplicates", "Jobs delivered again whose result already existed: acknowledged, not answered twice."),
            ("retried", "Jobs taken over from a consumer that held them past the idle time."),
            ("redis_errors", "Redis commands that failed and were retried."),
            ("trimmed", "Acknowledged entries trimmed from the stream."),
        ):
            yield CounterMetricFamily(f"{p}_jobs_{key}" if key not in ("redis_errors", "trimmed") else f"{p}_{key}",
                                      doc, value=float(s[key]))
        dead = CounterMetricFamily(f"{p}_jobs_dead_lettered", "Jobs answered with an error and copied to the "
                                   "dead-letter stream.", labels=["reason"])
        for reason, n in s["dead_letter_reasons"].items():
            dead.add_metric([reason], float(n))
        yield dead
        failed = CounterMetricFamily(f"{p}_jobs_failed", "Jobs whose model call failed after retries.",
                                     labels=["type"])
        for kind, n in s["failed"].items():
            failed.add_metric([kind], float(n))
        yield failed
        yield GaugeMetricFamily(f"{p}_jobs_in_flight", "Jobs held by this worker.", value=float(s["in_flight"]))
        yield GaugeMetricFamily(f"{p}_capacity", "Jobs this worker holds at most.", value=float(s["capacity"]))
        for key, doc in (("stream_lag", "Entries not yet delivered to the group."),
                         ("stream_pending", "Entries delivered to the group and not acknowledged.")):
            if s[key] is not None:
                yield GaugeMetricFamily(f"{p}_{key}", doc, value=float(s[key]))
        yield _histogram(f"{p}_job_seconds", "From submission to result written.", s["job_seconds"], {})
