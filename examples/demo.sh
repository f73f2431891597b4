#!/bin/sh
# make demo: the tutorial's server and client on a free port.
set -eu
bin=${1:-build/examples}
out=$(mktemp)
trap 'rm -f "$out"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
"$bin/server" 127.0.0.1:0 >"$out" &
pid=$!
# Wait (at most 5 s) for the server to say where it listens.
i=0
until grep -q '^listening on ' "$out"; do
    i=$((i + 1))
    [ "$i" -le 50 ] || { echo "demo: server did not start" >&2; exit 1; }
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$out")
echo "server: listening on $addr"
echo "client: connecting to $addr"
printf 'client received: '
"$bin/client" "$addr"
wait "$pid"
pid=
echo "server: sent TEST and exited"
