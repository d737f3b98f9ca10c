#!/usr/bin/env python3
"""Puts the results of scripts/chaos.sh into docs/reliability.md, between markers.

usage: chaos_report.py OUT_DIR docs/reliability.md RUNS FAILED
"""
import datetime
import glob
import json
import os
import platform
import sys

from side_by_side_report import put_section

START = "<!-- chaos:start -->"
END = "<!-- chaos:end -->"
# Targets of issue 11 for the longest wait per fault. A Redis restart should cost nothing:
# its waits should stay at the no-fault floor.
TARGETS = {
    "Stall": "≤ 3.0",
    "StoreCut": "≤ 3.0",
    "Kill": "≤ 3.0",
    "Drain": "≤ 0.5",
    "RedisRestart": "as NoFault",
    "RedisCut": "≤ 3.0",
}


def main():
    out_dir, doc, runs, failed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    reports = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out_dir, "run-*.json")))]
    seeds = sorted(r["seed"] for r in reports)
    worst, waits = {}, {}
    for r in reports:
        for fault, secs in r["longest_wait_secs"].items():
            worst[fault] = max(worst.get(fault, 0.0), secs)
            waits.setdefault(fault, []).append(secs)
    lines = [
        START,
        "## Chaos runs",
        "",
        f"`RUNS={runs} scripts/chaos.sh` on {datetime.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} cores: {runs} runs of `tests/chaos.rs` (3 nodes, 2 gateways, 8 clients "
        f"incrementing one counter room, each at most 50 times a second, default liveness timing), {failed} failed. Seeds: "
        f"{', '.join(map(str, seeds)) or '—'}.",
        "",
        "| fault | longest wait for a reply, worst run (s) | median run (s) | target (s) |",
        "| --- | --- | --- | --- |",
    ]
    for fault in sorted(worst):
        w = sorted(waits[fault])
        median = w[len(w) // 2]
        target = TARGETS.get(fault, "—")
        lines.append(f"| {fault} | {worst[fault]:.2f} | {median:.2f} | {target} |")
    twice = sum(r["applied_twice"] for r in reports)
    closes = sum(r["closes"] for r in reports)
    replies = sum(r["replies"] for r in reports)
    lines += [
        "",
        f"Over all runs: {replies:,} replies, {twice} increments applied twice, {closes} client "
        "sockets closed. No value was handed out twice in a passing run.",
        END,
    ]
    put_section(doc, START, END, "\n".join(lines) + "\n", new_doc="# Reliability\n")


if __name__ == "__main__":
    main()
