"""Pins LangSmith tracing switched on the way users switch it on, by environment variables: every batch entry
point uploads one chat model run per input (its post and its patch) to ``LANGSMITH_ENDPOINT``, here a loopback
server of the test's own that accepts LangSmith's run uploads (``/runs/multipart``, ``/runs/batch``, ``/runs``).

Nothing may leave loopback: every ``LANGSMITH_*``/``LANGCHAIN_*`` and proxy variable is removed first, langsmith's
cached settings and client are reset, and the client's URL is checked before anything is traced; afterwards the
environment, the caches and the client are put back.

Covers: _calls/batch.py, _calls/prepare.py."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support import ENTRY_POINTS, run_entry_point

pytestmark = pytest.mark.timeout(60)

TEXTS = ["q0", "q1", "q2"]
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
UPLOAD_PATHS = ("/runs/multipart", "/runs/batch", "/runs")


class RunSink:
    """A loopback HTTP server standing in for LangSmith: ``GET /info`` says nothing special, every upload is kept.

    ``runs()`` merges what was uploaded into ``{run id: {"post": {...}, "patch": {...}}}`` whichever way the
    client sent it: multipart parts (``post.<id>``, ``post.<id>.outputs``, ...), a ``/runs/batch`` body, or
    single ``POST /runs`` and ``PATCH /runs/<id>`` requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"{}") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                sink.requests.append(("GET", self.path, dict(self.headers), b""))
                self._answer(200)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.requests.append((self.command, self.path, dict(self.headers), body))
                self._answer(202)

            do_PATCH = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-langsmith-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RunSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def runs(self) -> dict[str, dict[str, dict[str, Any]]]:
        runs: dict[str, dict[str, dict[str, Any]]] = {}

        def put(kind: str, run: dict[str, Any]) -> None:
            runs.setdefault(str(run["id"]), {}).setdefault(kind, {}).update(run)

        for method, path, headers, body in list(self.requests):
            if method == "GET":
                continue
            lower = {k.lower(): v for k, v in headers.items()}
            if lower.get("content-encoding") == "zstd":
                import zstandard

                body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
            if path.startswith("/runs/multipart"):
                message = BytesParser(policy=policy.HTTP).parsebytes(
                    b"Content-Type: " + lower["content-type"].encode() + b"\r\n\r\n" + body
                )
                for part in message.iter_parts():
                    kind, run_id, *field = str(part.get_param("name", header="content-disposition")).split(".")
                    value = json.loads(part.get_payload(decode=True))
                    put(kind, {"id": run_id, **({field[0]: value} if field else value)})
            elif path.startswith("/runs/batch"):
                for kind, items in json.loads(body).items():
                    for run in items:
                        put(kind, run)
            elif path.startswith("/runs"):
                run = json.loads(body)
                put("post" if method == "POST" else "patch", {"id": path.rsplit("/", 1)[-1], **run}
                    if method == "PATCH" else run)
        return runs


def _reset_langsmith_caches() -> None:
    from langsmith import utils as ls_utils

    ls_utils.get_env_var.cache_clear()
    ls_utils.get_tracer_project.cache_clear()


def _skip_unless_langsmith_can_build_runs() -> None:
    """langsmith 0.15.1 (what pip picks for langchain-core 1.6.0) cannot build a run under pydantic 2.9.0, the
    lowest version this package declares ("`RunTree` is not fully defined"): no chat model of any kind is traced
    there, so this is no behaviour of the batch paths to pin."""
    import langsmith
    import pydantic
    from langsmith.run_trees import RunTree

    try:
        RunTree(name="probe", run_type="chain")
    except pydantic.errors.PydanticUserError as e:
        why = str(e).splitlines()[0]
        pytest.skip(f"langsmith {langsmith.__version__} cannot trace under pydantic {pydantic.VERSION}: {why}")


@pytest.fixture
def langsmith_sink() -> Iterator[RunSink]:
    """Tracing on through ``LANGSMITH_TRACING``/``LANGSMITH_ENDPOINT``/``LANGSMITH_API_KEY``, to a :class:`RunSink`."""
    from langchain_core.tracers.langchain import get_client, wait_for_all_tracers
    from langsmith import run_trees

    _skip_unless_langsmith_can_build_runs()
    sink = RunSink().start()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("LANGSMITH_", "LANGCHAIN_")) or name.lower() in PROXY_VARS:
                mp.delenv(name)
        mp.setenv("LANGSMITH_TRACING", "true")
        mp.setenv("LANGSMITH_ENDPOINT", sink.url)
        mp.setenv("LANGSMITH_API_KEY", "lsv2-fake-key-for-a-loopback-sink")
        mp.setenv("LANGSMITH_PROJECT", "qwen-fast-batch-pins")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setattr(run_trees, "_CLIENT", None)  # the client is made again, from this environment
        _reset_langsmith_caches()
        client = get_client()
        try:
            assert client.api_url == sink.url, f"traces would go to {client.api_url}"
            yield sink
        finally:
            wait_for_all_tracers()
            close = getattr(client, "close", None)
            close(timeout=10) if close is not None else client.cleanup()
    _reset_langsmith_caches()  # the environment is back: so are langsmith's settings
    sink.stop()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_env_var_tracing_uploads_one_chat_model_run_per_input(
    entry: str, langsmith_sink: RunSink, canned_model: Any
) -> None:
    """No handler of the caller's is attached: the environment alone turns tracing on."""
    from langchain_core.tracers.langchain import wait_for_all_tracers

    model, _ = canned_model()
    out = run_entry_point(model, entry, TEXTS)
    assert [m.content for m in out] == [f"echo:{t}" for t in TEXTS]
    wait_for_all_tracers()
    runs = langsmith_sink.runs()
    run_ids = [m.id.removeprefix("lc_run--").removesuffix("-0") for m in out]  # each input's run, as its id says
    assert sorted(runs) == sorted(run_ids)  # the three chat model runs, nothing else
    for text, run_id in zip(TEXTS, run_ids, strict=True):
        uploads = runs[run_id]  # a run that ended before its start was sent comes as one post
        run = {**uploads["post"], **uploads.get("patch", {})}
        assert run["name"] == "BatchedChatQwen" and run["run_type"] == "llm" and run.get("parent_run_id") is None
        assert run["end_time"] and not run.get("error")
        assert run["inputs"]["messages"][0][-1]["kwargs"]["content"] == text
        assert run["outputs"]["generations"][0][0]["text"] == f"echo:{text}"
        assert run["extra"]["metadata"]["ls_provider"] == "qwen"
        assert run["extra"]["metadata"]["ls_model_name"] == model.model_name
    paths = {path for method, path, _, _ in langsmith_sink.requests if method != "GET"}
    assert paths and all(p.startswith(UPLOAD_PATHS) for p in paths), paths
