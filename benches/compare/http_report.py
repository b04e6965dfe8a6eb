#!/usr/bin/env python3
"""Turns the JSON lines written by http.sh into the markdown section it appends to
benches/RESULTS.md.

Usage: http_report.py results.jsonl   (environment: the variables http.sh exports)
Every figure is the median over rounds; ratios are tlsedge divided by HAProxy and by nginx,
from the same run.
"""
import os
import sys
from collections import defaultdict

from report import fmt, header, idle_table, load, median, ratio, spread

CONTENDERS = ["tlsedge", "haproxy", "nginx"]
NAMES = {"tlsedge": "tlsedge", "haproxy": "HAProxy", "nginx": "nginx", "tlsedge-l4": "tlsedge L4"}

SCENARIOS = [
    ("h1-keepalive", "HTTP/1.1 keep-alive, 50 connections, `/small` (wrk -t1 -c50)", "µs / request"),
    ("h1-keepalive-loadgen", "the same with the project's loadgen (`keepalive --conns 50`)", "µs / request"),
    ("h2-keepalive", "HTTP/2, 50 connections × 10 streams, `/small` (h2load -t1 -c50 -m10)", "µs / request"),
    ("h1-newconn", "new TLS connection (full ECDSA handshake) per HTTP/1.1 request (loadgen `full`, 16 workers)", "µs / request"),
    ("h1-1m", "1 MiB responses, HTTP/1.1 keep-alive, 4 connections (loadgen `bulk`)", "µs / MiB"),
    ("h1-1m-wrk", "the same with wrk (-c4; it reads 8 KiB at a time)", "µs / MiB"),
]

# tag → (goal as a fraction of HAProxy's, what it is)
TARGETS = [
    ("h1-keepalive", 0.8, "server CPU per HTTP/1.1 keep-alive request (wrk)"),
    ("h1-keepalive-loadgen", 0.8, "the same, loadgen client"),
    ("h2-keepalive", 0.8, "server CPU per HTTP/2 request"),
    ("h1-newconn", 0.6, "server CPU per request on a new connection (full handshake)"),
]


