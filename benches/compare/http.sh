#!/usr/bin/env bash
# HTTP mode: tlsedge `mode: http` vs HAProxy `mode http` vs nginx `http` (proxy_pass), each
# terminating TLS + HTTP/1.1 or HTTP/2 (by ALPN) and proxying every request to two nginx
# backends over pooled keep-alive HTTP/1.1 connections: server CPU per request, req/s,
# latency, 1 MiB throughput, memory per idle HTTP/2 connection; plus tlsedge `mode: tcp` on
# the new-connection scenario (HTTP/L4 ratio).
#
#   benches/compare/http.sh --smoke     # ~1 s per scenario, one round: proves it all works
#   benches/compare/http.sh             # 3 interleaved rounds of 10 s: appends to benches/RESULTS.md
#
# Options: --rounds N  --duration SECONDS  --idle K (idle HTTP/2 connections, default 2000)
#          --only "tlsedge haproxy nginx"  --keep (keep the work directory)
#          --profile (after the rounds: perf record -g on tlsedge during h1-keepalive,
#          h2-keepalive and h1-newconn; reports in the work directory, implies --keep)
# Environment: WORK=dir, PORT_BASE (default 28000), TLSEDGE_BIN. See benches/README.md.
set -euo pipefail

SMOKE=0 ROUNDS=3 DUR=10 IDLE_K="" ONLY="tlsedge haproxy nginx" KEEP=0 PROFILE=0
while (($#)); do
    case $1 in
        --smoke) SMOKE=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --idle) IDLE_K=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --keep) KEEP=1 ;;
        --profile) PROFILE=1 KEEP=1 ;;
        -h|--help) sed -n 2,15p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if ((SMOKE)); then ROUNDS=1 DUR=1 IDLE_K=${IDLE_K:-500}; fi
IDLE_COUNTS=${IDLE_K:-2000}
EXTRA_TOOLS="wrk h2load unshare"

# Tools, build, PKI, backends and the measuring helpers: see lib.sh.
# shellcheck source=benches/compare/lib.sh
source "$(dirname "$0")/lib.sh"
HERE="$ROOT/benches/compare"

# ---------------------------------------------------------------- contenders (CPU 0)
# tlsedge, mode http: two hosts (ECDSA + RSA certificate each), `http: {}` defaults (ALPN h2,
# http/1.1; HTTP/1.1 to the backends; X-Forwarded-* and a request id added to each request).
bench_hosts "mode: http" "http: {}" | write_tlsedge_config "$WORK/tlsedge-http.yaml"
# tlsedge, mode tcp (layer 4, as in run.sh): the reference for the new-connection scenario.
bench_hosts | write_tlsedge_config "$WORK/tlsedge-l4.yaml"

haproxy_config "$WORK/haproxy-http/haproxy.cfg" http "alpn h2,http/1.1" "$(printf '    %s\n' \
    "option http-keep-alive" "http-reuse always" "timeout http-keep-alive 600s")"

mkdir -p "$WORK/nginx-http/logs" "$WORK/nginx-http/temp"
{
    nginx_preamble "$WORK/nginx-http" "$THREADS"
    cat <<EOF
http {
    access_log off;
    # The client-side keep-alive limits would otherwise close a connection every 1,000 requests.
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_temp_path $WORK/nginx-http/temp/body;
    proxy_temp_path $WORK/nginx-http/temp/proxy;
    upstream backends {
        server 127.0.0.1:$BACKEND1;
        server 127.0.0.1:$BACKEND2;
        keepalive 32;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$TLS_PORT ssl http2 backlog=4096;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $PKI/both.ecdsa.pem;
        ssl_certificate_key $PKI/both.ecdsa.key;
        ssl_certificate $PKI/both.rsa.pem;
        ssl_certificate_key $PKI/both.rsa.key;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx-http/nginx.conf"

# The contender's label → start_contender arguments.
start_args() {
    case $1 in
        tlsedge) echo "tlsedge $WORK/tlsedge-http.yaml" ;;
        tlsedge-l4) echo "tlsedge $WORK/tlsedge-l4.yaml" ;;
        haproxy) echo "haproxy $WORK/haproxy-http/haproxy.cfg" ;;
        nginx) echo "nginx $WORK/nginx-http/nginx.conf" ;;
    esac
}

