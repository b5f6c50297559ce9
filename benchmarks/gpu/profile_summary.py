"""Summarise py-spy ``--format raw`` profiles: samples per thread, and where each thread spends them.

    python benchmarks/gpu/profile_summary.py PROFILE.txt [PROFILE.txt ...] [--top 12] [--md OUT.md]

Each line of a raw profile is ``frame;frame;...;frame COUNT`` with the thread as the first frame
(``--threads``). Imports are reported apart, since a profiled run pays them once. For every
thread the table gives its samples and the top frames by self time and by inclusive time, as the
package (``module/file.py:function``) so that our code, LangChain, aiohttp and the event loop can be
told apart.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _label(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "dist-packages/", "/csite/", "/site/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{m.group('fn')}"


def _thread(first: str) -> str:
    name = first.split(":", 1)[1].strip() if ":" in first else first
    return re.sub(r"\s+\d+$", "", name) or "unnamed"


def summarise(path: str, top: int) -> list[str]:
    self_t: dict[str, Counter[str]] = defaultdict(Counter)
    incl_t: dict[str, Counter[str]] = defaultdict(Counter)
    per_thread: Counter[str] = Counter()
    imports = total = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or " " not in line:
                continue
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            if any("importlib._bootstrap" in fr for fr in frames):
                imports += n
                continue
            th = _thread(frames[0]) if frames[0].startswith("thread") or frames[0].startswith("process") else "all"
            labels = [_label(fr) for fr in frames[1:]] or ["(no Python frame: native code or waiting)"]
            per_thread[th] += n
            self_t[th][labels[-1]] += n
            for lab in set(labels):
                incl_t[th][lab] += n
    out = [f"### {path}", "", f"samples: {total} (imports: {imports})", ""]
    for th, n in per_thread.most_common():
        out += [f"**{th}**: {n} samples", "", "| self | share | frame |", "|---|---|---|"]
        out += [f"| {c} | {c / n:.0%} | `{lab}` |" for lab, c in self_t[th].most_common(top)]
        ours = sorted(
            ((c, lab) for lab, c in incl_t[th].items() if "langchain_qwen_fast/" in lab and "/bench/" not in lab),
            reverse=True,
        )[:top]
        if ours:
            out += ["", "| inclusive | share | frame (this package) |", "|---|---|---|"]
            out += [f"| {c} | {c / n:.0%} | `{lab}` |" for c, lab in ours]
        out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profiles", nargs="+")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--md")
    a = ap.parse_args()
    lines: list[str] = []
    for p in a.profiles:
        lines += summarise(p, a.top)
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
