#!/usr/bin/env bash
# tlsedge vs HAProxy vs nginx (stream): server CPU per connection/request, throughput, latency,
# idle memory; plus tlsedge-only scenarios (certificate rotation, 10,000 hosts).
#
#   benches/compare/run.sh --smoke          # ~1 s per scenario, one round: proves it all works
#   benches/compare/run.sh                  # 5 interleaved rounds of 10 s: writes benches/RESULTS.md
#
# Options: --rounds N  --duration SECONDS  --idle "2000 10000"  --only "tlsedge haproxy nginx floor"
#          --no-extra (skip scenarios 6 and 7)  --keep (keep the work directory)
#          --micro / --no-micro (run `cargo bench --bench micro` on CPU 0 and add it to the report;
#          default: on for full runs, off for --smoke)
#          --cores 2 (every process on both cores, two workers per contender: writes
#          benches/RESULTS-2cores.md; scenarios 6 and 7 and the micro-benchmarks are skipped)
# Environment: WORK=dir (default: a fresh /tmp/tlsedge-compare.*), PORT_BASE (default 28000).
# See benches/README.md for what is measured and how.
set -euo pipefail

SMOKE=0 ROUNDS=5 DUR=10 IDLE_COUNTS="" ONLY="tlsedge haproxy nginx floor" EXTRA=1 KEEP=0 MICRO=
CORES=1
while (($#)); do
    case $1 in
        --smoke) SMOKE=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --idle) IDLE_COUNTS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --no-extra) EXTRA=0 ;;
        --keep) KEEP=1 ;;
        --micro) MICRO=1 ;;
        --no-micro) MICRO=0 ;;
        --cores) CORES=$2; shift ;;
        -h|--help) sed -n 2,13p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case $CORES in
    1) ;;
    2) EXTRA=0 MICRO=0 ;;
    *) echo "--cores: 1 or 2" >&2; exit 2 ;;
esac
export CORES
if ((SMOKE)); then ROUNDS=1 DUR=1 IDLE_COUNTS=${IDLE_COUNTS:-"500 2000"} MICRO=${MICRO:-0}; fi
MICRO=${MICRO:-1}
IDLE_COUNTS=${IDLE_COUNTS:-"2000 10000"}

# Tools, build, PKI, backends and the measuring helpers: see lib.sh.
EXTRA_TOOLS="wrk unshare"
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/compare/lib.sh
source "$HERE/lib.sh"
# PKI for scenarios 6 and 7 only: a wildcard certificate and two certificates to rotate.
gen_leaf wildcard ec ca-ecdsa "*.bench.test"
gen_leaf rot1 ec ca-ecdsa a.bench.test
gen_leaf rot2 ec ca-ecdsa a.bench.test

# ---------------------------------------------------------------- contenders (CPU 0)
# `default_host`: openssl s_time sends no SNI (HAProxy and nginx then serve their first
# certificate, the floor its a.test one: all a.bench.test's ECDSA certificate).
{
    echo "default_host: a.bench.test"
    bench_hosts
} | write_tlsedge_config "$WORK/tlsedge.yaml"

# The naive floor (../shared/tools/rustls-floor), built outside the repository. It picks a
# certificate for the names a.test/b.test only (a.test's for any other name), so both slots
# get the ECDSA certificate that covers both bench names, as nginx does.
if [[ " $ONLY " == *" floor "* ]]; then
    FLOOR_SRC=$(cd "$ROOT/../shared/tools/rustls-floor" && pwd)
    mkdir -p "$WORK/floor-build" "$WORK/floor-certs"
    cp -r "$FLOOR_SRC" "$WORK/floor-build/"
    log "building the floor (rustls-floor; build cached in target/rustls-floor)"
    (cd "$WORK/floor-build/rustls-floor" && CARGO_TARGET_DIR="$ROOT/target/rustls-floor" nice -n 19 cargo build --release -q)
    FLOOR="$ROOT/target/rustls-floor/release/rustls-floor"
    FLOOR_CERTS="$WORK/floor-certs"
    for n in a b; do
        cp "$PKI/both.ecdsa.pem" "$FLOOR_CERTS/$n.test.crt"
        cp "$PKI/both.ecdsa.key" "$FLOOR_CERTS/$n.test.key"
    done
fi

haproxy_config "$WORK/haproxy/haproxy.cfg" tcp

