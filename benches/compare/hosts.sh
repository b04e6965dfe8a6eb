#!/usr/bin/env bash
# Scenario 7 on its own: start-up, reload time and memory of tlsedge with many hosts, the
# configuration written as YAML or as JSON (which tlsedge parses with serde_json).
#
#   benches/compare/hosts.sh [--hosts 100000] [--format yaml|json] [--reloads 10]
#
# Every host has one exact name hN.bench.test, shares one wildcard ECDSA certificate (generated
# here) and two backends (never connected to). tlsedge runs pinned to CPU 0 with the reload log
# on. Each reload: change the file's bytes, SIGHUP, wait for the `configuration reloaded` line;
# RSS 0.2 s after each reload, and again 12 s after the last ("settled": jemalloc returns freed
# pages after 10 s). Prints one summary line and the reload log lines' phase timings.
set -euo pipefail
HOSTS=100000
FORMAT=yaml
RELOADS=10
while (($#)); do
    case $1 in
        --hosts) HOSTS=$2; shift ;;
        --format) FORMAT=$2; shift ;;
        --reloads) RELOADS=$2; shift ;;
        -h|--help) sed -n 2,11p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $FORMAT == yaml || $FORMAT == json ]] || { echo "--format: yaml or json" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/tlsedge-hosts.XXXXXX)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
(cd "$ROOT" && cargo build --release --quiet --bin tlsedge)
BIN=$ROOT/target/release/tlsedge
ADMIN=127.0.0.1:${ADMIN_PORT:-29900}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
    -keyout "$WORK/wildcard.key" -out "$WORK/wildcard.pem" -subj /CN=bench.test \
    -addext "subjectAltName=DNS:*.bench.test" 2>/dev/null
chmod 600 "$WORK/wildcard.key"
CONFIG=$WORK/hosts.$FORMAT
awk -v n="$HOSTS" -v format="$FORMAT" -v dir="$WORK" -v admin="$ADMIN" -v tls="${TLS_PORT:-28443}" 'BEGIN {
    if (format == "json") {
        printf "{\"listeners\": [\"127.0.0.1:%s\"], \"admin\": {\"bind\": \"%s\"}, \"reload\": {\"watch\": false},\n \"hosts\": [\n", tls, admin
        for (i = 0; i < n; i++)
            printf "  {\"names\": [\"h%d.bench.test\"], \"certs\": [{\"cert\": \"%s/wildcard.pem\", \"key\": \"%s/wildcard.key\"}], \"backends\": [{\"address\": \"127.0.0.1:9\"}, {\"address\": \"127.0.0.1:10\"}], \"balance\": \"round_robin\"}%s\n", i, dir, dir, (i < n - 1 ? "," : "")
        print " ]}"
    } else {
        printf "listeners: [\"127.0.0.1:%s\"]\nadmin:\n  bind: \"%s\"\nreload:\n  watch: false\nhosts:\n", tls, admin
        for (i = 0; i < n; i++)
            printf "  - names: [h%d.bench.test]\n    certs:\n      - { cert: %s/wildcard.pem, key: %s/wildcard.key }\n    backends:\n      - { address: \"127.0.0.1:9\" }\n      - { address: \"127.0.0.1:10\" }\n    balance: round_robin\n", i, dir, dir
    }
}' >"$CONFIG"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
rss_mib() { echo $(($(awk '/VmRSS/ {print $2}' "/proc/$PID/status") / 1024)); }
reloaded() { grep -c "configuration reloaded" "$WORK/log" || true; }

TLSEDGE_LOG="warn,tlsedge::reload=info" taskset -c 0 "$BIN" run --config "$CONFIG" >"$WORK/log" 2>&1 &
PID=$!
t0=$(now_ms)
deadline=$((SECONDS + 120))
until curl -sf "http://$ADMIN/readyz" >/dev/null; do
    ((SECONDS < deadline)) || { echo "tlsedge did not get ready:" >&2; tail "$WORK/log" >&2; exit 1; }
    sleep 0.01
done
start_ms=$(($(now_ms) - t0))
start_rss=$(rss_mib)
times=()
rss=()
for ((r = 1; r <= RELOADS; r++)); do
    before=$(reloaded)
    # A change of bytes that keeps the document what it was (JSON has no comments).
    if [[ $FORMAT == json ]]; then echo " " >>"$CONFIG"; else echo "# touched $r" >>"$CONFIG"; fi
    r0=$(now_ms)
    kill -HUP "$PID"
    deadline=$((SECONDS + 120))
    while (($(reloaded) <= before)); do
        ((SECONDS < deadline)) || { echo "reload $r did not finish" >&2; exit 1; }
        sleep 0.005
    done
    times+=($(($(now_ms) - r0)))
    sleep 0.2
    rss+=("$(rss_mib)")
done
sleep 12
settled=$(rss_mib)
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RELOADS + 1) / 2))p")
echo "$HOSTS hosts, $FORMAT: start-up ${start_ms} ms; reloads ${times[*]} ms (median $median);" \
    "RSS after start ${start_rss} MiB, after the 1st reload ${rss[0]}, after the last ${rss[-1]}, settled ${settled} MiB"
grep "configuration reloaded" "$WORK/log" | sed 's/.*generation=/  generation=/'
