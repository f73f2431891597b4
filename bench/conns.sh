#!/bin/sh
# Runs bench/conns against build/examples/echo-server in another process.
# Usage: bench/conns.sh BUILD_DIR [N]
set -eu
build=${1:-build}
n=${2:-10000}
out=$(mktemp)
pid=
trap 'rm -f "$out"; [ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
# Each side holds N descriptors; the hard limit here is 20,000.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$build/examples/echo-server" 127.0.0.1:0 >"$out" &
pid=$!
i=0
until grep -q '^listening on ' "$out"; do
    i=$((i + 1)); [ "$i" -le 50 ] || { echo "echo-server did not start" >&2; exit 1; }
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$out")
echo "echo-server $addr (pid $pid), $n clients in a second process"
"$build/bench/conns" -n "$n" "$addr" "$pid"
kill -TERM "$pid"
wait "$pid"
pid=
