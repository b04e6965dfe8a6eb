# Shared by benches/compare/run.sh (layer 4) and benches/compare/http.sh (HTTP mode); sourced,
# never run. The caller sets SMOKE, KEEP and (optionally) EXTRA_TOOLS / IDLE_COUNTS before
# sourcing; this file then installs missing tools, builds tlsedge and the load generator,
# generates the PKI, starts the nginx backends on CPU 1 and defines the measuring helpers.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PB=${PORT_BASE:-28000}
TLS_PORT=$((PB + 443)) ADMIN_PORT=$((PB + 901)) BACKEND1=$((PB + 81)) BACKEND2=$((PB + 82))
# One core each (default), or CORES=2: every process may run on both cores, and each
# contender runs THREADS=2 workers (tlsedge --workers, HAProxy nbthread, nginx
# worker_processes; the floor has one thread by construction).
CORES=${CORES:-1}
if ((CORES == 1)); then SERVER_CPU=0 CLIENT_CPU=1 THREADS=1; else SERVER_CPU=0,1 CLIENT_CPU=0,1 THREADS=2; fi
WORK=${WORK:-$(mktemp -d /tmp/tlsedge-compare.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup of what we started
cleanup() {
    local pid
    # Only this shell's own background jobs that are still running.
    for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- tools
need_apt=()
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v nginx >/dev/null || need_apt+=(nginx)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need_apt+=(libnginx-mod-stream)
for tool in openssl jq python3 curl taskset ${EXTRA_TOOLS:-}; do
    command -v "$tool" >/dev/null || need_apt+=("$tool")
done
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    pkgs=("${need_apt[@]/taskset/util-linux}")
    pkgs=("${pkgs[@]/h2load/nghttp2-client}")
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# File descriptors: an idle proxied connection costs the server two, the backend one.
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
MAX_IDLE=$(((NOFILE - 500) / 2))
IDLE_NOTE=""
idle_list=()
for k in ${IDLE_COUNTS:-}; do
    if ((k > MAX_IDLE)); then
        IDLE_NOTE="open-file limit is $NOFILE (hard limit; raising it was not permitted), so $k idle connections were capped to $MAX_IDLE"
        k=$MAX_IDLE
    fi
    idle_list+=("$k")
done

log "building tlsedge and the load generator"
(cd "$ROOT" && nice -n 19 cargo build --release --bin tlsedge -q)
# TLSEDGE_BIN=path compares another tlsedge build (e.g. an allocator or provider experiment).
TLSEDGE="${TLSEDGE_BIN:-$ROOT/target/release/tlsedge}"
LOADGEN=$(cd "$ROOT" && nice -n 19 cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "loadgen") | .executable' | tail -1)
[[ -x $LOADGEN ]] || { echo "load generator not built" >&2; exit 1; }

# ---------------------------------------------------------------- PKI (openssl)
PKI="$WORK/pki"
mkdir -p "$PKI"
gen_ca() { # name keyalg
    local args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    [[ $2 == rsa ]] && args=(-newkey rsa:2048)
    openssl req -x509 "${args[@]}" -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.pem" -days 30 \
        -subj "/CN=tlsedge bench $1" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
gen_leaf() { # stem keyalg ca san...
    local stem=$1 alg=$2 ca=$3
    shift 3
    local san
    san=$(printf 'DNS:%s,' "$@")
    local args=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    [[ $alg == rsa ]] && args=(-newkey rsa:2048)
    openssl req "${args[@]}" -nodes -keyout "$PKI/$stem.key" -out "$PKI/$stem.csr" -subj "/CN=$1" 2>/dev/null
    openssl x509 -req -in "$PKI/$stem.csr" -CA "$PKI/$ca.pem" -CAkey "$PKI/$ca.key" -CAcreateserial \
        -days 30 -out "$PKI/$stem.pem" -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "${san%,}") 2>/dev/null
    chmod 600 "$PKI/$stem.key"
    cat "$PKI/$stem.pem" "$PKI/$stem.key" >"$PKI/$stem.combined.pem" # HAProxy's crt format
    chmod 600 "$PKI/$stem.combined.pem"
}
log "generating the PKI in $PKI"
# An ECDSA CA for ECDSA leaves and an RSA CA for RSA leaves, so a client offering only one
# family of signature schemes can verify the whole chain it asks for.
gen_ca ca-ecdsa ec
gen_ca ca-rsa rsa
cat "$PKI/ca-ecdsa.pem" "$PKI/ca-rsa.pem" >"$PKI/ca.pem"
for n in a b; do
    gen_leaf "$n.ecdsa" ec ca-ecdsa "$n.bench.test"
    gen_leaf "$n.rsa" rsa ca-rsa "$n.bench.test"
done
# nginx cannot pick a certificate by SNI within one server block (stream: not without loading
# files per handshake): it gets one ECDSA + RSA pair covering both names.
gen_leaf both.ecdsa ec ca-ecdsa a.bench.test b.bench.test
gen_leaf both.rsa rsa ca-rsa a.bench.test b.bench.test

# ---------------------------------------------------------------- helpers
# Sum of utime+stime (clock ticks) over a process and its children.
pids_of() { echo "$1" $(pgrep -P "$1" || true); }
cpu_ticks() {
    local total=0 pid f
    for pid in $(pids_of "$1"); do
        f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        f=${f##*) }
        set -- $f
        total=$((total + ${12} + ${13}))
    done
    echo $total
}
rss_kib() {
    local total=0 pid v
    for pid in $(pids_of "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo $total
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# Busy ticks (user nice system irq softirq steal) of the CPUs in a list like 0 or 0,1, from
# /proc/stat.
cpu_busy() { awk -v l=",$1," '$1 ~ /^cpu[0-9]/ && index(l, "," substr($1, 4) ",") { s += $2 + $3 + $4 + $7 + $8 + $9 } END { print s + 0 }' /proc/stat; }
# irq + softirq ticks of those CPUs: kernel work (e.g. loopback receive of what the server
# sent) that is not charged to any process.
cpu_irq() { awk -v l=",$1," '$1 ~ /^cpu[0-9]/ && index(l, "," substr($1, 4) ",") { s += $7 + $8 } END { print s + 0 }' /proc/stat; }
# tlsedge's handshake counters: "resumed full".
tlsedge_handshakes() {
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
        /^tlsedge_handshakes_total\{/ { if ($0 ~ /resumed="true"/) r += $NF; else f += $NF }
        END { printf "%d %d\n", r, f }'
}
tlsedge_metric_sum() { # name [label filter regex]
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk -v n="$1" -v re="${2:-.}" '$1 ~ "^"n"([{]|$)" && $0 ~ re { s += $NF } END { printf "%d\n", s }'
}
wait_port() { # port [timeout_s]
    local deadline=$((SECONDS + ${2:-30}))
    until (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "port $1 did not open" >&2; return 1; }
        sleep 0.01
    done
}
wait_gone() { # port: wait until nothing listens
    local deadline=$((SECONDS + 15))
    while (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "port $1 still open" >&2; return 1; }
        sleep 0.05
    done
}
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- backends (nginx http, CPU 1)
mkdir -p "$WORK/backend/www" "$WORK/backend/logs"
head -c 1048576 /dev/urandom >"$WORK/backend/www/1m"
printf 'hello from a tlsedge bench backend\n' >"$WORK/backend/www/small"
chmod -R a+rX "$WORK/backend"
# The first lines of every nginx configuration here (one worker, or THREADS of them for a
# contender). Args: its prefix directory, the worker count (default 1).
nginx_preamble() {
    cat <<EOF
worker_processes ${2:-1};
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections $((NOFILE - 100)); }
EOF
}
{
    nginx_preamble "$WORK/backend" "$THREADS"
    cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$BACKEND1 backlog=4096;
        listen 127.0.0.1:$BACKEND2 backlog=4096;
        root $WORK/backend/www;
        location = /small { }
        location = /1m { }
    }
}
EOF
} >"$WORK/backend/nginx.conf"
log "starting the backends (nginx http on CPU $CLIENT_CPU, ports $BACKEND1 $BACKEND2)"
taskset -c $CLIENT_CPU nginx -p "$WORK/backend/" -c "$WORK/backend/nginx.conf" -g 'daemon off;' \
    2>>"$WORK/backend/logs/error.log" &
BACKEND_PID=$!
wait_port "$BACKEND1"
wait_port "$BACKEND2"
curl -sf "http://127.0.0.1:$BACKEND1/small" >/dev/null

# ---------------------------------------------------------------- contenders (CPU 0)
write_tlsedge_config() { # file, then host blocks on stdin
    {
        cat <<EOF
listeners: ["127.0.0.1:$TLS_PORT"]
admin:
  bind: "127.0.0.1:$ADMIN_PORT"
limits:
  max_connections: 100000
EOF
        cat
    } >"$1"
}
tlsedge_host() { # names-yaml cert-pairs...
    local names=$1
    shift
    echo "  - names: [$names]"
    echo "    certs:"
    local pair
    for pair in "$@"; do echo "      - { cert: ${pair%:*}, key: ${pair#*:} }"; done
    cat <<EOF
    backends:
      - { address: "127.0.0.1:$BACKEND1" }
      - { address: "127.0.0.1:$BACKEND2" }
    balance: round_robin
EOF
}
# The two bench hosts (ECDSA + RSA certificate each), with extra lines for each host.
# Args: extra host lines...
bench_hosts() {
    local n line
    echo "hosts:"
    for n in a b; do
        tlsedge_host "$n.bench.test" "$PKI/$n.ecdsa.pem:$PKI/$n.ecdsa.key" "$PKI/$n.rsa.pem:$PKI/$n.rsa.key"
        for line in "$@"; do echo "    $line"; done
    done
}

# HAProxy, one thread, terminating TLS for both names (it picks the certificate per SNI and per
# the client's signature algorithms) and relaying round robin to the two backends.
# Args: file mode (tcp|http) extra-bind-options extra-defaults-lines
haproxy_config() {
    mkdir -p "$(dirname "$1")"
    {
        cat <<EOF
global
    nbthread $THREADS
    maxconn $(((NOFILE - 200) / 2))
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode $2
    timeout connect 5s
    timeout client 600s
    timeout server 600s
EOF
        [[ -z ${4:-} ]] || printf '%s\n' "$4"
        cat <<EOF
frontend tls
    bind 127.0.0.1:$TLS_PORT ssl crt $PKI/a.ecdsa.combined.pem crt $PKI/a.rsa.combined.pem crt $PKI/b.ecdsa.combined.pem crt $PKI/b.rsa.combined.pem${3:+ $3}
    default_backend backends
backend backends
    balance roundrobin
    server b1 127.0.0.1:$BACKEND1
    server b2 127.0.0.1:$BACKEND2
EOF
    } >"$1"
}

CONTENDER_PID=""
CONTENDER_LOG=""
# Starts a contender pinned to CPU 0. Args: name (tlsedge, haproxy, nginx, floor) and its
# configuration file (default: $WORK/tlsedge.yaml, $WORK/haproxy/haproxy.cfg,
# $WORK/nginx/nginx.conf; nginx's prefix is the configuration file's directory).
start_contender() { # name [config]
    CONTENDER_LOG="$WORK/$1.log"
    case $1 in
        tlsedge)
            # Per-connection logs off, as for HAProxy (no `log`) and nginx (no access_log).
            RUST_LOG=${TLSEDGE_LOG:-warn} taskset -c $SERVER_CPU "$TLSEDGE" run --workers "$THREADS" --config "${2:-$WORK/tlsedge.yaml}" \
                >>"$CONTENDER_LOG" 2>&1 &
            ;;
        haproxy)
            taskset -c $SERVER_CPU haproxy -db -f "${2:-$WORK/haproxy/haproxy.cfg}" >>"$CONTENDER_LOG" 2>&1 &
            ;;
        nginx)
            local conf=${2:-$WORK/nginx/nginx.conf}
            taskset -c $SERVER_CPU nginx -p "$(dirname "$conf")/" -c "$conf" -g 'daemon off;' \
                >>"$CONTENDER_LOG" 2>&1 &
            ;;
        floor)
            LISTEN_ADDR=127.0.0.1:$TLS_PORT CERT_DIR=$FLOOR_CERTS BACKENDS=127.0.0.1:$BACKEND1,127.0.0.1:$BACKEND2 \
                taskset -c $SERVER_CPU "$FLOOR" >>"$CONTENDER_LOG" 2>&1 &
            ;;
    esac
    CONTENDER_PID=$!
    wait_port "$TLS_PORT" 120
    if [[ $1 == tlsedge ]]; then wait_port "$ADMIN_PORT"; fi
    READY_MS=$(now_ms)
    sleep 0.2 # let nginx fork its worker
}
stop_contender() {
    stop_pid "$CONTENDER_PID"
    wait_gone "$TLS_PORT"
    CONTENDER_PID=""
}

