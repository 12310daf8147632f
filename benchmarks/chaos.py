"""``make chaos``: the fault drills of ``tests/chaos`` on the local platform, with their figures.

Not part of ``make test`` (minutes of faults on a shared machine); every defect they found has a
fast test there. Each drill is bounded in time; the whole run is bounded by ``--max-minutes``.

    make chaos                                  # a random seed
    make chaos CHAOS_ARGS="--seed 7"            # the same fault timings again
    .venv/bin/python -m benchmarks.chaos --seed 7 -k leader

Figures: one JSON object per drill in ``.dev/chaos/figures-<seed>.jsonl`` and a Markdown table in
``.dev/chaos/figures-<seed>.md`` (the one ``docs/reliability.md`` quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = ("intents", "sent", "refused", "lost", "duplicated", "unresolved", "journal_vs_exchange_mismatches",
           "fail_closed_violations", "executor_lost_halts", "non_leader_writes")


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| drill | " + " | ".join(COLUMNS) + " | other figures |",
             "|---|" + "---|" * len(COLUMNS) + "---|"]
    for row in rows:
        other = {k: v for k, v in row.items() if k not in (*COLUMNS, "drill", "seed", "examples")}
        lines.append(f"| {row['drill']} | " + " | ".join(str(row.get(c, "")) for c in COLUMNS)
                     + " | " + ", ".join(f"{k}={v}" for k, v in other.items()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="fault timings (default: random)")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs per kill drill")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / ".dev" / "chaos")
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("-k", default=None, help="only drills matching this pytest expression")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = args.out / f"figures-{seed}.jsonl"
    figures.unlink(missing_ok=True)
    env = dict(os.environ, TRADING_CHAOS="1", TRADING_CHAOS_SEED=str(seed), TRADING_CHAOS_OUT=str(figures),
               TRADING_CHAOS_KILLS=str(args.kills))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "tests/chaos",
           *(["-k", args.k] if args.k else [])]
    print(f"chaos: seed {seed}; {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    try:
        code = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.max_minutes * 60).returncode
    except subprocess.TimeoutExpired:
        print(f"chaos: over {args.max_minutes} minutes; stopped", flush=True)
        code = 124
    rows = [json.loads(line) for line in figures.read_text().splitlines()] if figures.exists() else []
    text = (f"Seed {seed}, {len(rows)} drills, {time.monotonic() - started:.0f}s, "
            f"pytest exit {code}.\n\n{table(rows)}\n")
    (args.out / f"figures-{seed}.md").write_text(text)
    print("\n" + text)
    return code


if __name__ == "__main__":
    sys.exit(main())
