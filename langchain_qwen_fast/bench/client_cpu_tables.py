"""The client-cpu plan's markdown: per scenario and tree, CPU per request and its ratios within rounds.

Ratios are taken round by round and then summarised (median, min-max), never as a ratio of medians: the
machine's load drifts during a run (another process, thermal state), and two rows of the same round ran
minutes apart at most, in an order that alternates between rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from langchain_qwen_fast.bench.client_cpu_scenarios import SCENARIOS


def median_range(vals: Sequence[float], digits: int = 1) -> str:
    """``median (min-max)``, or the single value, or ``-`` when there is none."""
    if not vals:
        return "-"
    f = f"{{:.{digits}f}}"
    m = f.format(statistics.median(vals))
    return m if len(vals) == 1 else f"{m} ({f.format(min(vals))}-{f.format(max(vals))})"


def _med(rows: Sequence[dict[str, Any]], key: str, digits: int = 1) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return f"{statistics.median(vals):.{digits}f}" if vals else "-"


def problems(row: dict[str, Any]) -> int:
    """Request errors plus answers of the wrong kind plus a wrong token count: what makes a row suspect."""
    return int(row.get("errors") or 0) + int(row.get("wrong_answers") or 0) + (row.get("tokens_ok") is False)


def tables(rows: Sequence[dict[str, Any]], trees: Sequence[str]) -> str:
    """The summary table (measured rows only; profiled rows ran under py-spy) and a list of suspect rows."""
    meas = [r for r in rows if r.get("kind") == "measure"]
    cpu = {(r["scenario"], r["tree"], r["round"]): r["cpu_us_per_req"] for r in meas
           if r.get("cpu_us_per_req") and not problems(r)}
    raw = {rnd: v for (s, _, rnd), v in cpu.items() if s == "raw_lists"}
    first = trees[0]
    present = {r["scenario"] for r in meas}
    order = [s for s in SCENARIOS if s in present] + sorted(present - set(SCENARIOS))
    rounds = sorted({r["round"] for r in meas})
    head = meas[0] if meas else {}
    several = len(trees) > 1  # the after/before column only when there is a before
    oa_n = next((f" (openai_batch: n={r['n']})" for r in meas if r["scenario"] == "openai_batch"), "")
    out = [
        f"## Client CPU per request: {len(rounds)} round(s), n={head.get('n', '?')}{oa_n}, "
        f"max_tokens={head.get('max_tokens', '?')}, "
        f"{head.get('servers', '?')} zero-latency simulator(s)",
        "",
        "µs of client CPU per request (whole process, `time.process_time()`), medians over rounds with the "
        "range; caller = the calling (main) thread, loop = the `qwen-fast-loop` thread, other = every other "
        "thread (from /proc clock ticks, so ±1 tick: a few tenths of a µs at n=20000). Ratios are per round: "
        "to that round's raw aiohttp lists" + (f", and to the same scenario under `{first}` (after/before)."
                                               if several else "."),
        "",
        "| scenario | tree | rounds | CPU µs/req | caller µs | loop µs | other µs | req/s | x raw lists "
        + (f"| x {first} " if several else "") + "| problems |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if several else "") + "---|",
    ]
    for s in order:
        trees_here = [t for t in trees if any(r["scenario"] == s and r["tree"] == t for r in meas)]
        for t in trees_here:
            rs = [r for r in meas if r["scenario"] == s and r["tree"] == t]
            mine = {r["round"]: cpu[(s, t, r["round"])] for r in rs if (s, t, r["round"]) in cpu}
            x_raw = [v / raw[rnd] for rnd, v in mine.items() if rnd in raw]
            if t == first:
                x_first = "1 (ref)" if len(trees_here) > 1 else "-"
            else:
                x_first = median_range([v / cpu[(s, first, rnd)] for rnd, v in mine.items()
                                        if (s, first, rnd) in cpu], 2)
            out.append(
                f"| {s} | {t} | {len(rs)} | {median_range(list(mine.values()))} | {_med(rs, 'caller_us_per_req')} "
                f"| {_med(rs, 'loop_us_per_req')} | {_med(rs, 'other_us_per_req')} | {_med(rs, 'req_s', 0)} "
                f"| {median_range(x_raw, 2)} |" + (f" {x_first} |" if several else "")
                + f" {sum(problems(r) for r in rs)} |"
            )
    bad = [r for r in meas if problems(r)]
    if bad:
        out += ["", "Rows with problems (left out of the CPU medians and ratios):", ""]
        out += [f"- round {r['round']} {r['tree']} {r['scenario']}: errors {r.get('error_types')}, wrong answers "
                f"{r.get('wrong_answers')}, tokens {r.get('output_tokens')} of {r.get('tokens_expected')}"
                + (f", child output: {r['child_output_tail'][-300:]!r}" if r.get("child_output_tail") else "")
                for r in bad]
    versions = sorted({(r["tree"], r.get("package_version"), r.get("package_file")) for r in meas
                       if r.get("package_file")}, key=lambda x: trees.index(x[0]) if x[0] in trees else 99)
    out += ["", *(f"- tree `{t}`: langchain_qwen_fast {v} from `{f}`" for t, v, f in versions)]
    return "\n".join(out) + "\n"
