#!/usr/bin/env python3
"""Turns the JSON lines written by run.sh into the markdown of benches/RESULTS.md.

Usage: report.py results.jsonl   (environment: the variables run.sh exports)
Every figure is the median over rounds; ratios are tlsedge (or nginx, or the floor) divided by
HAProxy, and tlsedge divided by the naive rustls floor.
"""
import json
import os
import statistics
import sys
from collections import defaultdict

CONTENDERS = ["tlsedge", "haproxy", "nginx", "floor"]
NAMES = {"tlsedge": "tlsedge", "haproxy": "HAProxy", "nginx": "nginx", "floor": "floor"}
# Outside clients beside the load generator: the tag's suffix names the client.
OUTSIDE = {"stime": "openssl s_time", "wrk": "wrk"}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def spread(runs, key):
    values = [r.get(key) for r in runs if r.get(key) is not None]
    if len(values) < 2:
        return ""
    return f" ({min(values):,.0f}–{max(values):,.0f})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def duration(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def micro(w, env):
    """Criterion's estimates written by this run (`cargo bench --bench micro`)."""
    root = env.get("MICRO_DIR")
    if not root or not os.path.isdir(root):
        return
    since = float(env.get("MICRO_SINCE", "0"))
    found = []
    for dirpath, _, files in os.walk(root):
        if not dirpath.endswith(os.sep + "new") or "benchmark.json" not in files:
            continue
        est_path = os.path.join(dirpath, "estimates.json")
        if not os.path.exists(est_path) or os.path.getmtime(est_path) < since:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(est_path) as f:
            est = json.load(f)
        med = est["median"]
        found.append((bench["full_id"], med["point_estimate"], med["confidence_interval"]["lower_bound"], med["confidence_interval"]["upper_bound"]))
    if not found:
        return
    order = ["sni", "balance", "config", "snapshot", "handshake"]
    found.sort(key=lambda b: (order.index(b[0].split("/")[0]) if b[0].split("/")[0] in order else 99, b[0]))
    w("## Micro-benchmarks (`cargo bench --bench micro`, pinned to CPU 0)")
    w("")
    w("Criterion median per iteration (95 % confidence interval). `handshake/*/server` counts only the server's rustls calls (tlsedge's own per-host `ServerConfig`): the library floor of a proxied connection; `both` is client + server.")
    w("")
    w("| benchmark | median | 95 % CI |")
    w("|---|---|---|")
    for full_id, m, lo, hi in found:
        w(f"| `{full_id}` | {duration(m)} | {duration(lo)} – {duration(hi)} |")
    w("")


