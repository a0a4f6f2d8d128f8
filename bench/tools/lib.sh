# bench/tools/lib.sh: what bench/{gateway,functions,auth}/run share. Sourced,
# not run. It builds the Release tree when needed, gives every run a scratch
# directory, starts servers in their own process groups and stops them all on
# exit (trap), and measures with wrk: each figure is the median of
# RW_BENCH_RUNS runs (3), because the machine may be shared.
# Environment: RW_BENCH_BUILD (build dir, build-release), RW_BENCH_RUNS (3),
# RW_BENCH_SECONDS (per wrk run, 5), RW_BENCH_KEEP (1: keep the scratch dir).
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${RW_BENCH_BUILD:-$root/build-release}
runs=${RW_BENCH_RUNS:-3}
secs=${RW_BENCH_SECONDS:-5}
cores=$(nproc)
reelway=$build/gateway/reelway
work=$(mktemp -d "${TMPDIR:-/tmp}/rw-bench.XXXXXX")
groups=() # process groups started here (each leader's pid)

bench_cleanup() {
    local g i
    for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    # reelway stops its workers, environments and local database on SIGTERM;
    # whatever is still there after 15 s is killed.
    for i in $(seq 150); do
        local alive=0
        for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    if [ "${RW_BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "$bench: $*" >&2; exit 1; }

need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "$t is missing: run scripts/setup --bench"
    done
}

# Builds the given targets in the Release tree (configured on first use).
build_targets() {
    if [ ! -f "$build/CMakeCache.txt" ]; then
        cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DREELWAY_TESTS=OFF >/dev/null
    fi
    cmake --build "$build" -j2 --target "$@" >/dev/null
}

# Runs a command in the background in its own process group, logging to
# $work/NAME.log; its pid (and group) is in $started.
start_group() {
    local name=$1
    shift
    setsid "$@" >"$work/$name.log" 2>&1 </dev/null &
    started=$!
    groups+=("$started")
}

stop_group() {
    local g=$1 i
    kill -TERM -- "-$g" 2>/dev/null || true
    for i in $(seq 150); do kill -0 -- "-$g" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_reelway NAME TEMPLATE WORKERS [serve options...]: sets rw_port and
# rw_pid (the supervisor). Access log off, as nginx's. A command in the
# rw_wrap array (e.g. taskset -c 1) runs it.
rw_wrap=()
start_reelway() {
    local name=$1 template=$2 workers=$3 i
    shift 3
    rm -f "$work/$name.port"
    start_group "$name" "${rw_wrap[@]}" env REELWAY_ACCESS_LOG=0 "$reelway" serve --host 127.0.0.1 --port 0 \
        --port-file "$work/$name.port" --data-dir "$work/$name" --workers "$workers" \
        --template "$template" "$@"
    rw_pid=$started
    for i in $(seq 600); do
        [ -s "$work/$name.port" ] && break
        kill -0 "$rw_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$work/$name.port" ] || { tail -30 "$work/$name.log" >&2; die "reelway ($name) did not start"; }
    rw_port=$(cat "$work/$name.port")
}

# wait_http URL [seconds]: until URL answers 2xx.
wait_http() {
    local i
    for i in $(seq $(( ${2:-30} * 10 ))); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "$1 did not answer"
}

median() { sort -g | awk 'NF {v[++n]=$1} END {if (n) print v[int((n+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b > 0) ? a / b : 0}'; }
spread() { sort -g | awk 'NF {v[++n]=$1} END {if (n) printf "%s..%s", v[1], v[n]}'; }

# wrk_once URL CONNS [wrk options...]: Requests/sec of one run; any non-2xx
# answer or socket error fails the benchmark (a fast error is no figure).
wrk_once() {
    local url=$1 conns=$2 threads=$cores out
    shift 2
    [ "$conns" -lt "$threads" ] && threads=$conns
    out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s "$@" "$url" 2>&1) || die "wrk failed: $out"
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        echo "$out" >&2
        die "errors from $url (above)"
    fi
    local rps
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    if ! awk -v r="$rps" 'BEGIN{exit !(r + 0 > 0)}'; then
        echo "$out" >&2
        die "no answers from $url (above)"
    fi
    echo "$rps"
}

# wrk_median URL CONNS [wrk options...]: the median of $runs runs; the runs'
# spread goes to $work/spread (read by say_spread).
wrk_median() {
    local all i
    all=$(for i in $(seq "$runs"); do wrk_once "$@"; done)
    spread <<<"$all" >"$work/spread"
    median <<<"$all"
}
say_spread() { cat "$work/spread"; }

# The resident memory (kB) of reelway: the supervisor and its workers (not the
# local database, not the functions' environments).
reelway_rss_kb() {
    local sup=$1 p total=0 kb
    for p in "$sup" $(pgrep -P "$sup" -x reelway || true); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$(( total + ${kb:-0} ))
    done
    echo "$total"
}

# The resident memory (kB) of nginx: master and workers.
nginx_rss_kb() {
    local master=$1 p total=0 kb
    for p in "$master" $(pgrep -P "$master" || true); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$(( total + ${kb:-0} ))
    done
    echo "$total"
}

# start_nginx NAME SERVER_BLOCK_BODY: Debian's nginx with its own config in
# $work/NAME (worker_processes = cores, access log off, no daemon); sets
# ng_port and ng_pid (the master).
start_nginx() {
    local name=$1 body=$2 dir=$work/$1
    mkdir -p "$dir"
    ng_port=$(free_port)
    cat >"$dir/nginx.conf" <<CONF
worker_processes $cores;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    fastcgi_temp_path $dir;
    uwsgi_temp_path $dir;
    scgi_temp_path $dir;
    server {
        listen 127.0.0.1:$ng_port reuseport;
$body
    }
}
CONF
    # As root, nginx's workers would switch to the nobody user: keep ours.
    [ "$(id -u)" = 0 ] && sed -i "1i user root;" "$dir/nginx.conf"
    start_group "$name" nginx -c "$dir/nginx.conf" -p "$dir"
    ng_pid=$started
}

bench_header() {
    echo "$bench: $cores cores ($(nproc --all) online), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
        "median of $runs runs, ${secs}s per wrk run"
}
