"""What the doctor sends and how it reads the answers: probe bodies, the fixes it names, small
response helpers, and a raw-socket look at a port that does not answer in HTTP.

Kept apart from the checks so that both the per-server checks and the comparison of replicas use
the same probe conversation (a template difference between replicas shows on exactly these turns).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from typing import Any

import httpx

from langchain_qwen_fast._errors import cause_chain, server_message
from langchain_qwen_fast._served import listed_models

FIX_TOOLS = "vllm serve ... --enable-auto-tool-choice --tool-call-parser hermes"
FIX_AUTO_TOOLS = "vllm serve ... --enable-auto-tool-choice"
FIX_REASONING = "vllm serve ... --reasoning-parser qwen3"
FIX_TEMPLATE = ("vllm serve ... --chat-template QWEN3.jinja "
                "(a Qwen3 template, which has the enable_thinking switch)")
FIX_WIRE = 'BatchedChatQwen(..., wire_mode="chat")'
FIX_LISTS = ("serve with vLLM's Python front end (unset VLLM_USE_RUST_FRONTEND) for completions lists, or accept "
             'chat requests (BatchedChatQwen(..., wire_mode="chat") says so up front)')
FIX_STRUCTURED = ("vllm serve ... --structured-outputs-config '{\"backend\":\"xgrammar\"}' "
                  "(or upgrade vLLM)")
FIX_PRIORITY = ("start vLLM with --scheduling-policy priority to have the server honour them "
                "(vLLM: a lower value is handled earlier)")

HELLO = [{"role": "user", "content": "Say hello."}]
#: A system turn, an earlier answer whose reasoning the template must drop, and non-ASCII text:
#: where a hand-written ChatML most often drifts from the model's template.
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "<think>\nhidden\n</think>\n\nHello!"},
    {"role": "user", "content": "And again, in 中文?"},
]
FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": False}
TOOL = {"type": "function", "function": {"name": "doctor_ping", "parameters": FLAG,
                                         "description": "Confirm that the check worked."}}
NAMED = {"type": "function", "function": {"name": "doctor_ping"}}
TOOL_ERRORS = ("tool-call-parser", "tool_call_parser", "auto-tool-choice", "auto tool choice")


# -- reading answers ----------------------------------------------------------------------------
def as_json(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def model_ids(r: httpx.Response) -> list[str] | None:
    return listed_models(as_json(r)) if r.status_code == 200 else None


def message(r: httpx.Response) -> dict[str, Any] | None:
    choices = as_json(r).get("choices") if r.status_code == 200 else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    msg = choices[0].get("message")
    return msg if isinstance(msg, dict) else None


def finish(r: httpx.Response) -> str | None:
    choices = as_json(r).get("choices")
    ok = isinstance(choices, list) and choices and isinstance(choices[0], dict)
    return choices[0].get("finish_reason") if ok else None  # type: ignore[index]


def reasoning(msg: dict[str, Any]) -> str | None:
    return msg.get("reasoning") or msg.get("reasoning_content")


def prompt_tokens(r: httpx.Response) -> int | None:
    usage = as_json(r).get("usage") if r.status_code == 200 else None
    return usage.get("prompt_tokens") if isinstance(usage, dict) else None


def said(r: httpx.Response) -> str:
    """``200``, or the status and the server's own words (vLLM's error message)."""
    return "200" if r.status_code == 200 else f"{r.status_code} {server_message(r.content)[:140]!r}"


def reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return "connection refused" if "refused" in text.lower() else text


def is_tls_failure(e: BaseException) -> bool:
    """httpx wraps the ``ssl.SSLError`` of a failed handshake twice (httpcore, then httpx)."""
    return any(isinstance(x, ssl.SSLError) for x in cause_chain(e)) or "[SSL" in str(e)


# -- a port that does not speak HTTP --------------------------------------------------------------
def first_bytes(host: str, port: int, timeout: float) -> bytes | None:
    """Connect, send one HTTP request and return the first bytes back (None: no connection).

    The request goes out at once instead of waiting for a greeting: servers that greet first
    (SSH, SMTP, FTP) have sent theirs by then, and the others answer the request in their protocol.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(min(timeout, 2.0))
            with contextlib.suppress(OSError):  # one that hangs up at once may have greeted
                s.sendall(b"GET /health HTTP/1.1\r\nHost: " + host.encode("idna") +
                          b"\r\nConnection: close\r\n\r\n")
            chunks = b""
            while len(chunks) < 64:
                try:
                    got = s.recv(64)
                except (TimeoutError, OSError):
                    break
                if not got:
                    break
                chunks += got
            return chunks[:64]
    except OSError:
        return None


def what_speaks(data: bytes) -> tuple[str, str] | None:
    """``(what it is, protocol)`` for the first bytes from a port, or None when they are HTTP.

    ``protocol`` is ``"tls"`` for a TLS server (the fix is an https URL) and ``"other"`` otherwise.
    """
    if data.startswith(b"HTTP/"):
        return None
    if not data:
        return "it closed the connection without answering", "other"
    if len(data) > 1 and data[0] in (0x15, 0x16) and data[1] == 0x03:
        return "it answered with a TLS record: an https server", "tls"
    head = data.split(b"\r\n")[0].split(b"\n")[0][:40]
    shown = head.decode("latin-1")
    shown = "".join(ch if ch.isprintable() else "?" for ch in shown)
    if data.startswith(b"SSH-"):
        return f"it sent {shown!r}: an SSH server", "other"
    return f"it sent {shown!r}", "other"