def header(w, rows, env, title, client_line, logging_line):
    """The run's header: date, CPU, versions, client, load and other jobs, how CPU is counted."""
    rounds = max((r["round"] for r in rows), default=0)
    smoke = env.get("SMOKE") == "1"
    w(title + (" (SMOKE RUN: not meaningful)" if smoke else ""))
    w("")
    w(f"- Date: {env.get('START_DATE', '?')}; {rounds} interleaved round(s) of {env.get('DUR', '?')} s per scenario; figures are medians over rounds.")
    if env.get("CORES", "1") == "1":
        pinning = "Contenders pinned to CPU 0 (`taskset -c 0`), load generator and nginx backends to CPU 1."
    else:
        pinning = ("Two workers per contender (tlsedge `--workers 2`, HAProxy `nbthread 2`, nginx `worker_processes 2`; "
                   "the floor has one thread by design), all processes, clients and backends on both CPUs: "
                   "server CPU per operation and throughput, not per-core scaling.")
    w(f"- CPU: {env.get('CPU_MODEL', '?')}. {pinning}")
    w(f"- Versions: {env.get('VER_TLSEDGE', '?')}; {env.get('VER_HAPROXY', '?')}; {env.get('VER_NGINX', '?')}.")
    w(client_line)
    w(f"- Machine load (1/5/15 min) at start: {env.get('START_LOAD', '?')}, at end: {env.get('END_LOAD', '?')}. Processes above 5 % CPU at start: {env.get('OTHERS_START') or 'none'} at end: {env.get('OTHERS_END') or 'none'}")
    if env.get("IDLE_NOTE"):
        w(f"- Note: {env['IDLE_NOTE']}.")
    shares = [r.get("other_on_server_cpu") for r in rows if r.get("other_on_server_cpu") is not None]
    cshares = [r.get("other_on_client_cpu") for r in rows if r.get("other_on_client_cpu") is not None]
    if shares and env.get("CORES", "1") != "1":
        w("- Interference from other jobs is not measured in this mode: every process runs on both CPUs, so `/proc/stat` cannot tell them apart.")
    elif shares:
        disturbed = [r for r in rows if max(r.get("other_on_server_cpu") or 0, r.get("other_on_client_cpu") or 0) > 0.05]
        if disturbed:
            worst = max(max(r.get("other_on_server_cpu") or 0, r.get("other_on_client_cpu") or 0) for r in disturbed)
            which = ", ".join(sorted({f"{r['contender']} {r['tag']} (round {r['round']})" for r in disturbed}))
            w(f"- **Other jobs were running on this machine** during {len(disturbed)} of {len(shares)} measured runs (more than 5 % of a pinned CPU went to other processes, up to {100 * worst:.0f} %): {which}. Server CPU per operation counts only the contender's own time, so it suffers less than throughput and latency; medians of interleaved rounds are the robust figures.")
        else:
            w("- No other job took more than 5 % of either pinned CPU during any measured run.")
        w(f"- Interference: busy time of each pinned CPU not charged to our processes during the measured runs (`/proc/stat` minus the contender, backends and load generator: other jobs, plus softirq time not charged to any process): server CPU 0 median {100 * statistics.median(shares):.0f} % (max {100 * max(shares):.0f} %), client CPU 1 median {100 * statistics.median(cshares):.0f} % (max {100 * max(cshares):.0f} %).")
    w(logging_line)
    w("- Server CPU = utime + stime from `/proc/PID/stat` of every process of the contender (nginx: master + worker), before/after each load generator run, divided by completed requests (10 ms tick resolution).")


def idle_table(w, by, present, base, tags, names=None, extra=None):
    """KiB per idle connection, one row per count (the tag's last `-` field), each contender
    and its ratio to `base`; `extra` = (heading, function of the tag) adds a last column."""
    names = names or NAMES
    others = [c for c in present if c != base] if base else []
    extra_head = f" | {extra[0]}" if extra else ""
    w("| idle connections | " + " | ".join(names[c] for c in present) + "".join(f" | {names[c]} / {names[base]}" for c in others) + extra_head + " |")
    w("|" + "---|" * (1 + len(present) + len(others) + (1 if extra else 0)))
    for tag in tags:
        vals = {c: median([r.get("kib_per_conn") for r in by.get((tag, c), [])]) for c in present}
        cells = " | ".join(fmt(vals[c], 1) for c in present) + "".join(f" | {ratio(vals[c], vals[base])}" for c in others)
        w(f"| {tag.rsplit('-', 1)[1]} | " + cells + (f" | {extra[1](tag)}" if extra else "") + " |")
    w("")


