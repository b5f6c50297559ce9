"""Which model name calls carry, and what to say when a server does not serve it: rules and messages.

One default name everywhere: ``Qwen/Qwen3-0.6B``, what ``vllm serve Qwen/Qwen3-0.6B`` serves. Servers
are often started under another name (a widely copied deployment guide serves ``Qwen-0.6B``), so a
model nobody named takes the one name its servers serve, when every replica serves exactly that one;
a name the user gave (``model=`` or ``QWEN_MODEL``) is never swapped. The default travels as
:class:`DefaultName`, a ``str`` that remembers nobody chose it, so every reader of the field (the
client, the doctor, the queue worker) can tell a default from a choice without a second field.

A leaf (standard library only): the client's lookup (``_upstream/models.py``), the doctor and the
queue worker decide and explain with the same words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
ENV = "QWEN_MODEL"


class DefaultName(str):
    """The package's default model name, as the field holds it when nobody named a model."""

    __slots__ = ()


def model_from_env() -> str:
    """The ``model`` field's default: ``QWEN_MODEL`` when set, else :data:`DEFAULT_MODEL` marked as unchosen."""
    return os.environ.get(ENV) or DefaultName(DEFAULT_MODEL)


def is_named(model: str) -> bool:
    return not isinstance(model, DefaultName)


def listed_models(body: object) -> list[str] | None:
    """The model ids in a decoded ``GET /models`` body (OpenAI's ``{"data": [{"id": ...}, ...]}``), or None
    when it has no model list; entries without an id are no model. The client, the doctor and the queue
    worker read a listing with this one rule."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, Mapping) and m.get("id")]


@dataclass(frozen=True)
class Choice:
    """The name calls use for a model nobody named, and why; ``name`` None: none can be chosen."""

    name: str | None
    how: str  # "discovered", "default" or "none"
    detail: str


#: What each replica listed on ``GET /v1/models`` (None: it did not list any), by URL without credentials.
Served = Mapping[str, Sequence[str] | None]


def choose(default: str, served: Served) -> Choice:
    """The rule for a model nobody named: the one model every replica that lists its models serves, else
    the default where each of them serves it, else no choice (an error naming what each one serves).
    Replicas that listed nothing (down, or a router without ``/v1/models``) do not vote."""
    listed = {url: list(ids) for url, ids in served.items() if ids is not None}
    if not listed:
        return Choice(default, "default", f"no replica listed its models; calls use the default {default}")
    kinds = {tuple(sorted(set(ids))) for ids in listed.values()}
    if len(kinds) == 1 and len(only := next(iter(kinds))) == 1:
        if only[0] == default:
            return Choice(default, "default", f"{_who(listed)} {default}, the default")
        return Choice(only[0], "discovered",
                      f"no model named ({ENV} unset, no model=) and {_who(listed)} only {only[0]} (GET /v1/models)")
    if all(default in ids for ids in listed.values()):
        return Choice(default, "default", f"{_who(listed)} the default {default}")
    return Choice(None, "none", cannot_choose(default, served))


def _who(listed: Mapping[str, Sequence[str]]) -> str:
    return "the server serves" if len(listed) == 1 else f"all {len(listed)} replicas serve"


def describe(served: Served, *, by_url: bool = False) -> str:
    """``the server serves a, b``, or with several replicas (or ``by_url``) ``http://x/v1 serves a; ...``."""
    def names(ids: Sequence[str] | None) -> str:
        return "lists no models" if ids is None else ("serves " + ", ".join(ids) if ids else "serves no model")

    if len(served) == 1 and not by_url:
        return "the server " + names(next(iter(served.values())))
    return "; ".join(f"{url} {names(ids)}" for url, ids in served.items())


def fix(name: str) -> str:
    return f'BatchedChatQwen(model="{name}") or {ENV}={name}'


def _common(served: Served) -> list[str]:
    """Names every listing replica serves, in the first replica's order."""
    listed = [list(ids) for ids in served.values() if ids is not None]
    return [n for n in listed[0] if all(n in ids for ids in listed[1:])] if listed else []


def not_served(model: str, served: Served) -> str:
    """What to append to a 404 whose message names ``model``: what is served, and the change to make."""
    common = _common(served)
    if common:
        return f"{describe(served)}: use {fix(common[0])}"
    return (f"{describe(served)}: no name is served by every replica; start every replica with the same "
            f"--served-model-name, or name one with {fix('NAME')}")


def cannot_choose(default: str, served: Served) -> str:
    common = _common(served)
    hint = f"name one with {fix(common[0])}" if common else (
        f"start every replica with the same --served-model-name, or name one with {fix('NAME')}")
    return (f"no model was named ({ENV} unset, no model=) and the default {default} is not served by every "
            f"replica, nor is one model the only one served: {describe(served)}; {hint}")


def mentions(message: str, model: str) -> bool:
    """Whether a 404's message names the model (vLLM: "The model `X` does not exist.")."""
    return bool(model) and model in message
