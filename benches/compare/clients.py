#!/usr/bin/env python3
"""Runs an outside client (wrk, h2load or openssl s_time) for benches/compare/run.sh and
http.sh and prints one JSON line with the load generator's field names, plus the client's own
CPU time (`client_cpu_us`, from getrusage of its children) so the noise accounting can tell it
from other jobs.

    clients.py wrk -- wrk -t1 -c50 -d10s -s wrk-json.lua https://a.bench.test:28443/small
    clients.py h2load --log FILE -- h2load -t1 -c50 -m10 -D 10 --log-file=FILE https://...
    clients.py stime --procs 8 -- openssl s_time -connect 127.0.0.1:28443 -new -time 10 ...

s_time: N copies run in parallel (one s_time is one connection at a time); each prints
"C connections in S real seconds" and the sum over the copies is `ops`. It has no latency
figures (p50/p99 are null), and a failed connection ends the copy with an error.

wrk: the last line of its output is the JSON of wrk-json.lua. h2load: parsed from its summary
("requests: N total, ... succeeded, F failed, E errored, T timeout", "finished in", the TLS and
"Application protocol" lines); p50/p99 from its per-request log (column 3: µs to the end of
the response).
"""
import json
import re
import resource
import subprocess
import sys
import time


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_us = int((usage.ru_utime + usage.ru_stime) * 1e6)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        sys.exit(1)
    return proc.stdout, cpu_us


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * p // 100)))
    return sorted_values[int(rank) - 1]


def wrk(cmd):
    out, cpu_us = run(cmd)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(out)
        sys.exit(1)
    result = json.loads(lines[-1])
    result["client_cpu_us"] = cpu_us
    return result


def h2load(log, cmd):
    out, cpu_us = run(cmd)
    num = r"([0-9.]+)"
    m = re.search(rf"requests: {num} total, {num} started, {num} done, {num} succeeded, {num} failed, {num} errored, {num} timeout", out)
    f = re.search(rf"finished in {num}(m?s)", out)
    t = re.search(rf"traffic: \S+ \(({num})\) total", out)
    if not m or not f:
        sys.stderr.write(out)
        sys.exit(1)
    succeeded, failed, errored, timeout = (int(float(m.group(i))) for i in (4, 5, 6, 7))
    secs = float(f.group(1)) / (1000 if f.group(2) == "ms" else 1)
    lat = []
    with open(log) as fh:
        for line in fh:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1] == "200":
                lat.append(int(cols[2]))
    lat.sort()

    def field(label):
        found = re.search(rf"^{label}: *(.*)$", out, re.M)
        return found.group(1).strip() if found else ""

    total_bytes = int(t.group(1)) if t else 0
    return {
        "client": "h2load",
        "ops": succeeded,
        "errors": failed + errored + timeout,
        "elapsed_s": round(secs, 3),
        "ops_per_s": round(succeeded / secs, 1) if secs else 0,
        "bytes_read": total_bytes,
        "mb_per_s": round(total_bytes / secs / 1e6, 1) if secs else 0,
        "p50_us": percentile(lat, 50),
        "p99_us": percentile(lat, 99),
        "version": field("TLS Protocol"),
        "cipher": field("Cipher"),
        "kx": field("Server Temp Key"),
        "alpn": field("Application protocol"),
        "client_cpu_us": cpu_us,
    }


def stime(procs, cmd):
    started = time.monotonic()
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(procs)]
    ops, errors = 0, 0
    for child in children:
        out, _ = child.communicate()
        # The first summary line counts user seconds; this one counts connections in real time.
        found = re.search(r"^(\d+) connections in \d+ real seconds", out, re.M)
        if child.returncode != 0 or not found:
            errors += 1
            sys.stderr.write(out[-1000:])
            continue
        ops += int(found.group(1))
    secs = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if ops == 0:
        sys.exit(1)
    return {
        "client": "s_time",
        "ops": ops,
        "errors": errors,
        "elapsed_s": round(secs, 3),
        "ops_per_s": round(ops / secs, 1) if secs else 0,
        "mb_per_s": None,
        "p50_us": None,
        "p99_us": None,
        "client_cpu_us": int((usage.ru_utime + usage.ru_stime) * 1e6),
    }


def main():
    args = sys.argv[1:]
    if "--" not in args:
        sys.exit(__doc__)
    split = args.index("--")
    opts, cmd = args[:split], args[split + 1:]
    if opts[:1] == ["wrk"]:
        result = wrk(cmd)
    elif opts[:1] == ["h2load"] and len(opts) == 3 and opts[1] == "--log":
        result = h2load(opts[2], cmd)
    elif opts[:1] == ["stime"] and len(opts) == 3 and opts[1] == "--procs":
        result = stime(int(opts[2]), cmd)
    else:
        sys.exit(__doc__)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
