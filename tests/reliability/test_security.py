"""Secrets and transport security: the api key never shows anywhere, TLS is verified by default,
a key over plain http to another host is warned about, prompt text is never logged, and a proxy with basic
auth in front of the server works from the URL's credentials.

Covers: _urls.py, _errors.py, chat_models.py, _calls/fields.py, _engines/aiohttp_engine.py,
_engines/asyncio_engine.py."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import SIM_MODEL, Ledger
from langchain_core.load import dumpd, dumps
from support import free_port

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._errors import APIConnectionError, ServerError
from langchain_qwen_fast.testing import SimServer

KEY = "sk-reliability-SECRET-7f3a9c1e"
PROMPT_MARK = "zebra quokka narwhal"  # stands for a user's private text
MakeModel = Callable[..., BatchedChatQwen]


def _everything_about(exc: BaseException) -> str:
    """str, repr, attributes and the whole cause/context chain of an exception."""
    parts, seen, e = [], set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts += [
            str(e),
            repr(e),
            repr(getattr(e, "args", ())),
            repr(vars(e) if hasattr(e, "__dict__") else ""),
        ]
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def _exercise(
    zero: SimServer, make_model: MakeModel, led: Ledger, **fields: Any
) -> tuple[list[BaseException], list[BatchedChatQwen]]:
    """Successes, retries (503 burst, resets), failures (401, 500 spent, 400, HTML, refused)."""
    errors: list[BaseException] = []
    models = [make_model(zero, api_key=KEY, wire_mode=w, **fields) for w in ("chat", "completions")]

    def run(model: BatchedChatQwen, n: int, extra: str = "") -> None:
        ids, prompts = led.prompts(n, f"{PROMPT_MARK} {extra}".strip())
        outs = model.batch(prompts, return_exceptions=True)
        led.record_all(ids, outs)
        errors.extend(o for o in outs if isinstance(o, BaseException))

    for model in models:
        run(model, 3)  # success
        (one,), (p,) = led.prompts(1, PROMPT_MARK)
        led.record(one, "".join(str(c.content) for c in model.stream(p)))
        zero.set_faults(["status=503#2"])
        run(model, 2)  # retried, then success
        zero.set_faults(["reset_before#2", "reset_after#1"])
        run(model, 2)
        zero.set_faults(["status=500#9"])
        run(model, 1)  # retries spent: ServerError
        zero.set_faults([])
        for fault in ("status=401", "status=400", "html=502", "truncated_json"):
            run(model, 1, f"[[fault:{fault}]]")

        async def ainvoke_fail(m: BatchedChatQwen = model) -> None:
            (one,), (p,) = led.prompts(1, f"{PROMPT_MARK} [[fault:status=403]]")
            try:
                led.record(one, await m.ainvoke(p))
            except Exception as e:
                led.record(one, e)
                errors.append(e)

        asyncio.run(ainvoke_fail())
    refused = make_model(f"http://127.0.0.1:{free_port()}/v1", api_key=KEY, **fields)
    run(refused, 1)
    return errors, [*models, refused]


def test_api_key_never_appears_anywhere(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    led = Ledger("api key hunt: successes, retries, failures (both wires)")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        errors, models = _exercise(zero, make_model, led)
    tally = led.check(min_answered=10, min_failed=10)
    kinds = {"APIConnectionError" if k == "AllReplicasDownError" else k for k in tally.errors}  # a subclass
    assert {"AuthenticationError", "ServerError", "BadRequestError", "APIConnectionError"} <= kinds
    assert models[0].api_key is not None and models[0].api_key.get_secret_value() == KEY  # it was in use

    haystack = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *(repr(r.args) for r in caplog.records),
    ]
    haystack += [_everything_about(e) for e in errors]
    haystack += [str(w.message) for w in warned]
    for m in models:
        haystack += [
            repr(m),
            str(m),
            repr(m.model_dump()),
            m.model_dump_json(),
            json.dumps(dumpd(m)),
            dumps(m),
            dumps(m, pretty=True),
            repr(m._get_ls_params()),
            json.dumps(m.stats(), default=str),
            repr(m._identifying_params),
        ]
    retry_logs = [r for r in caplog.records if r.name == "langchain_qwen_fast" and "retry" in r.getMessage()]
    assert retry_logs, "no retry was logged at DEBUG: the log check would be vacuous"
    leaks = [h for h in haystack if KEY in h]
    assert not leaks, f"the api key leaked in {len(leaks)} places, e.g. {leaks[0][:300]!r}"
    assert KEY[:12] not in "\n".join(haystack)  # not even a prefix


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_prompt_text_is_never_logged(
    zero: SimServer,
    make_model: MakeModel,
    quick_backoff: None,
    caplog: pytest.LogCaptureFixture,
    level: int,
) -> None:
    """Nothing above DEBUG carries prompt text; DESIGN §2 asks for none at DEBUG either."""
    caplog.set_level(level)
    led = Ledger(f"prompt-text hunt in logs at {logging.getLevelName(level)}")
    _exercise(zero, make_model, led)
    led.check(min_answered=10, min_failed=10, record=level == logging.INFO)
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert PROMPT_MARK not in logged, [r.getMessage() for r in caplog.records if PROMPT_MARK in r.getMessage()][:3]
    assert "item-0000" not in logged


# -- TLS -------------------------------------------------------------------------------------------
class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.ctx = ctx
        self.handshakes = 0
        self.handshake_failures = 0

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.handshakes += 1
        try:
            request = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet
        pass


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # an OpenAI-shaped echo, enough for one chat call
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "[sim] " + body["messages"][-1]["content"][:80]
        out = json.dumps(
            {
                "id": "chatcmpl-tls",
                "object": "chat.completion",
                "created": 0,
                "model": SIM_MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def tls_server(self_signed: tuple[Path, Path]) -> Iterator[_TLSServer]:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = _TLSServer(ctx)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ["asyncio", "aiohttp", "httpx"])
def test_tls_certificates_are_verified_by_default(
    tls_server: _TLSServer, self_signed: tuple[Path, Path], make_model: MakeModel, engine: str
) -> None:
    url = f"https://127.0.0.1:{tls_server.server_address[1]}/v1"
    led = Ledger(f"self-signed TLS certificate ({engine} engine)", errors=(APIConnectionError,))
    model = make_model(url, wire_mode="chat", http_engine=engine)  # default max_retries=2
    (a, b), prompts = led.prompts(2)
    t0 = time.monotonic()
    with pytest.raises(APIConnectionError) as ei:
        model.invoke(prompts[0])
    elapsed = time.monotonic() - t0
    led.record(a, ei.value)
    msg = str(ei.value)
    assert "CERTIFICATE_VERIFY_FAILED" in msg and "certificate failed verification" in msg, msg
    assert url in msg
    time.sleep(0.3)  # let the server's thread see the aborted handshake(s)
    assert tls_server.handshakes == 1, "a certificate that failed verification was retried"
    assert elapsed < 2.0

    # Control: the same server answers a client that trusts this certificate, so the failure above
    # was the verification and nothing else.
    trusting = make_model(
        url,
        wire_mode="chat",
        http_async_client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(self_signed[0]))),
    )
    led.record(b, trusting.invoke(prompts[1]))
    led.check(min_answered=1, min_failed=1)


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("http://10.1.2.3:8000/v1", True),
        ("http://gpu-box.internal:8000/v1", True),
        (["http://127.0.0.1:8000/v1", "http://10.0.0.7:8000/v1"], True),
        ("http://127.0.0.1:8000/v1", False),
        ("http://localhost:8000/v1", False),
        ("http://[::1]:8000/v1", False),
        ("https://gpu-box.internal/v1", False),
    ],
)
def test_key_over_plain_http_to_another_host_warns(url: str | list[str], warns: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BatchedChatQwen(base_url=url, api_key=KEY, model=SIM_MODEL)
        BatchedChatQwen(base_url=url, model=SIM_MODEL, api_key=None)  # no key: nothing to warn about
    hits = [w for w in caught if issubclass(w.category, UserWarning) and "plain http" in str(w.message)]
    assert len(hits) == (1 if warns else 0), [str(w.message) for w in caught]
    assert all(KEY not in str(w.message) for w in caught)


def test_credentials_in_base_url_are_redacted_from_errors_and_logs(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "pw-SECRET-91c2"
    led = Ledger("credentials in base_url", errors=(APIConnectionError, ServerError))
    good = zero.base_url.replace("http://", f"http://user:{password}@")
    refused = f"http://user:{password}@127.0.0.1:{free_port()}/v1"
    errors: list[BaseException] = []
    for url, extra in ((good, "[[fault:status=500]]"), (refused, "")):
        model = make_model(url, wire_mode="chat")
        (one,), (p,) = led.prompts(1, extra)
        try:
            led.record(one, model.invoke(p))
        except Exception as e:
            led.record(one, e)
            errors.append(e)
    led.check(max_answered=0, min_failed=2, record=False)
    text = caplog.text + "\n".join(_everything_about(e) for e in errors)
    assert "***@127.0.0.1" in text  # the URL is still named, without its credentials
    assert password not in text


class _BasicAuthProxy(BaseHTTPRequestHandler):
    """A reverse proxy with basic auth in front of the server (what nginx's auth_basic does): 401 without the
    right ``Authorization: Basic``, else the request forwarded as it came, minus that header."""

    upstream = ""
    expected = ""
    seen: list[str] = []

    def _forward(self) -> None:
        got = self.headers.get("Authorization", "")
        self.seen.append(got.split(" ")[0])
        if got != self.expected:
            body = b'{"error": "basic auth required"}'
            self.send_response(401)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            r = httpx.request(self.command, self.upstream + self.path, content=data, trust_env=False,
                              headers={"Content-Type": "application/json"}, timeout=30)
            body = r.content
            self.send_response(r.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _forward

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("wire", ["chat", "completions"])
def test_a_proxy_with_basic_auth_works_from_the_url_and_a_stray_key_is_refused_up_front(
    zero: SimServer, monkeypatch: pytest.MonkeyPatch, wire: str
) -> None:
    import base64

    monkeypatch.delenv("QWEN_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # common in a user's environment, meant for another service
    handler = type("Proxy", (_BasicAuthProxy,), {"upstream": zero.url, "seen": [],
                                                 "expected": "Basic " + base64.b64encode(b"team:pw-91").decode()})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = f"http://team:pw-91@127.0.0.1:{proxy.server_address[1]}/v1"
    try:
        with pytest.raises(ValueError, match="environment variable OPENAI_API_KEY") as ei:
            BatchedChatQwen(base_url=url, model=SIM_MODEL, max_tokens=8, wire_mode=wire)
        assert KEY not in str(ei.value) and "pw-91" not in str(ei.value)
        with BatchedChatQwen(base_url=url, model=SIM_MODEL, max_tokens=8, wire_mode=wire, api_key=None) as model:
            answers = model.batch(["one", "two"])
            assert [a.content.split()[:2] for a in answers] == [["[sim]", "one"], ["[sim]", "two"]]
        assert handler.seen and set(handler.seen) == {"Basic"}  # the URL's user:password, as basic auth
    finally:
        proxy.shutdown()
        proxy.server_close()