def main():
    rows = load(sys.argv[1])
    env = os.environ
    by = defaultdict(list)
    for r in rows:
        by[(r["tag"], r["contender"])].append(r)
    present = [c for c in CONTENDERS if any(k[1] == c for k in by)]
    out = []
    w = out.append

    def med(tag, who, key):
        return median([r.get(key) for r in by.get((tag, who), [])])

    def cpu(tag, who):
        return med(tag, who, "server_cpu_us_per_op")

    header(
        w,
        rows,
        env,
        f"## HTTP mode: tlsedge `mode: http` vs HAProxy `mode http` vs nginx `http` (`benches/compare/http.sh`, {env.get('START_DATE', '?')})",
        "- Clients (one thread each, on CPU 1): `wrk` 4.1 (OpenSSL, HTTP/1.1, no ALPN), `h2load` (nghttp2, OpenSSL, ALPN h2, `--tls13-ciphers=TLS_AES_256_GCM_SHA384`), the project's `loadgen` (rustls, TLS 1.3, X25519, AES-256-GCM; no ALPN, so HTTP/1.1; `--alpn h2` + hyper for the idle HTTP/2 connections). wrk offers OpenSSL's default TLS 1.3 list (AES-256-GCM first) and reports no negotiation details.",
        "- Logging: tlsedge `RUST_LOG=warn` (its per-request `request` line is at info: off), HAProxy without `log`, nginx with `access_log off`. Every contender proxies to the same two nginx backends over HTTP/1.1 keep-alive connections it pools (tlsedge: its own pool, up to 256 idle per backend; HAProxy `http-reuse always`; nginx `keepalive 32`). tlsedge runs with its `http: {}` defaults, which add `X-Forwarded-For/-Proto/-Host` and a generated request id (request and response header) that HAProxy and nginx, as configured, do not.",
    )
    w("")
    base = "haproxy" if "haproxy" in present else None
    scen = [s for s in SCENARIOS if any((s[0], c) in by for c in present)]
    if scen:
        w("### Server CPU per request (lower is better)")
        w("")
        w("Median over rounds (min–max in parentheses when there are several rounds). For the 1 MiB scenarios one request is one MiB.")
        w("")
        ratios = [(c, b) for c, b in (("tlsedge", "haproxy"), ("tlsedge", "nginx"), ("nginx", "haproxy")) if c in present and b in present]
        w("| scenario | unit | " + " | ".join(NAMES[c] for c in present) + "".join(f" | {NAMES[a]} / {NAMES[b]}" for a, b in ratios) + " |")
        w("|" + "---|" * (2 + len(present) + len(ratios)))
        for tag, desc, unit in scen:
            cells = [fmt(cpu(tag, c), 1 if unit == "µs / request" else 0) + spread(by.get((tag, c), []), "server_cpu_us_per_op") for c in present]
            w(f"| `{tag}`: {desc} | {unit} | " + " | ".join(cells) + "".join(f" | {ratio(cpu(tag, a), cpu(tag, b))}" for a, b in ratios) + " |")
        w("")
        w("Not included above: irq + softirq time of the server CPU (charged to no process; mostly loopback receive), per request:")
        w("")
        w("| scenario | " + " | ".join(NAMES[c] for c in present) + " |")
        w("|" + "---|" * (1 + len(present)))
        for tag, _, _ in scen:
            w(f"| `{tag}` | " + " | ".join(fmt(med(tag, c, "server_cpu_irq_us_per_op"), 1) for c in present) + " |")
        w("")
    if ("h1-newconn", "tlsedge-l4") in by and ("h1-newconn", "tlsedge") in by:
        http, l4 = cpu("h1-newconn", "tlsedge"), cpu("h1-newconn", "tlsedge-l4")
        w("### New connection per request: tlsedge HTTP mode vs its L4 mode (same run)")
        w("")
        w("In L4 mode (`mode: tcp`) every client connection costs a backend TCP connection; in HTTP mode the request goes over a pooled one.")
        w("")
        w("| | tlsedge `mode: http` | tlsedge `mode: tcp` | HTTP / L4 |")
        w("|---|---|---|---|")
        w(f"| server CPU µs / request | {fmt(http)}{spread(by[('h1-newconn', 'tlsedge')], 'server_cpu_us_per_op')} | {fmt(l4)}{spread(by[('h1-newconn', 'tlsedge-l4')], 'server_cpu_us_per_op')} | {ratio(http, l4)} |")
        w(f"| irq + softirq µs / request | {fmt(med('h1-newconn', 'tlsedge', 'server_cpu_irq_us_per_op'))} | {fmt(med('h1-newconn', 'tlsedge-l4', 'server_cpu_irq_us_per_op'))} | |")
        w(f"| requests / s | {fmt(med('h1-newconn', 'tlsedge', 'ops_per_s'))} | {fmt(med('h1-newconn', 'tlsedge-l4', 'ops_per_s'))} | |")
        sr = sum(r.get("server_resumed") or 0 for r in by[("h1-newconn", "tlsedge")] + by[("h1-newconn", "tlsedge-l4")])
        sf = sum(r.get("server_full") or 0 for r in by[("h1-newconn", "tlsedge")] + by[("h1-newconn", "tlsedge-l4")])
        w("")
        w(f"tlsedge's own handshake counters over these runs: {sf:,} full, {sr:,} resumed.")
        w("")
    if scen:
        w("### Throughput and latency (client-side)")
        w("")
        w("| scenario | " + " | ".join(f"{NAMES[c]} req/s" for c in present) + " | " + " | ".join(f"{NAMES[c]} p50 / p99 µs" for c in present) + " | server CPU busy (" + ", ".join(NAMES[c] for c in present) + ") |")
        w("|" + "---|" * (2 + 2 * len(present)))
        for tag, _, _ in scen:
            rps = [fmt(med(tag, c, "ops_per_s")) for c in present]
            lat = [f"{fmt(med(tag, c, 'p50_us'))} / {fmt(med(tag, c, 'p99_us'))}" for c in present]
            busy = ", ".join(fmt((med(tag, c, "server_cpu_share") or 0) * 100) + " %" for c in present)
            w(f"| `{tag}` | " + " | ".join(rps) + " | " + " | ".join(lat) + f" | {busy} |")
        w("")
        bulk = [t for t, _, _ in scen if t.startswith("h1-1m")]
        if bulk:
            w("| 1 MiB scenario | " + " | ".join(f"{NAMES[c]} MB/s" for c in present) + " |")
            w("|" + "---|" * (1 + len(present)))
            for tag in bulk:
                w(f"| `{tag}` | " + " | ".join(fmt(med(tag, c, "mb_per_s")) for c in present) + " |")
            w("")
            if env.get("NGINX_TEMP_FILES"):
                w(f"nginx logged {env['NGINX_TEMP_FILES']} \"buffered to a temporary file\" warnings (its default `proxy_buffering on` spills a 1 MiB response that outruns its proxy buffers to `proxy_temp_path`, here under /tmp).")
                w("")
    idle_tags = sorted({t for (t, _) in by if t.startswith("idle-h2-")}, key=lambda t: int(t.rsplit("-", 1)[1]))
    if idle_tags:
        w("### Memory per idle HTTP/2 client connection (RSS growth, KiB / connection; lower is better)")
        w("")
        w("Fresh process, 0.3 s warm-up of full handshakes, RSS read; then K connections opened with ALPN h2 (handshake + one HTTP/2 `GET /small` each) and held idle; RSS read after 1 s: (after − before) / K. Includes whatever pooled backend connections the requests left open.")
        w("")
        def alpn(tag):
            return ", ".join(sorted({f"{NAMES[r['contender']]}: {r.get('alpn') or 'none'}" for c in present for r in by.get((tag, c), [])}))

        idle_table(w, by, present, base, idle_tags, NAMES, ("ALPN seen by the client", alpn))
    if base and "tlsedge" in present:
        w("### Targets (tlsedge / HAProxy, this run)")
        w("")
        w("| target | goal | measured | |")
        w("|---|---|---|---|")
        goals = list(TARGETS) + [(t, 1.0, f"memory per idle HTTP/2 connection ({t.rsplit('-', 1)[1]} held)") for t in idle_tags]
        for tag, goal, what in goals:
            key = "kib_per_conn" if tag.startswith("idle-") else "server_cpu_us_per_op"
            a, b = med(tag, "tlsedge", key), med(tag, base, key)
            if a is None or b is None or not b:
                continue
            unit = "KiB" if key == "kib_per_conn" else "µs"
            digits = 1
            verdict = "met" if a / b <= goal else "**missed**"
            w(f"| {what} | ≤ {goal:.1f}× | {a / b:.2f}× ({fmt(a, digits)} vs {fmt(b, digits)} {unit}) | {verdict} |")
        w("")
    w("### What was negotiated (client-side)")
    w("")
    w("| scenario | " + " | ".join(NAMES[c] for c in present) + " |")
    w("|" + "---|" * (1 + len(present)))
    for tag in [t for t, _, _ in scen] + idle_tags:
        cells = []
        for c in present:
            seen = sorted({" ".join(x for x in (r.get("version"), r.get("cipher"), r.get("kx"), ("ALPN " + r["alpn"]) if r.get("alpn") else "") if x) for r in by.get((tag, c), [])})
            cells.append("; ".join(s for s in seen if s) or "(not reported by the client)")
        w(f"| `{tag}` | " + " | ".join(cells) + " |")
    w("")
    errors = [(r["contender"], r["tag"], r["round"], r.get("errors", 0), r.get("first_error")) for r in rows if r.get("errors")]
    if errors:
        w("Client errors: " + "; ".join(f"{NAMES.get(c, c)} {t} round {n}: {e}" + (f" (first: {f})" if f else "") for c, t, n, e, f in errors) + ".")
    else:
        w("Client errors over all runs: 0.")
    w("")
    w("Reproduce: `benches/compare/http.sh` (see `benches/README.md`, section HTTP mode).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
