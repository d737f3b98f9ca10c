#!/usr/bin/env python3
"""Renders the JSON reports of scripts/bench-side-by-side.sh as Markdown tables and puts
them into docs/benchmarks.md between the side-by-side markers (appending the section the
first time).

usage: side_by_side_report.py OUT_DIR "SCENARIOS" docs/benchmarks.md

BENCH_SYSTEMS ("key=label|key=label|…", the reference last), BENCH_SECTION (the marker
name) and BENCH_INTRO (the section's title and first paragraph, separated by a newline)
render another comparison (scripts/bench-js.sh) into its own section.
"""
import datetime
import glob
import json
import os
import platform
import statistics
import sys

SYSTEMS = [
    ("dev", "conclave dev"),
    ("cluster", "Conclave 3-node cluster"),
    ("partykit", "PartyKit dev"),
    ("uws", "uWebSockets.js"),
]
if os.environ.get("BENCH_SYSTEMS"):
    SYSTEMS = [tuple(s.split("=", 1)) for s in os.environ["BENCH_SYSTEMS"].split("|")]
# (key, label, lower_is_better)
METRICS = {
    "connect-storm": [
        ("connects_per_sec", "connects/s", False),
        ("handshake_p50_ms", "handshake p50 (ms)", True),
        ("handshake_p99_ms", "handshake p99 (ms)", True),
        ("failures", "failures", True),
    ],
    "rooms-1000": [
        ("server_rss_per_connection_bytes", "server RSS per room, one connection each (bytes)", True),
        ("rss_per_room_less_connection", "… less the same 1,000 connections in 10 rooms (bytes)", True),
        ("connections_open_after_hold", "connections open after 10 s", False),
        ("handshake_p99_ms", "handshake p99 (ms)", True),
    ],
    "rooms-10": [
        ("server_rss_per_connection_bytes", "server RSS per connection (bytes)", True),
        ("connections_open_after_hold", "connections open after 10 s", False),
    ],
    "idle-hold-10k": [
        ("server_rss_per_connection_bytes", "server RSS per connection (bytes)", True),
        ("connections_open_after_hold", "connections open after 10 s", False),
        ("handshake_p99_ms", "handshake p99 (ms)", True),
    ],
}
MESSAGING = [
    ("connect_failures", "members that could not connect", True),
    ("deliveries_per_sec", "deliveries/s", False),
    ("delivered_ratio", "delivered ÷ expected", False),
    ("latency_p50_ms", "latency p50 (ms)", True),
    ("latency_p90_ms", "latency p90 (ms)", True),
    ("latency_p99_ms", "latency p99 (ms)", True),
    ("latency_p999_ms", "latency p99.9 (ms)", True),
    ("latency_max_ms", "latency max (ms)", True),
    ("server_cpu_us_per_delivery", "server CPU per delivery (µs)", True),
]
TITLES = {
    "connect-storm": "connect-storm: 5,000 connections, 200 handshakes in flight",
    "idle-hold-10k": "idle-hold: 10,000 idle connections held 10 s",
    "rooms-1000": "rooms: 1,000 active rooms, one idle connection each, held 10 s",
    "rooms-10": "rooms: the same 1,000 idle connections in 10 rooms, held 10 s",
    "hot-100": "hot-room 1×100: one publisher at 100 msg/s, 64 B",
    "hot-1000": "hot-room 1×1000: one publisher at 100 msg/s, 64 B",
    "many-rooms-200x10": "many-rooms 200×10: one publisher per room at 20 msg/s, 64 B (issue 15's own scenario)",
    "many-rooms-1000x10": "many-rooms 1000×10: one publisher per room at 2 msg/s, 64 B",
    "all-to-all-50x10": "all-to-all 50×10: every member of 50 rooms of 10 publishes at 20 msg/s, 64 B",
}
COMMANDS = {
    "connect-storm": "conclave loadtest connect-storm --url URL --connections 5000 --concurrency 200",
    "idle-hold-10k": "conclave loadtest idle-hold --url URL --connections 10000 --hold-secs 10 --server-pid PIDS",
    "rooms-1000": "conclave loadtest idle-hold --url URL --connections 1000 --rooms 1000 --hold-secs 10 --server-pid PIDS",
    "rooms-10": "conclave loadtest idle-hold --url URL --connections 1000 --rooms 10 --hold-secs 10 --server-pid PIDS",
    "hot-100": "conclave loadtest hot-room --url URL --members 100 --rate 100 --secs 15 --server-pid PIDS",
    "hot-1000": "conclave loadtest hot-room --url URL --members 1000 --rate 100 --secs 15 --server-pid PIDS",
    "many-rooms-200x10": "conclave loadtest many-rooms --url URL --rooms 200 --members 10 --rate 20 --secs 15 --server-pid PIDS",
    "many-rooms-1000x10": "conclave loadtest many-rooms --url URL --rooms 1000 --members 10 --rate 2 --secs 15 --server-pid PIDS",
    "all-to-all-50x10": "conclave loadtest all-to-all --url URL --rooms 50 --members 10 --rate 20 --secs 15 --server-pid PIDS",
}
SECTION = os.environ.get("BENCH_SECTION", "side-by-side")
START = f"<!-- {SECTION}:start -->"
END = f"<!-- {SECTION}:end -->"


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def value(report, key):
    if report is None:
        return None
    if key == "rss_per_room_less_connection":
        return report.get(key)
    # Memory per connection means nothing once the connections are gone.
    if key == "server_rss_per_connection_bytes" and not report.get("connections_open_after_hold"):
        return None
    return report.get(key)