# The project's load generator on CPU 1 against the running contender. Args: label args...
loadgen_client() {
    local who=$1
    shift
    taskset -c $CLIENT_CPU "$LOADGEN" "$@" --addr "127.0.0.1:$TLS_PORT" --ca "$PKI/ca.pem" --label "$who"
}

# Runs a client (a function printing one JSON line of results in the load generator's format,
# called with the contender's label and the remaining args) against the running contender,
# measuring the contender's CPU around it, and appends one JSON line to $RESULTS.
# Args: client contender round tag client-args...
measure_with() {
    local client=$1 who=$2 round=$3 tag=$4
    shift 4
    local c0 c1 h0="0 0" h1="0 0" t0 t1 out r0 f0 r1 f1 s0 s1 b0 b1 k0 k1 q0 q1
    [[ $who == tlsedge* ]] && h0=$(tlsedge_handshakes)
    b0=$(cpu_ticks "$BACKEND_PID")
    s0=$(cpu_busy $SERVER_CPU)
    q0=$(cpu_irq $SERVER_CPU)
    k0=$(cpu_busy $CLIENT_CPU)
    c0=$(cpu_ticks "$CONTENDER_PID")
    t0=$(now_ms)
    if ! out=$("$client" "$who" "$@"); then
        log "  $who $tag: the client failed; run skipped"
        return 0
    fi
    t1=$(now_ms)
    c1=$(cpu_ticks "$CONTENDER_PID")
    s1=$(cpu_busy $SERVER_CPU)
    q1=$(cpu_irq $SERVER_CPU)
    k1=$(cpu_busy $CLIENT_CPU)
    b1=$(cpu_ticks "$BACKEND_PID")
    [[ $who == tlsedge* ]] && h1=$(tlsedge_handshakes)
    read -r r0 f0 <<<"$h0"
    read -r r1 f1 <<<"$h1"
    jq -c --arg who "$who" --arg tag "$tag" --argjson round "$round" \
        --argjson cpu_us $(((c1 - c0) * TICK_US)) --argjson wall_ms $((t1 - t0)) \
        --argjson srv_resumed $((r1 - r0)) --argjson srv_full $((f1 - f0)) --argjson has_srv "$([[ $who == tlsedge* ]] && echo true || echo false)" \
        --argjson cpu0_busy_us $(((s1 - s0) * TICK_US)) --argjson cpu1_busy_us $(((k1 - k0) * TICK_US)) \
        --argjson backend_cpu_us $(((b1 - b0) * TICK_US)) --argjson irq_us $(((q1 - q0) * TICK_US)) '
        . + {contender: $who, tag: $tag, round: $round, server_cpu_us: $cpu_us, wall_ms: $wall_ms,
             server_cpu_us_per_op: (if .ops > 0 then ($cpu_us / .ops) else null end),
             server_cpu_share: ($cpu_us / ($wall_ms * 1000)),
             backend_cpu_us: $backend_cpu_us,
             server_cpu_irq_us_per_op: (if .ops > 0 then ($irq_us / .ops) else null end),
             other_on_server_cpu: (([0, ($cpu0_busy_us - $cpu_us)] | max) / ($wall_ms * 1000)),
             other_on_client_cpu: (([0, ($cpu1_busy_us - $backend_cpu_us - (.client_cpu_us // 0))] | max) / ($wall_ms * 1000)),
             server_resumed: (if $has_srv then $srv_resumed else null end),
             server_full: (if $has_srv then $srv_full else null end)}' <<<"$out" | tee -a "$RESULTS" |
        jq -r '"  \(.contender) \(.tag): \(.ops) ops, \(.ops_per_s)/s, \(.server_cpu_us_per_op // "-" | tostring | .[0:7]) µs CPU/op, p99 \(.p99_us) µs, \(.mb_per_s) MB/s, errors \(.errors)\(if .server_resumed != null then ", server resumed/full \(.server_resumed)/\(.server_full)" else "" end)"' >&2
}
# The same with the load generator. Args: contender round tag loadgen-args...
measure() { measure_with loadgen_client "$@"; }

# Adds fields to the last result line if it is the run tagged $1 in round $2 (a failed run
# wrote no line). Args: tag round jq-args... filter
attach() {
    local tag=$1 round=$2 tmp
    shift 2
    [[ $(tail -1 "$RESULTS" | jq -r '"\(.tag) \(.round)"') == "$tag $round" ]] || return 0
    tmp=$(tail -1 "$RESULTS" | jq -c "$@")
    sed -i '$d' "$RESULTS"
    echo "$tmp" >>"$RESULTS"
}

# Idle memory on a fresh process: warm up, then hold K proxied TLS connections open.
# Args: contender-label round K [tag [start_contender-args [loadgen idle args...]]]
# (default tag idle-K; the contender started is the label up to its first "-").
measure_idle() {
    local who=$1 round=$2 k=$3 tag=${4:-idle-$3} start=${5:-} rss0 rss1 out pid line
    shift $(($# < 5 ? $# : 5))
    # shellcheck disable=SC2086
    start_contender ${start:-${who%%-*}}
    taskset -c $CLIENT_CPU "$LOADGEN" full --duration 0.3s --workers 8 --addr "127.0.0.1:$TLS_PORT" --ca "$PKI/ca.pem" >/dev/null
    sleep 0.5
    rss0=$(rss_kib "$CONTENDER_PID")
    out="$WORK/idle.out"
    : >"$out"
    taskset -c $CLIENT_CPU "$LOADGEN" idle --conns "$k" --hold 600s --addr "127.0.0.1:$TLS_PORT" \
        --ca "$PKI/ca.pem" --label "$who" "$@" >"$out" &
    pid=$!
    until [[ -s $out ]]; do
        kill -0 "$pid" 2>/dev/null || { echo "idle load generator died" >&2; break; }
        sleep 0.1
    done
    sleep 1
    rss1=$(rss_kib "$CONTENDER_PID")
    line=$(head -1 "$out")
    stop_pid "$pid"
    stop_contender
    [[ -n $line ]] || return 0
    jq -c --arg who "$who" --arg tag "$tag" --argjson round "$round" --argjson rss0 "$rss0" --argjson rss1 "$rss1" '
        . + {contender: $who, tag: $tag, round: $round, rss_before_kib: $rss0, rss_after_kib: $rss1,
             kib_per_conn: (if .ops > 0 then (($rss1 - $rss0) / .ops) else null end)}' <<<"$line" | tee -a "$RESULTS" |
        jq -r '"  \(.contender) \(.tag): \(.ops) open (errors \(.errors)), RSS \(.rss_before_kib) → \(.rss_after_kib) KiB, \(.kib_per_conn | tostring | .[0:6]) KiB/conn"' >&2
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
# The busiest processes over one second (top's second sample), to say what else was running.
busiest() { top -b -n 2 -d 1 -o %CPU -w 200 | awk '/^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 5 { printf "%s %s%%; ", $12, $9 }'; }
OTHERS_START=$(busiest)

# Exports what report.py prints in its header (versions, CPU, load, other processes).
export_report_env() {
    END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    OTHERS_END=$(busiest)
    export START_DATE START_LOAD END_LOAD OTHERS_START OTHERS_END SMOKE ROUNDS DUR IDLE_NOTE CORES
    export VER_TLSEDGE="tlsedge $(cd "$ROOT" && git describe --always --dirty 2>/dev/null) ($(rustc --version 2>/dev/null), rustls $(grep -A1 '^name = "rustls"$' "$ROOT/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p'), aws-lc-rs)"
    export VER_HAPROXY="$(haproxy -vv 2>/dev/null | head -1 | cut -d' ' -f1-3); $(haproxy -vv 2>/dev/null | grep -m1 'Running on OpenSSL' | sed 's/^ *//')"
    export VER_NGINX="$(nginx -V 2>&1 | head -1 | sed 's/^nginx version: //'); $(nginx -V 2>&1 | grep -m1 'built with OpenSSL' | sed 's/^built with //')"
    local zen=""
    [[ $(cpu_field 'cpu family') == 25 ]] && (($(cpu_field model) >= 16 && $(cpu_field model) <= 31)) && zen=", Zen 4"
    export CPU_MODEL="$(cpu_field 'model name') (family $(cpu_field 'cpu family') model $(cpu_field model)$zen; $(nproc) vCPU), kernel $(uname -r)"
}
cpu_field() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
