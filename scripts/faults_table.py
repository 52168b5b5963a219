"""Render the faults the test suite tried as a Markdown table for the README.

    MEDTUNE_FAULT_LOG=faults.jsonl uv run pytest -q && uv run python scripts/faults_table.py

Each line of the log is one JSON object written by the `fault_log` fixture of tests/conftest.py
once a fault test has passed: {test, fault, outcome, **counts}, e.g. kills=1, trials_lost=0,
runs_doubled=0, or bad_inputs=1 with the error it gave. The latest row per (test, fault) wins,
so a log appended to by several runs is rendered once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

LOG_ENV = "MEDTUNE_FAULT_LOG"
FIXED = ("fault", "outcome")
HEADERS = {"kills": "kills survived", "trials_lost": "trials lost", "runs_doubled": "runs doubled",
           "bad_inputs": "bad inputs", "error": "error given"}


def read_rows(path: str) -> list[dict]:
    """The log's rows, the latest per (test, fault), in first-seen order."""
    rows: dict[tuple, dict] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"Line {number} of {path!r} is not JSON ({exc.msg}); "
                                 f"each line must be one object written by the fault_log fixture.") from None
            if not isinstance(row, dict) or not all(key in row for key in FIXED):
                raise ValueError(f"Line {number} of {path!r} lacks 'fault' or 'outcome'; "
                                 f"each line must be one object written by the fault_log fixture.")
            rows[(row.get("test"), row["fault"])] = row
    return list(rows.values())


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("\n", " ").replace("|", "\\|")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def render(rows: list[dict]) -> str:
    """Markdown: one row per fault, a column per count (and per text such as the error given),
    and a total row summing the counts."""
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in (*FIXED, "test")))
    # the known columns first, in HEADERS order; any other in first-seen order (sorted() is stable)
    columns = sorted(extra, key=lambda c: list(HEADERS).index(c) if c in HEADERS else len(HEADERS))
    counted = [c for c in columns if any(_is_count(r.get(c)) for r in rows)]
    texts = [c for c in columns if c not in counted]
    header = ["fault", *(HEADERS.get(c, c.replace("_", " ")) for c in counted), "outcome",
              *(HEADERS.get(c, c.replace("_", " ")) for c in texts)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["fault"], *(row.get(c, "") for c in counted), row["outcome"], *(row.get(c, "") for c in texts)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    totals = [sum(r[c] for r in rows if _is_count(r.get(c))) for c in counted]
    lines.append("| " + " | ".join([f"**total: {len(rows)} faults**", *(f"**{t}**" for t in totals),
                                    "", *([""] * len(texts))]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Print the fault tests' JSONL log as a Markdown table.")
    p.add_argument("log", nargs="?", default=os.environ.get(LOG_ENV),
                   help=f"the JSONL log (default: ${LOG_ENV})")
    args = p.parse_args(argv)
    if not args.log:
        print(f"error: no log given; pass its path or set {LOG_ENV} as for the test run.", file=sys.stderr)
        return 2
    if not os.path.isfile(args.log):
        print(f"error: the fault log {args.log!r} does not exist; run the tests with {LOG_ENV}={args.log} first.",
              file=sys.stderr)
        return 2
    try:
        rows = read_rows(args.log)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