def main():
    rows = load(sys.argv[1])
    by = defaultdict(list)
    for r in rows:
        by[(r["tag"], r["contender"])].append(r)
    present = [c for c in CONTENDERS if any(k[1] == c for k in by)]
    env = os.environ
    out = []
    w = out.append
    header(
        w,
        rows,
        env,
        "# tlsedge vs HAProxy vs nginx — benchmark results",
        "- Clients: `benches/loadgen.rs` (rustls, aws-lc-rs), TLS 1.3, key exchange pinned to X25519, cipher TLS13_AES_256_GCM_SHA384, ECDSA P-256 certificates unless the scenario says RSA-2048; and outside clients on OpenSSL (Debian's): `openssl s_time` for the `-stime` rows, `wrk` (one thread, SNI from a private /etc/hosts) for the `-wrk` rows, each with the cipher and group it prefers. The floor is `../shared/tools/rustls-floor`, a naive tokio + rustls proxy (ECDSA certificate only: no RSA rows).",
        "- tlsedge ran with `RUST_LOG=warn`: its per-connection `connection closed` log line (level info) off, like HAProxy without `log` and nginx stream without `access_log`.",
    )
    w("")

    def med(tag, who, key):
        return median([r.get(key) for r in by.get((tag, who), [])])

    base = "haproxy" if "haproxy" in present else None
    scen = [
        ("full-ecdsa", "new TLS connection per request, full handshake, ECDSA P-256", "µs / connection"),
        ("full-rsa", "new TLS connection per request, full handshake, RSA-2048", "µs / connection"),
        ("resumed", "new TLS connection per request, resumed (tickets)", "µs / connection"),
        ("keepalive", "50 persistent connections, small request", "µs / request"),
        ("bulk", "4 connections, 1 MiB responses", "µs / MiB response"),
        ("full-ecdsa-stime", "`openssl s_time -new` ×8 (no SNI: the default host), full handshake, ECDSA P-256, GET /small", "µs / connection"),
        ("resumed-wrk", "`wrk -c50 -H 'Connection: close'`: new connection per request, resumed (wrk reuses its session)", "µs / connection"),
        ("keepalive-wrk", "`wrk -c50`, keep-alive, small request", "µs / request"),
        ("bulk-wrk", "`wrk -c4`, 1 MiB responses (wrk reads in small pieces)", "µs / MiB response"),
    ]
    scen = [s for s in scen if any((s[0], c) in by for c in present)]
    if scen:
        w("## Server CPU per connection / request (lower is better)")
        w("")
        w("Median over rounds (min–max in parentheses when there are several rounds).")
        w("")
        head = "| scenario | unit | " + " | ".join(NAMES[c] for c in present)
        others = [c for c in present if c != base] if base else []
        floor = "floor" in present and "tlsedge" in present
        head += "".join(f" | {NAMES[c]} / HAProxy" for c in others) + (" | tlsedge / floor" if floor else "") + " |"
        w(head)
        w("|" + "---|" * (2 + len(present) + len(others) + floor))
        for tag, desc, unit in scen:
            vals = {c: med(tag, c, "server_cpu_us_per_op") for c in present}
            line = f"| {tag}: {desc} | {unit} | " + " | ".join(fmt(vals[c]) + spread(by.get((tag, c), []), "server_cpu_us_per_op") for c in present)
            line += "".join(f" | {ratio(vals[c], vals[base])}" for c in others)
            line += (f" | {ratio(vals['tlsedge'], vals['floor'])}" if floor else "") + " |"
            w(line)
        w("")
        if any(r.get("server_cpu_irq_us_per_op") is not None for r in rows):
            w("Not included above: irq + softirq time on the server CPU (from `/proc/stat`), charged to no process: mostly the loopback receive path of what the server sends. Per connection / request:")
            w("")
            w("| scenario | " + " | ".join(NAMES[c] for c in present) + " |")
            w("|" + "---|" * (1 + len(present)))
            for tag, _, _ in scen:
                w(f"| {tag} | " + " | ".join(fmt(med(tag, c, "server_cpu_irq_us_per_op")) for c in present) + " |")
            w("")
        w("## Throughput (client-bound for handshakes: the one client core saturates first)")
        w("")
        w("| scenario | unit | " + " | ".join(NAMES[c] for c in present) + " | server CPU busy (" + ", ".join(NAMES[c] for c in present) + ") |")
        w("|" + "---|" * (3 + len(present)))
        for tag, desc, _ in scen:
            key, unit = ("mb_per_s", "MB/s") if tag.startswith("bulk") else ("ops_per_s", "req/s" if tag.startswith("keepalive") else "conn/s")
            vals = [fmt(med(tag, c, key)) for c in present]
            busy = ", ".join(fmt((med(tag, c, "server_cpu_share") or 0) * 100) + " %" for c in present)
            w(f"| {tag} | {unit} | " + " | ".join(vals) + f" | {busy} |")
        w("")
        w("## Latency (client-side, µs)")
        w("")
        w("| scenario | metric | " + " | ".join(NAMES[c] for c in present) + " |")
        w("|" + "---|" * (2 + len(present)))
        for tag, keys in [("keepalive", ["p50_us", "p99_us"]), ("full-ecdsa", ["handshake_p50_us", "handshake_p99_us"]), ("resumed", ["handshake_p50_us", "handshake_p99_us"])]:
            if not any((tag, c) in by for c in present):
                continue
            for key in keys:
                w(f"| {tag} | {key.replace('_us', '')} | " + " | ".join(fmt(med(tag, c, key)) for c in present) + " |")
        w("")
        w("## Resumption actually measured")
        w("")
        w("Client-side: share of handshakes the client saw resumed (all rounds summed). tlsedge server-side: its own `tlsedge_handshakes_total{resumed}` counters read around every run.")
        w("")
        w("| scenario | " + " | ".join(f"{NAMES[c]} (client)" for c in present) + " | tlsedge server: resumed / full |")
        w("|" + "---|" * (2 + len(present)))
        for tag in ["full-ecdsa", "full-rsa", "resumed", "full-ecdsa-stime", "resumed-wrk"]:
            if not any((tag, c) in by for c in present):
                continue
            cells = []
            for c in present:
                rs = by.get((tag, c), [])
                r = sum(x.get("handshakes_resumed", 0) for x in rs)
                t = sum(x.get("handshakes", 0) for x in rs)
                cells.append(f"{100 * r / t:.1f} %" if t else "–")
            rs = by.get((tag, "tlsedge"), [])
            sr = sum(x.get("server_resumed") or 0 for x in rs)
            sf = sum(x.get("server_full") or 0 for x in rs)
            srv = f"{sr:,} / {sf:,} ({100 * sr / (sr + sf):.1f} % resumed)" if sr + sf else "–"
            w(f"| {tag} | " + " | ".join(cells) + f" | {srv} |")
        w("")
        w("## What was negotiated (first connection of each run, client-side)")
        w("")
        w("| scenario | " + " | ".join(NAMES[c] for c in present) + " |")
        w("|" + "---|" * (1 + len(present)))
        for tag in ["full-ecdsa", "full-rsa", "resumed", "keepalive", "bulk"]:
            if not any((tag, c) in by for c in present):
                continue
            cells = []
            for c in present:
                seen = sorted({f"{r.get('version', '')} {r.get('cipher', '')} {r.get('kx', '')} {r.get('server_key', '')} cert".strip() for r in by.get((tag, c), [])})
                cells.append("; ".join(seen) or "–")
            w(f"| {tag} | " + " | ".join(cells) + " |")
        w("")
    idle_tags = sorted({t for (t, _) in by if t.startswith("idle-")}, key=lambda t: int(t.split("-")[1]))
    if idle_tags:
        w("## Memory per idle proxied TLS connection (RSS growth, KiB / connection; lower is better)")
        w("")
        w("Fresh process, a short warm-up, then K connections opened (handshake + one request each) and held idle; RSS summed over the contender's processes.")
        w("")
        floor_ratio = None
        if "floor" in present and "tlsedge" in present:
            def floor_ratio(tag):
                return ratio(median([r.get("kib_per_conn") for r in by.get((tag, "tlsedge"), [])]),
                             median([r.get("kib_per_conn") for r in by.get((tag, "floor"), [])]))
        idle_table(w, by, present, base, idle_tags, extra=("tlsedge / floor", floor_ratio) if floor_ratio else None)
    if any(t.startswith("rotation-") for (t, _) in by):
        w("## Scenario 6 (tlsedge): handshakes while a certificate is rotated every 100 ms")
        w("")
        w("One host; its cert+key file is replaced every 100 ms (write a temporary file, rename over); `reload.debounce: 50ms`, `max_delay: 100ms`. Full ECDSA handshakes, 16 workers. The rotating loop (cp + mv every 100 ms) runs on the client CPU, so part of the conn/s drop is the client's; the server CPU per connection includes tlsedge's reload work.")
        w("")
        w("| mode | handshake p50 µs | handshake p99 µs | request p99 µs | conn/s | server CPU µs / conn | reloads applied (other) per run | errors |")
        w("|---|---|---|---|---|---|---|---|")
        for mode in ["steady", "rotating"]:
            tag = f"rotation-{mode}"
            rs = by.get((tag, "tlsedge"), [])
            if not rs:
                continue
            w(f"| {mode} | {fmt(med(tag, 'tlsedge', 'handshake_p50_us'))} | {fmt(med(tag, 'tlsedge', 'handshake_p99_us'))} | {fmt(med(tag, 'tlsedge', 'p99_us'))} | {fmt(med(tag, 'tlsedge', 'ops_per_s'))} | {fmt(med(tag, 'tlsedge', 'server_cpu_us_per_op'))} | {fmt(med(tag, 'tlsedge', 'reloads_applied'))} ({fmt(med(tag, 'tlsedge', 'reloads_other'))}) | {sum(r['errors'] for r in rs)} |")
        w("")
    host_tags = sorted({t for (t, _) in by if t.startswith("hosts-")}, key=lambda t: int(t.split("-")[1]))
    if host_tags:
        w(f"## Scenario 7 (tlsedge): {int(host_tags[-1].split('-')[1]):,} hosts vs 1 host")
        w("")
        w("Every host has one exact name `hN.bench.test` and shares one wildcard ECDSA certificate file. Start-up: process start → TLS and admin ports accept connections (polled every 10 ms). Reload: SIGHUP after changing the config file's bytes → `configuration reloaded` logged; ten reloads in a row, RSS 0.2 s after each, and again 12 s after the last (\"settled\": jemalloc returns freed pages after 10 s). Handshakes spread over all names.")
        w("")
        w("| hosts | start-up ms | reload ms (median of 10) | RSS after start MiB | after 1st reload MiB | after 10th reload MiB | settled MiB | 10th / 1st | full handshakes conn/s | server CPU µs / conn |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for tag in host_tags:
            g = lambda k: med(tag, "tlsedge", k)
            rss = g("rss_start_kib")
            rss2 = g("rss_after_reload_kib")
            rss10 = g("rss_after_10_reloads_kib")
            settled = g("rss_settled_kib")
            growth = f"{rss10 / rss2:.2f}×" if rss2 and rss10 else "–"
            mib = lambda v: fmt(v / 1024 if v else None, 1)
            w(f"| {tag.split('-')[1]} | {fmt(g('startup_ms'))} | {fmt(g('reload_ms'))} | {mib(rss)} | {mib(rss2)} | {mib(rss10)} | {mib(settled)} | {growth} | {fmt(g('ops_per_s'))} | {fmt(g('server_cpu_us_per_op'))} |")
        w("")
    micro(w, env)
    errors = sum(r.get("errors", 0) for r in rows)
    w(f"Load generator errors over all runs: {errors}." + ("" if not errors else " First: " + next((r.get("first_error") or r.get("client", "?") for r in rows if r.get("errors")), "?") + "."))
    w("")
    w("Reproduce: `benches/compare/run.sh` (see `benches/README.md`).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