# ---------------------------------------------------------------- outside clients (CPU 1)
# wrk and h2load take the SNI name from the URL: they run in a private mount namespace whose
# /etc/hosts maps the bench names to 127.0.0.1 (the machine's /etc/hosts is not touched).
printf '127.0.0.1 a.bench.test b.bench.test\n' >"$WORK/hosts"
WITH_NAMES=(unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/hosts")
# wrk, one thread, HTTP/1.1 keep-alive. Args: label connections path
wrk_client() {
    taskset -c $CLIENT_CPU python3 "$HERE/clients.py" wrk -- \
        "${WITH_NAMES[@]}" wrk -t1 -c"$2" -d"${DUR}s" -s "$HERE/wrk-json.lua" "https://a.bench.test:$TLS_PORT$3"
}
# h2load, one thread, ALPN h2, TLS 1.3 cipher pinned to the loadgen's (its default list starts
# with AES-128, which servers honouring the client's order pick). Args: label connections
# streams-per-connection path
h2load_client() {
    local log="$WORK/h2load.log"
    taskset -c $CLIENT_CPU python3 "$HERE/clients.py" h2load --log "$log" -- \
        "${WITH_NAMES[@]}" h2load -t1 -c"$2" -m"$3" -D "$DUR" --tls13-ciphers=TLS_AES_256_GCM_SHA384 --log-file="$log" "https://a.bench.test:$TLS_PORT$4"
}

# ---------------------------------------------------------------- scenarios, interleaved
# tag|client|args (loadgen_client gets --duration too)
SCENARIOS=(
    "h1-keepalive|wrk_client|50 /small"
    "h1-keepalive-loadgen|loadgen_client|keepalive --conns 50"
    "h2-keepalive|h2load_client|50 10 /small"
    "h1-newconn|loadgen_client|full --sig ecdsa --workers 16"
    "h1-1m|loadgen_client|bulk --conns 4 --path /1m"
    "h1-1m-wrk|wrk_client|4 /1m"
)
run_scenario() { # contender round scenario
    local who=$1 round=$2 tag=${3%%|*} rest=${3#*|} client args
    client=${rest%%|*}
    args=${rest#*|}
    [[ $client == loadgen_client ]] && args="$args --duration ${DUR}s"
    # shellcheck disable=SC2086
    measure_with "$client" "$who" "$round" "$tag" $args
}
contenders=()
for who in $ONLY; do
    contenders+=("$who")
    [[ $who == tlsedge ]] && contenders+=(tlsedge-l4)
done
for ((round = 1; round <= ROUNDS; round++)); do
    for who in "${contenders[@]}"; do
        log "round $round/$ROUNDS: $who"
        # shellcheck disable=SC2046
        start_contender $(start_args "$who")
        for s in "${SCENARIOS[@]}"; do
            # tlsedge in mode tcp only for the HTTP/L4 comparison of new connections.
            [[ $who == tlsedge-l4 && $s != h1-newconn* ]] && continue
            run_scenario "$who" "$round" "$s"
        done
        stop_contender
        [[ $who == tlsedge-l4 ]] && continue
        for k in "${idle_list[@]}"; do
            measure_idle "$who" "$round" "$k" "idle-h2-$k" "$(start_args "$who")" --alpn h2
        done
    done
done
# nginx buffers a response that outruns its proxy buffers to a temporary file: say how often.
export NGINX_TEMP_FILES
NGINX_TEMP_FILES=$(grep -c "buffered to a temporary file" "$WORK/nginx-http/logs/error.log" 2>/dev/null || true)

# ---------------------------------------------------------------- optional profile (tlsedge)
if ((PROFILE)) && [[ " $ONLY " == *" tlsedge "* ]]; then
    for s in "${SCENARIOS[@]}"; do
        case ${s%%|*} in h1-keepalive | h2-keepalive | h1-newconn) ;; *) continue ;; esac
        tag=${s%%|*}
        log "profile: tlsedge $tag"
        # shellcheck disable=SC2046
        start_contender $(start_args tlsedge)
        perf record -g -o "$WORK/perf-$tag.data" -p "$CONTENDER_PID" 2>"$WORK/perf-$tag.log" &
        perf_pid=$!
        sleep 0.5
        run_scenario tlsedge 0 "$s"
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        # To files, not through head: with pipefail, perf's SIGPIPE would end the script.
        perf report -i "$WORK/perf-$tag.data" --no-children --sort dso,sym --stdio -g none \
            >"$WORK/perf-$tag.txt" 2>/dev/null || true
        perf report -i "$WORK/perf-$tag.data" --no-children --sort dso --stdio -g none \
            >"$WORK/perf-$tag.dso.txt" 2>/dev/null || true
        stop_contender
        log "  $WORK/perf-$tag.txt"
    done
    # The profiled runs are round 0: left out of the report.
    sed -i '/"round":0,/d' "$RESULTS"
fi

# ---------------------------------------------------------------- report
export_report_env
REPORT="$WORK/RESULTS-http.md"
python3 "$HERE/http_report.py" "$RESULTS" >"$REPORT"
cat "$REPORT"
if ((SMOKE)); then
    log "smoke run: benches/RESULTS.md not written (report above; raw lines in $RESULTS)"
else
    { echo; cat "$REPORT"; } >>"$ROOT/benches/RESULTS.md"
    log "appended to benches/RESULTS.md"
fi