mkdir -p "$WORK/nginx/logs"
{
    echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    nginx_preamble "$WORK/nginx" "$THREADS"
    cat <<EOF
stream {
    upstream backends {
        server 127.0.0.1:$BACKEND1;
        server 127.0.0.1:$BACKEND2;
    }
    server {
        listen 127.0.0.1:$TLS_PORT ssl backlog=4096;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $PKI/both.ecdsa.pem;
        ssl_certificate_key $PKI/both.ecdsa.key;
        ssl_certificate $PKI/both.rsa.pem;
        ssl_certificate_key $PKI/both.rsa.key;
        proxy_timeout 600s;
        proxy_pass backends;
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

# ---------------------------------------------------------------- outside clients (CPU 1)
# wrk takes the SNI name from the URL: it runs in a private mount namespace whose /etc/hosts
# maps the bench names to 127.0.0.1 (the machine's /etc/hosts is not touched).
printf '127.0.0.1 a.bench.test b.bench.test\n' >"$WORK/hosts"
WITH_NAMES=(unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/hosts")
# wrk, one thread. Args: label connections path [header]
wrk_client() {
    local header=()
    [[ -z ${4:-} ]] || header=(-H "$4")
    taskset -c $CLIENT_CPU python3 "$HERE/clients.py" wrk -- \
        "${WITH_NAMES[@]}" wrk -t1 -c"$2" -d"${DUR}s" "${header[@]}" -s "$HERE/wrk-json.lua" "https://a.bench.test:$TLS_PORT$3"
}
# wrk closing every connection: each request is a new TLS connection, which wrk resumes.
wrk_close_client() { wrk_client "$1" "$2" "$3" "Connection: close"; }
# openssl s_time -new (full handshakes, no SNI), N copies in parallel. Args: label copies
stime_client() {
    taskset -c $CLIENT_CPU python3 "$HERE/clients.py" stime --procs "$2" -- \
        openssl s_time -connect "127.0.0.1:$TLS_PORT" -new -www /small -time "$DUR" -no-CAfile -no-CApath -no-CAstore
}

# ---------------------------------------------------------------- scenarios 1-5, interleaved
# `tag|args` runs the load generator; `tag|client|args` an outside client.
SCENARIOS=(
    "full-ecdsa|full --sig ecdsa --workers 16"
    "full-rsa|full --sig rsa --workers 16"
    "resumed|resumed --sig ecdsa --workers 8"
    "keepalive|keepalive --conns 50"
    "bulk|bulk --conns 4 --path /1m"
    "full-ecdsa-stime|stime_client|8"
    "resumed-wrk|wrk_close_client|50 /small"
    "keepalive-wrk|wrk_client|50 /small"
    "bulk-wrk|wrk_client|4 /1m"
)
for ((round = 1; round <= ROUNDS; round++)); do
    for who in $ONLY; do
        log "round $round/$ROUNDS: $who"
        start_contender "$who"
        for s in "${SCENARIOS[@]}"; do
            IFS='|' read -r tag first rest <<<"$s"
            if [[ -n $rest ]]; then
                # shellcheck disable=SC2086
                measure_with "$first" "$who" "$round" "$tag" $rest
            elif [[ $who == floor && $tag == full-rsa ]]; then
                continue # the floor serves one ECDSA certificate per name
            else
                # shellcheck disable=SC2086
                measure "$who" "$round" "$tag" $first --duration "${DUR}s"
            fi
        done
        stop_contender
        for k in "${idle_list[@]}"; do measure_idle "$who" "$round" "$k"; done
    done
done

# ---------------------------------------------------------------- scenario 6: rotation (tlsedge)
if ((EXTRA)) && [[ " $ONLY " == *" tlsedge "* ]]; then
    mkdir -p "$WORK/rot"
    cp "$PKI/rot1.combined.pem" "$WORK/rot/a.pem"
    chmod 600 "$WORK/rot/a.pem"
    {
        cat <<EOF
reload:
  debounce: 50ms
  max_delay: 100ms
hosts:
EOF
        tlsedge_host a.bench.test "$WORK/rot/a.pem:$WORK/rot/a.pem"
    } | write_tlsedge_config "$WORK/rot.yaml"
    rotate() { # every 100 ms: write a temporary file, then rename it over the served one
        local i=0
        while :; do
            i=$((i + 1))
            cp "$PKI/rot$((i % 2 + 1)).combined.pem" "$WORK/rot/.a.pem.tmp"
            mv -f "$WORK/rot/.a.pem.tmp" "$WORK/rot/a.pem"
            sleep 0.1
        done
    }
    for ((round = 1; round <= ROUNDS; round++)); do
        for mode in steady rotating; do
            log "scenario 6, round $round: $mode"
            start_contender tlsedge "$WORK/rot.yaml"
            a0=$(tlsedge_metric_sum tlsedge_config_reloads_total 'result="applied"')
            p0=$(tlsedge_metric_sum tlsedge_config_reloads_total 'result="(partial|rejected)"')
            rpid=""
            if [[ $mode == rotating ]]; then
                # The writer (an operator's cp + mv) runs at the lowest priority so its process
                # spawns do not delay the load generator it shares a core with.
                taskset -c $CLIENT_CPU nice -n 19 bash -c "$(declare -f rotate); WORK=$WORK PKI=$PKI; rotate" &
                rpid=$!
            fi
            measure "tlsedge" "$round" "rotation-$mode" full --sig ecdsa --workers 16 --sni a.bench.test --duration "${DUR}s"
            [[ -n $rpid ]] && stop_pid "$rpid"
            a1=$(tlsedge_metric_sum tlsedge_config_reloads_total 'result="applied"')
            p1=$(tlsedge_metric_sum tlsedge_config_reloads_total 'result="(partial|rejected)"')
            attach "rotation-$mode" "$round" --argjson a $((a1 - a0)) --argjson p $((p1 - p0)) '. + {reloads_applied: $a, reloads_other: $p}'
            log "  reloads applied $((a1 - a0)), partial/rejected $((p1 - p0))"
            stop_contender
        done
    done
fi

# ---------------------------------------------------------------- scenario 7: 100,000 hosts (tlsedge)
if ((EXTRA)) && [[ " $ONLY " == *" tlsedge "* ]]; then
    HOSTS=${HOSTS:-100000}
    for count in 1 $HOSTS; do
        {
            echo "reload:"
            echo "  watch: false"
            echo "hosts:"
            awk -v n="$count" -v cert="$PKI/wildcard.pem" -v key="$PKI/wildcard.key" \
                -v b1="$BACKEND1" -v b2="$BACKEND2" 'BEGIN {
                for (i = 0; i < n; i++)
                    printf "  - names: [h%d.bench.test]\n    certs:\n      - { cert: %s, key: %s }\n    backends:\n      - { address: \"127.0.0.1:%s\" }\n      - { address: \"127.0.0.1:%s\" }\n    balance: round_robin\n", i, cert, key, b1, b2
            }'
        } | write_tlsedge_config "$WORK/hosts-$count.yaml"
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for count in 1 $HOSTS; do
            log "scenario 7, round $round: $count host(s)"
            export TLSEDGE_LOG="warn,tlsedge::reload=info"
            t0=$(now_ms)
            start_contender tlsedge "$WORK/hosts-$count.yaml"
            t1=$READY_MS
            curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null
            rss=$(rss_kib "$CONTENDER_PID")
            # Reloads: change the file's bytes, SIGHUP, wait for the "configuration reloaded" log.
            # Ten in a row: the first shows the cost, the next ones whether memory keeps growing.
            reloads=()
            rss_reload=()
            for rl in 1 2 3 4 5 6 7 8 9 10; do
                before=$(grep -c "configuration reloaded" "$CONTENDER_LOG" || true)
                echo "# touched $round.$rl" >>"$WORK/hosts-$count.yaml"
                r0=$(now_ms)
                kill -HUP "$CONTENDER_PID"
                deadline=$((SECONDS + 120))
                while (($(grep -c "configuration reloaded" "$CONTENDER_LOG" || true) <= before)) && ((SECONDS < deadline)); do
                    sleep 0.005
                done
                r1=$(now_ms)
                reloads+=($((r1 - r0)))
                sleep 0.2
                rss_reload+=("$(rss_kib "$CONTENDER_PID")")
            done
            reload_median=$(printf '%s\n' "${reloads[@]}" | sort -n | sed -n 5p)
            # What the allocator keeps once it has returned freed pages (jemalloc: after 10 s).
            sleep 12
            rss_settled=$(rss_kib "$CONTENDER_PID")
            measure "tlsedge" "$round" "hosts-$count" full --sig ecdsa --workers 16 --sni 'h{}.bench.test' --sni-count "$count" --duration "${DUR}s"
            attach "hosts-$count" "$round" --argjson hosts "$count" --argjson start_ms $((t1 - t0)) \
                --argjson reload_ms "$reload_median" --argjson reload_first_ms "${reloads[0]}" \
                --argjson rss "$rss" --argjson rss1 "${rss_reload[0]}" --argjson rss10 "${rss_reload[9]}" \
                --argjson settled "$rss_settled" \
                '. + {hosts: $hosts, startup_ms: $start_ms, reload_ms: $reload_ms, reload_first_ms: $reload_first_ms,
                      rss_start_kib: $rss, rss_after_reload_kib: $rss1, rss_after_10_reloads_kib: $rss10,
                      rss_settled_kib: $settled}'
            log "  start-up $((t1 - t0)) ms, reloads ${reloads[*]} ms, RSS $rss KiB, after reloads ${rss_reload[*]} KiB, settled $rss_settled KiB"
            stop_contender
            unset TLSEDGE_LOG
        done
    done
fi

# ---------------------------------------------------------------- micro-benchmarks
if ((MICRO)); then
    log "micro-benchmarks: cargo bench --bench micro (CPU $SERVER_CPU)"
    export MICRO_SINCE
    MICRO_SINCE=$(date +%s)
    if (cd "$ROOT" && taskset -c $SERVER_CPU cargo bench --bench micro >"$WORK/micro.log" 2>&1); then
        export MICRO_DIR="$ROOT/target/criterion"
    else
        log "micro-benchmarks failed: see $WORK/micro.log"
    fi
fi

# ---------------------------------------------------------------- report
export_report_env
REPORT="$WORK/RESULTS.md"
python3 "$ROOT/benches/compare/report.py" "$RESULTS" >"$REPORT"
cat "$REPORT"
if ((SMOKE)); then
    log "smoke run: benches/RESULTS.md not written (report above; raw lines in $RESULTS)"
else
    OUT=benches/RESULTS.md
    ((CORES == 1)) || OUT=benches/RESULTS-${CORES}cores.md
    cp "$REPORT" "$ROOT/$OUT"
    log "wrote $OUT"
fi
