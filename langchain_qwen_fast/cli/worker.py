"""``qwen-fast worker``: answer jobs from a Redis stream with ``BatchedChatQwen``, serve /health and /metrics.

    qwen-fast worker --redis redis://localhost:6379/0 --stream jobs --group qwen \\
        --base-url http://gpu1:8000/v1,http://gpu2:8000/v1 --max-tokens 256

The api key is read from ``QWEN_API_KEY`` or ``OPENAI_API_KEY`` (never from the command line, which
other users can see). /health and /metrics answer at once (``WORKER_HTTP`` on stdout); jobs are read
only once the replicas serve the model (``cli/readiness.py``; ``WORKER_READY`` on stdout), until then
/health is 503 with the reason. SIGTERM or SIGINT stops reading, answers what is held (``--drain``)
and exits 0; jobs still unanswered stay pending and another worker takes them over after ``--claim-idle``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._urls import redact_url
from langchain_qwen_fast.cli.help import RawDefaultsHelpFormatter
from langchain_qwen_fast.cli.readiness import Readiness

DESCRIPTION = """Answer jobs from a Redis stream with BatchedChatQwen; serve /health and /metrics.

  qwen-fast worker --redis redis://localhost:6379/0 --stream jobs --group qwen \\
      --base-url http://gpu1:8000/v1,http://gpu2:8000/v1 --max-tokens 256

The api key comes from QWEN_API_KEY or OPENAI_API_KEY, never from the command line. Jobs are read once
every replica that answers serves the model; until then /health answers 503 with the reason."""


def _urls(values: list[str]) -> list[str]:
    return [u.strip() for v in values for u in v.split(",") if u.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qwen-fast worker", description=DESCRIPTION,
                                 formatter_class=RawDefaultsHelpFormatter)
    ap.add_argument("--redis", required=True, help="redis://[:password@]host:port/db or unix:///path/redis.sock")
    ap.add_argument("--stream", required=True, help="the job stream (its name prefixes results, replies, dead letters)")
    ap.add_argument("--group", required=True, help="consumer group shared by the workers of one pool")
    ap.add_argument("--consumer", default=None, help="this worker's name in the group (default: host-pid-random)")
    ap.add_argument("--base-url", action="append", required=True,
                    help="server URL ending in /v1; repeat it or separate with commas for replicas")
    ap.add_argument("--model", default=None, help="served model name (default: QWEN_MODEL, else the one model the "
                    "replicas serve, else Qwen/Qwen3-0.6B)")
    ap.add_argument("--max-tokens", type=int, default=None, help="max_tokens for jobs that set none (default: none)")
    ap.add_argument("--max-concurrency", type=int, default=512, help="the model's admission limit (sequences)")
    ap.add_argument("--max-in-flight", type=int, default=None,
                    help="jobs held at once (default: the model's admission capacity)")
    ap.add_argument("--timeout", type=float, default=None, help="per-call deadline in seconds (default: 600)")
    ap.add_argument("--max-retries", type=int, default=2, help="retries per model call before an error result")
    ap.add_argument("--claim-idle", type=float, default=60.0,
                    help="seconds a job may sit with a silent worker before another takes it over")
    ap.add_argument("--max-deliveries", type=int, default=5, help="deliveries before a job is dead-lettered")
    ap.add_argument("--max-job-bytes", type=int, default=1 << 20, help="larger jobs are refused and dead-lettered")
    ap.add_argument("--result-ttl", type=int, default=86400, help="seconds a result key is kept")
    ap.add_argument("--trim-interval", type=float, default=30.0,
                    help="seconds between trims of acknowledged entries (0: never trim)")
    ap.add_argument("--drain", type=float, default=30.0, help="seconds to finish held jobs on SIGTERM")
    ap.add_argument("--http-host", default="127.0.0.1", help="address for /health and /metrics (0.0.0.0 to scrape "
                    "from elsewhere)")
    ap.add_argument("--http-port", type=int, default=9464, help="port for /health and /metrics (0: any free port)")
    ap.add_argument("--log-level", default="WARNING",
                    help="DEBUG, INFO, WARNING or ERROR; WARNING shows readiness and each new kind of job failure")
    return ap


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    from langchain_qwen_fast.integrations.prometheus import QwenStatsCollector, WorkerCollector
    from langchain_qwen_fast.integrations.redis_streams import StreamWorker, WorkerConfig, connect
    from langchain_qwen_fast.integrations.redis_streams.config import client_name

    urls = _urls(args.base_url)
    fields: dict[str, Any] = {
        "base_url": urls if len(urls) > 1 else urls[0],
        "max_concurrency": args.max_concurrency,
        "max_retries": args.max_retries,
    }
    for key, value in (("model", args.model), ("max_tokens", args.max_tokens), ("timeout", args.timeout)):
        if value is not None:
            fields[key] = value
    model = BatchedChatQwen(**fields)
    extra = {"consumer": args.consumer} if args.consumer else {}
    config = WorkerConfig(
        stream=args.stream, group=args.group, max_in_flight=args.max_in_flight, claim_idle_s=args.claim_idle,
        max_deliveries=args.max_deliveries, max_job_bytes=args.max_job_bytes, result_ttl_s=args.result_ttl,
        trim_interval_s=args.trim_interval, drain_s=args.drain, **extra,
    )
    client = connect(args.redis, client_name=client_name(config.consumer))
    worker = StreamWorker(client, model, config)
    registry = CollectorRegistry()
    registry.register(QwenStatsCollector(model))
    registry.register(WorkerCollector(worker))
    health = Readiness(worker, model, model._headers())  # the model's own servers and request headers

    async def get_health(_: web.Request) -> web.Response:
        ready, detail = await health.check()
        return web.json_response({"ready": ready, **detail}, status=200 if ready else 503)

    async def get_metrics(_: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.http_host, args.http_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else args.http_port

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = f"http://{args.http_host}:{port}"
    print(f"WORKER_HTTP http={http}", flush=True)
    try:
        if await health.wait(stop):
            print(f"WORKER_READY consumer={config.consumer} capacity={worker.capacity} "
                  f"http={http} redis={redact_url(args.redis)}", flush=True)
            await worker.run(stop)
    finally:
        await health.close()
        await runner.cleanup()
        await model.aclose()
        await client.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(args))
    except ValueError as e:  # bad settings (config checks, base_url) named by their own messages
        print(f"qwen-fast worker: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
