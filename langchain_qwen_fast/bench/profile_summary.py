"""Summarise a py-spy collapsed-stack file per thread: where each thread spends its samples.

Why not a flame graph: the client-cpu plan asks one question per scenario, which functions make the
caller thread and the package's loop thread cost what they cost, and a plain list of the top functions
by self and by inclusive samples answers it in a markdown file next to the numbers, diffable between runs.

The input is what ``py-spy record --format raw --threads`` writes: one line per distinct stack,
``thread (TID): NAME;frame;frame;... COUNT``, outermost frame first, each frame ``function (file:line)``
(with ``--function`` the line is the function's first line, so a function is one entry rather than one
per line). ``--subprocesses`` adds a ``process PID:"cmd"`` frame in front; it is skipped. Without
``--idle`` py-spy leaves out threads it sees waiting, so the samples approximate CPU time. Its test for waiting
misses a thread-pool worker parked in ``queue.get`` (a C call under the ``_worker`` frame): a composition run on
the package's loop holds up to 256 such threads, which came to 80% of one profile's samples. Samples whose
innermost frame is such a wait (``WAIT_FRAMES``) are counted apart, as waiting, not as work.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\)(?::\s*(?P<name>.*))?$")
_STDLIB = re.compile(r"/lib/python3(?:\.\d+)?/(.+)$")
NO_FRAME = "(no Python frame)"
#: Innermost frames (function, shortened file) that are a thread waiting for work, whatever the line.
WAIT_FRAMES = frozenset({("_worker", "concurrent/futures/thread.py")})


def short_path(path: str) -> str:
    """The part of a file path worth reading: from ``langchain_qwen_fast/`` on, after ``site-packages/``, or
    after the standard library's ``lib/pythonX.Y/``; anything else unchanged."""
    i = path.rfind("langchain_qwen_fast/")
    if i >= 0:
        return path[i:]
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    m = _STDLIB.search(path)
    return m.group(1) if m else path


def frame_label(frame: str) -> str:
    """``function (file:line)`` with the file shortened; a frame of another shape is kept as it is."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    line = f":{m.group('line')}" if m.group("line") else ""
    return f"{m.group('func')} ({short_path(m.group('file'))}{line})"


@dataclass
class ThreadProfile:
    """One thread's samples: total, by the innermost frame (self) and by every frame on the stack (inclusive)."""

    name: str
    samples: int = 0
    waiting: int = 0  # samples parked in a WAIT_FRAMES frame, left out of the others
    self_: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)


def parse_collapsed(lines: Iterable[str]) -> dict[str, ThreadProfile]:
    """Per thread name (threads of one name are merged), from collapsed-stack lines. Lines without a thread
    frame count under ``(all)``; lines that do not end in a count are skipped."""
    threads: dict[str, ThreadProfile] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        name = "(all)"
        if frames:
            m = _THREAD.match(frames[0])
            if m:
                name = (m.group("name") or "").strip() or f"thread {m.group('tid')}"
                frames = frames[1:]
        labels = [frame_label(f) for f in frames] or [NO_FRAME]
        t = threads.setdefault(name, ThreadProfile(name))
        n = int(count)
        if _is_wait(labels[-1]):
            t.waiting += n
            continue
        t.samples += n
        t.self_[labels[-1]] += n
        for label in set(labels):  # a recursive function counts once per sample
            t.inclusive[label] += n
    return threads


def _is_wait(label: str) -> bool:
    m = _FRAME.match(label)
    return m is not None and (m.group("func"), m.group("file")) in WAIT_FRAMES


def _top(counter: Counter[str], total: int, k: int) -> list[str]:
    return [f"{100 * v / total:5.1f}%  {label}" for label, v in counter.most_common(k)]


def summarize(text: str, *, title: str = "profile", top: int = 25, min_share: float = 0.02) -> str:
    """Markdown: every thread's share of all samples, then for each thread with at least ``min_share`` of them
    the ``top`` functions by self samples and by inclusive samples, as percentages of that thread's samples."""
    parsed = parse_collapsed(text.splitlines()).values()
    threads = sorted((t for t in parsed if t.samples), key=lambda t: -t.samples)
    parked = [t for t in parsed if t.waiting and not t.samples]
    total = sum(t.samples for t in threads)
    out = [f"# {title}", ""]
    if not total:
        return "\n".join([*out, "No samples in the profile.", ""])
    out += [f"{total} samples in {len(threads)} thread(s):", ""]
    waiting = sum(t.waiting for t in parsed)
    if waiting:
        out += [f"({waiting} more samples of thread-pool workers waiting for work are left out"
                f"{f'; {len(parked)} thread(s) did nothing else' if parked else ''}.)", ""]
    out += [f"- {t.name}: {t.samples} ({100 * t.samples / total:.1f}%)" for t in threads]
    for t in threads:
        if t.samples < min_share * total:
            continue
        out += ["", f"## {t.name}: {t.samples} samples ({100 * t.samples / total:.1f}% of all)", "",
                f"Top {top} by self samples:", "", "```", *_top(t.self_, t.samples, top), "```", "",
                f"Top {top} by inclusive samples:", "", "```", *_top(t.inclusive, t.samples, top), "```"]
    return "\n".join([*out, ""])