def load(out_dir, system, scenario):
    """The system's report for the scenario: with several rounds (`SYSTEM-SCENARIO.rN.json`),
    each number is the median over the rounds that have it."""
    rounds = []
    for path in sorted(glob.glob(os.path.join(out_dir, f"{system}-{scenario}.r*.json"))):
        try:
            with open(path) as f:
                rounds.append(json.load(f))
        except (OSError, ValueError):
            pass
    if len(rounds) <= 1:
        return rounds[0] if rounds else None
    merged = dict(rounds[0])
    for key in merged:
        nums = [r[key] for r in rounds
                if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if nums:
            merged[key] = statistics.median(nums)
    return merged


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def main():
    out_dir, scenarios, doc = sys.argv[1], sys.argv[2].split(), sys.argv[3]
    def cluster_workers():
        n = os.environ.get("CLUSTER_WORKERS", "")
        if not n:
            return "each process with tokio's default of one runtime worker per CPU"
        return f"{n} runtime worker{'s' if n != '1' else ''} per process, as the four share the machine"

    rounds = int(os.environ.get("ROUNDS", "1") or 1)
    run = "One run" if rounds == 1 else (
        f"One run ({rounds} rounds, the systems taking turns in each; every figure is the "
        "median of its rounds)")
    intro = os.environ.get("BENCH_INTRO")
    if intro:
        title, text = intro.split("\n", 1)
        head = [f"## {title}", "", f"{run} of `{os.environ.get('BENCH_SCRIPT', 'scripts/bench-side-by-side.sh')}` on "
                f"{datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores. " + text]
    else:
        head = [
            "## Side by side: Conclave, PartyKit and uWebSockets.js",
            "",
            f"{run} of `scripts/bench-side-by-side.sh` on {datetime.date.today().isoformat()}, "
            f"{platform.machine()}, {os.cpu_count()} cores; load generator, servers and PartyKit on "
            "the same machine over loopback. Servers: `conclave dev` (redb), a static 3-node "
            "Conclave cluster (one gateway, three nodes sharing one PostgreSQL, gRPC relay; "
            f"{cluster_workers()}), `partykit dev` "
            "(npm partykit 0.0.115, workerd, offline) with a relay party, and the fastest peer, "
            "uWebSockets.js (npm @trufflesuite/uws-js-unofficial 20.30.0, `scripts/uws-relay`: "
            "pub/sub per room, no storage). A fresh server per "
            "scenario. Server CPU and RSS sum every process of the system (the cluster's four; "
            "PartyKit's node and workerd). Ratios are each system ÷ uWebSockets.js: above 1 is better for "
            "rates, below 1 is better for latency, CPU and memory. Members that could not "
            "connect are left out of the expected deliveries.",
        ]
    lines = [START] + head + [""]
    ref_key, ref_label = SYSTEMS[-1]
    others = SYSTEMS[:-1]
    for sc in scenarios:
        reports = {key: load(out_dir, key, sc) for key, _ in SYSTEMS}
        if sc == "rooms-1000":
            # A room's own memory: its growth less that of the same connections in 10 rooms.
            for key, _ in SYSTEMS:
                few = load(out_dir, key, "rooms-10")
                many = reports[key]
                if few and many and few.get("server_rss_per_connection_bytes") and many.get("server_rss_per_connection_bytes"):
                    many["rss_per_room_less_connection"] = (
                        many["server_rss_per_connection_bytes"] - few["server_rss_per_connection_bytes"]) * 1000 / 990
        lines += [f"### {TITLES.get(sc, sc)}", "", f"`{COMMANDS.get(sc, sc)}`", ""]
        ref = ref_label.split(",")[0]
        lines.append("| | " + " | ".join(label for _, label in SYSTEMS) + " | "
                     + " | ".join(f"{k} ÷ {ref}" for k, _ in others) + " |")
        lines.append("| --- " * (len(SYSTEMS) + len(others) + 1) + "|")
        for key, label, _lower in METRICS.get(sc, MESSAGING):
            vals = [value(reports[s], key) for s, _ in SYSTEMS]
            lines.append(
                f"| {label} | " + " | ".join(fmt(v) for v in vals) + " | "
                + " | ".join(ratio(v, vals[-1]) for v in vals[:-1]) + " |"
            )
        missing = [label for s, label in SYSTEMS if reports[s] is None]
        if missing:
            lines += ["", "No report (the run failed): " + ", ".join(missing) + "."]
        lines.append("")
    lines.append(END)
    put_section(doc, START, END, "\n".join(lines) + "\n")


def put_section(doc, start, end, block, new_doc=""):
    """Replaces the text between the markers `start` and `end` (the block includes them)
    in the Markdown file `doc`, or appends the block; `new_doc` starts a missing file."""
    text = open(doc).read() if os.path.exists(doc) else new_doc
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(doc, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
