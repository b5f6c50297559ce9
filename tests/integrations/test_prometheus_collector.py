"""The Prometheus collectors read ``stats()`` on scrape and export it under stable names.

Covers: integrations/prometheus.py, _stats.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._stats import Histogram
from langchain_qwen_fast.integrations.prometheus import QwenStatsCollector, WorkerCollector
from langchain_qwen_fast.testing import SimConfig, SimServer

LAT = {"count": 4, "mean": 0.5, "p50": 0.4, "p95": 0.9, "p99": 1.0, "max": 1.1}


class FakeModel:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot, self.calls = snapshot, 0

    def stats(self) -> dict[str, Any]:
        self.calls += 1
        return self.snapshot


def _scrape(*collectors: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry()
    for c in collectors:
        reg.register(c)
    text = generate_latest(reg).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _stats(**endpoint_extra: Any) -> dict[str, Any]:
    return {
        "items": 10, "items_failed": 1, "cancelled": 2, "batches": 3, "list_splits": 0,
        "batch_size_histogram": {1: 2, 32: 3}, "queue_wait_s": LAT, "latency_s": LAT,
        "in_flight": 7, "max_in_flight": 64, "queued": 5,
        "endpoints": {"http://***@gpu1:8000/v1": {"requests": 3, "retries": 1, "errors": {"ServerError": 2},
                                                  "latency_s": LAT, "outstanding": 1, "ejected": False,
                                                  **endpoint_extra}},
    }


def test_the_model_snapshot_is_exported_with_counters_histogram_and_quantiles() -> None:
    m = _scrape(QwenStatsCollector(FakeModel(_stats())))
    assert m[("qwen_fast_items_total", ())] == 10 and m[("qwen_fast_items_cancelled_total", ())] == 2
    assert m[("qwen_fast_requests_total", ())] == 3 and m[("qwen_fast_in_flight", ())] == 7
    buckets = {dict(k[1])["le"]: v for k, v in m.items() if k[0] == "qwen_fast_batch_size_bucket"}
    assert buckets["1.0"] == 2 and buckets["16.0"] == 2 and buckets["32.0"] == 5 and buckets["+Inf"] == 5
    assert m[("qwen_fast_batch_size_sum", ())] == 2 * 1 + 3 * 32
    assert m[("qwen_fast_latency_seconds", (("quantile", "0.95"),))] == 0.9
    assert m[("qwen_fast_latency_seconds_count", ())] == 4 and m[("qwen_fast_latency_seconds_sum", ())] == 2.0
    ep = (("endpoint", "http://***@gpu1:8000/v1"),)
    assert m[("qwen_fast_endpoint_requests_total", ep)] == 3 and m[("qwen_fast_endpoint_retries_total", ep)] == 1
    assert m[("qwen_fast_endpoint_errors_total", (*ep, ("type", "ServerError")))] == 2
    assert m[("qwen_fast_endpoint_ejected", ep)] == 0
    assert m[("qwen_fast_endpoint_latency_seconds", (*ep, ("quantile", "0.5")))] == 0.4
    assert ("qwen_fast_endpoint_limit", ep) not in m  # older stats() without the key: skipped, not zero


def test_newer_endpoint_keys_are_exported_when_present() -> None:
    m = _scrape(QwenStatsCollector(FakeModel(_stats(in_flight=12, limit=256, healthy=True))))
    ep = (("endpoint", "http://***@gpu1:8000/v1"),)
    assert m[("qwen_fast_endpoint_limit", ep)] == 256 and m[("qwen_fast_endpoint_in_flight", ep)] == 12
    assert m[("qwen_fast_endpoint_healthy", ep)] == 1


def test_registering_does_not_read_stats_and_each_scrape_reads_them_once() -> None:
    fake = FakeModel(_stats())
    reg = CollectorRegistry()
    reg.register(QwenStatsCollector(fake))
    assert fake.calls == 0
    generate_latest(reg)
    assert fake.calls == 1


def test_an_empty_model_exports_zeros_not_errors() -> None:
    empty = {"items": 0, "batch_size_histogram": {}, "queue_wait_s": {"count": 0, "mean": None, "p50": None},
             "latency_s": None, "endpoints": {}}
    m = _scrape(QwenStatsCollector(FakeModel(empty), labels={"service": "api"}))
    assert m[("qwen_fast_items_total", (("service", "api"),))] == 0
    assert m[("qwen_fast_batch_size_count", (("service", "api"),))] == 0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero", seed=5)) as srv:
        yield srv


def test_a_real_models_stats_are_scraped_with_credentials_redacted(sim: SimServer) -> None:
    url = sim.base_url.replace("http://", "http://user:s3cret@")
    with BatchedChatQwen(base_url=url, model="Qwen/Qwen3-0.6B", max_tokens=8) as model:
        model.batch([f"q {i}" for i in range(40)])
        reg = CollectorRegistry()
        reg.register(QwenStatsCollector(model))
        text = generate_latest(reg).decode()
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert "s3cret" not in text
    assert m[("qwen_fast_items_total", ())] == 40
    assert m[("qwen_fast_batch_size_sum", ())] == 40  # every prompt counted once across the lists
    assert any(k[0] == "qwen_fast_endpoint_requests_total" and v > 0 for k, v in m.items())


def test_the_worker_collector_exports_jobs_lag_and_latency() -> None:
    class FakeWorker:
        def stats(self) -> dict[str, Any]:
            return {"read_new": 5, "read_reclaimed": 2, "acked": 7, "results_written": 6, "duplicates": 1,
                    "retried": 2, "dead_lettered": 1, "redis_errors": 0, "trimmed": 0,
                    "dead_letter_reasons": {"bad_job": 1}, "failed": {"ServerError": 1}, "in_flight": 3,
                    "capacity": 64, "stream_lag": 9, "stream_pending": None,
                    "job_seconds": {"buckets": {0.1: 4, 1.0: 2, float("inf"): 1}, "sum": 9.5}}

    m = _scrape(WorkerCollector(FakeWorker()))
    assert m[("qwen_fast_worker_jobs_read_total", (("source", "reclaimed"),))] == 2
    assert m[("qwen_fast_worker_jobs_acked_total", ())] == 7
    assert m[("qwen_fast_worker_jobs_dead_lettered_total", (("reason", "bad_job"),))] == 1
    assert m[("qwen_fast_worker_jobs_failed_total", (("type", "ServerError"),))] == 1
    assert m[("qwen_fast_worker_stream_lag", ())] == 9 and ("qwen_fast_worker_stream_pending", ()) not in m
    assert m[("qwen_fast_worker_job_seconds_bucket", (("le", "1.0"),))] == 6
    assert m[("qwen_fast_worker_job_seconds_count", ())] == 7


def test_a_histogram_counts_each_value_in_its_first_bucket_at_or_above_it_and_exports_cumulatively() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 5.0):  # 0.1 is counted under le=0.1, as Prometheus's "less or equal"
        hist.add(value)
    hist.add(0.2, n=3)
    assert hist.snapshot() == {"buckets": {0.1: 2, 1.0: 4, float("inf"): 1}, "sum": pytest.approx(6.25)}
    with pytest.raises(ValueError, match="must increase"):
        Histogram((1.0, 0.5))

    class Worker:
        def stats(self) -> dict[str, Any]:
            return {"read_new": 0, "read_reclaimed": 0, "acked": 0, "results_written": 0, "duplicates": 0,
                    "retried": 0, "dead_lettered": 0, "redis_errors": 0, "trimmed": 0, "dead_letter_reasons": {},
                    "failed": {}, "in_flight": 0, "capacity": 8, "stream_lag": None, "stream_pending": None,
                    "job_seconds": hist.snapshot()}

    m = _scrape(WorkerCollector(Worker()))
    buckets = {dict(k[1])["le"]: v for k, v in m.items() if k[0] == "qwen_fast_worker_job_seconds_bucket"}
    assert buckets == {"0.1": 2, "1.0": 6, "+Inf": 7}
    assert m[("qwen_fast_worker_job_seconds_sum", ())] == pytest.approx(6.25)
