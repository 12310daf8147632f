"""What every benchmark shares: the figure record, percentiles, the table, the JSON file, the machine.

One shape for every figure (``figure, value, unit, baseline, ratio, goal,
command``), the same shape ``benchmarks.inference.rows`` already produces,
so ``make bench`` can put figures from very different benchmarks in one
table. Every figure carries a baseline measured in the same run, because
this machine is shared: an absolute number means little on its own, a
ratio to something measured a second earlier under the same load means
more.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation (numpy's default), of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class FigureExtra(TypedDict, total=False):
    """What a figure may carry beside the common shape."""

    by: str                     # a missed goal: by how much
    why: str                    # a missed goal: why
    runs: list[float]           # the runs a median was taken of
    baseline_runs: list[float]  # the baseline's runs, likewise
    load_average: list[float]   # the machine's 1/5/15 min load average when the measurements started


def figure(name: str, value: float, unit: str, baseline: float | None, baseline_label: str, goal: str,
           meets_goal: bool | None, command: str, *, higher_is_better: bool = False,
           **extra: Unpack[FigureExtra]) -> dict[str, Any]:
    """One row of the table. ``ratio`` is value / baseline (how many times the baseline)."""
    ratio = value / baseline if baseline is not None and baseline != 0 and not math.isnan(baseline) else None
    return {"figure": name, "value": value, "unit": unit, "baseline": baseline, "baseline_label": baseline_label,
            "ratio": ratio, "goal": goal, "meets_goal": meets_goal, "command": command,
            "higher_is_better": higher_is_better, **extra}


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    mag = abs(value)
    if mag >= 10_000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(rows: Sequence[dict[str, Any]], *, with_command: bool = True) -> str:
    """The figures as a fixed-width table (goal column says 'meets'/'MISSES' when there is a goal)."""
    header = ["figure", "value", "unit", "baseline", "ratio", "goal"] + (["command"] if with_command else [])
    body = []
    for r in rows:
        goal = r.get("goal") or ""
        if goal and r.get("meets_goal") is not None:
            goal += "  " + ("meets" if r["meets_goal"] else "MISSES")
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        cells = [r["figure"], _fmt(r["value"]), r["unit"], _fmt(r.get("baseline")), ratio, goal]
        body.append(cells + ([r.get("command", "")] if with_command else []))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    right = {1, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    by_label: dict[str, list[str]] = {}
    for r in rows:
        if r.get("baseline_label"):
            by_label.setdefault(r["baseline_label"], []).append(r["figure"])
    if by_label:
        out.append("")
        out.append("baselines (measured in the same run):")
        out += [f"  {label}  <- {'; '.join(figures)}" for label, figures in by_label.items()]
    misses = [r for r in rows if r.get("meets_goal") is False]
    if misses:
        out.append("")
        out.append("goals missed (by how much, and why):")
        out += [f"  {r['figure']}: {r.get('by') or '-'}; {r.get('why') or 'not explained'}" for r in misses]
    return "\n".join(out)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| figure | value | unit | baseline | ratio | goal | command |", "|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        goal = r.get("goal") or ""
        if goal and r.get("meets_goal") is not None:
            goal += " — " + ("meets" if r["meets_goal"] else "**misses**")
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        base = _fmt(r.get("baseline"))
        if r.get("baseline_label"):
            base += f" ({r['baseline_label']})"
        out.append(f"| {r['figure']} | {_fmt(r['value'])} | {r['unit']} | {base} | {ratio} | {goal} | "
                   f"`{r.get('command', '')}` |")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """What the figures were measured on (and how loaded it was when the run started)."""
    cpu = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=pathlib.Path(__file__).resolve().parents[1]).stdout.strip()
    return {"cpu": cpu or platform.processor() or platform.machine(), "cpus_available": len(os.sched_getaffinity(0)),
            "memory_gb": round(mem_kb / 1024 / 1024, 1), "python": platform.python_version(),
            "kernel": platform.release(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_results(rows: Sequence[dict[str, Any]], path: pathlib.Path, extra: dict[str, Any] | None = None) -> None:
    """results.json: one record per figure (figure, value, unit, baseline, ratio, command, and context)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    path.write_text(json.dumps({"machine": machine(), **(extra or {}), "figures": clean}, indent=2) + "\n")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (clock ticks -> seconds)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS = VmHWM) of one process in MiB, from /proc/<pid>/status."""
    rss = hwm = 0.0
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``with``/``finally`` stops the servers a benchmark started.

    The first SIGTERM or SIGINT raises; later ones are ignored, so a second signal (``timeout`` and a
    shell both forwarding one, an impatient Ctrl-C) cannot abort the clean-up half way and leave
    servers behind. Every clean-up step is bounded by its own timeouts.
    """
    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def start_profiler(pid: int, out: pathlib.Path, rate: int = 67) -> subprocess.Popen[bytes] | None:
    """py-spy (``pip install py-spy``; not a project dependency) sampling ``pid`` into collapsed stacks."""
    import shutil
    import sys

    spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(spy):
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                             "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def profile_summary(path: pathlib.Path, top: int = 15,
                    skip: tuple[str, ...] = ("<frozen", "asyncio/", "threading.py", "concurrent/", "runpy",
                                             "trading_operator/__main__.py", "kopf/_core/reactor/running.py")) -> str:
    """From py-spy's collapsed stacks: the top functions by inclusive share (generic frames skipped), and by self."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f for f in stack.split(";")]
        for key in set(frames):
            if not any(s in key for s in skip):
                inclusive[key] = inclusive.get(key, 0) + n
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n

    def ranked(counts: dict[str, int]) -> list[str]:
        return [f"  {100 * n / max(total, 1):5.1f}%  {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return "\n".join([f"{total} samples; inclusive:", *ranked(inclusive), "self:", *ranked(leaf)])
