#!/bin/sh
# The Node.js package (examples/node: sockmsg.js, echo-client.js,
# package.json) against the C echo server, as npm installs it: `npm pack`
# of the folder, `npm install` of that tarball into a scratch project
# (offline: the package has no dependencies), and every test on the
# installed copy, never the source folder.
#
#   sh tests/node.sh BUILD_DIR         (make check passes it; needs
#                                       BUILD_DIR/examples/echo-server)
#
# 0. the package: the tarball holds package.json, README.md, sockmsg.js and
#    echo-client.js; require('sockmsg') from the project resolves to the
#    installed copy (not a link to the tree), identical to the source, at
#    libsockmsg's version (include/sockmsg/sockmsg.h)
# 1. the installed echo-client.js with messages on the command line, then
#    on stdin: each reply printed on its own line, the empty message and
#    UTF-8 too.
# 2. tests/node/sockmsg.test.js (node:test) on the installed module
#    (SOCKMSG_MODULE): the Decoder fed by hand (any split, no copy within a
#    chunk, a header over the maximum, truncation, memory that follows the
#    bytes received), then against the echo server: 0 bytes to 1 MiB,
#    three messages in one write, and back-pressure from an unread Decoder
#    to the socket and the sender.
#
# Skipped with a note when node or npm is not installed (make deps installs
# nodejs), or failed if SM_REQUIRE_TOOLS is set (as .ci/run does).  npm
# works in the scratch directory (its cache too) and never asks a registry.
# The server listens on 127.0.0.1 port 0; every program runs under
# timeout(1), and the server is stopped by its PID.
set -eu

build=${1:?usage: sh tests/node.sh BUILD_DIR}
[ -d "$build" ] || { echo "node peer: FAIL: no directory $build" >&2; exit 1; }
build=$(cd "$build" && pwd)
cd "$(dirname "$0")/.."
limit=60 # seconds any one program may run

fail() {
    printf "node peer: FAIL: %s\n" "$*" >&2
    exit 1
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node peer: skipped: node or npm is not installed (make deps installs nodejs)"
    [ -z "${SM_REQUIRE_TOOLS:-}" ] || fail "SM_REQUIRE_TOOLS is set: not skipping"
    exit 0
fi
[ -x "$build/examples/echo-server" ] ||
    fail "no $build/examples/echo-server (build it: make BUILD=$build all)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-node.XXXXXX") || fail "mktemp -d"
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# 0. npm pack, npm install of the tarball, and what got installed.
part() { sed -n "s/^#define SM_VERSION_$1 \([0-9][0-9]*\).*/\1/p" include/sockmsg/sockmsg.h; }
version=$(part MAJOR).$(part MINOR).$(part PATCH)
npm_config_cache=$tmp/npm-cache
npm_config_update_notifier=false
export npm_config_cache npm_config_update_notifier
mkdir "$tmp/app"
timeout "$limit" npm pack ./examples/node --pack-destination "$tmp" --json >"$tmp/pack.json" 2>"$tmp/pack.err" ||
    { cat "$tmp/pack.err" >&2; fail "npm pack ./examples/node"; }
tarball=$tmp/sockmsg-$version.tgz
[ -f "$tarball" ] || fail "npm pack did not make sockmsg-$version.tgz (package.json's version must be libsockmsg's)"
files=$(tar -tzf "$tarball" | sort | tr '\n' ' ')
[ "$files" = "package/README.md package/echo-client.js package/package.json package/sockmsg.js " ] ||
    fail "the npm package holds: $files"
(cd "$tmp/app" && timeout "$limit" npm install --offline --no-audit --no-fund --no-save "$tarball") \
    >"$tmp/npm-install.log" 2>&1 || { cat "$tmp/npm-install.log" >&2; fail "npm install $tarball"; }
module=$(cd "$tmp/app" && node -p "require.resolve('sockmsg')") || fail "require('sockmsg') after npm install"
[ "$module" = "$(realpath "$tmp/app/node_modules/sockmsg/sockmsg.js")" ] ||
    fail "require('sockmsg') resolved to $module, not the installed copy"
pkgdir=$(dirname "$module")
cmp -s examples/node/sockmsg.js "$module" || fail "the installed sockmsg.js differs from examples/node/sockmsg.js"
got=$(node -p "require('$pkgdir/package.json').version")
[ "$got" = "$version" ] || fail "the npm package's version is $got, libsockmsg's $version"

timeout "$limit" "$build/examples/echo-server" 127.0.0.1:0 >"$tmp/server.out" 2>"$tmp/server.err" &
pid=$!
i=0
until grep -q '^listening on ' "$tmp/server.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.err" >&2; fail "echo-server exited"; }
    i=$((i + 1))
    [ "$i" -le 100 ] || fail "echo-server did not say where it listens within 10 s"
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$tmp/server.out" | head -n 1)

# run NAME COMMAND...: it must exit 0 with nothing on stderr.
run() {
    name=$1
    shift
    st=0
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || st=$?
    [ "$st" -eq 0 ] || { cat "$tmp/$name.out" "$tmp/$name.err" >&2; fail "$name exited with status $st"; }
    [ ! -s "$tmp/$name.err" ] || { cat "$tmp/$name.err" >&2; fail "$name wrote to stderr"; }
}

# 1. echo-client.js: arguments, then stdin.
run "echo-client" node "$pkgdir/echo-client.js" "$addr" hello "" "café, 2 €"
printf 'hello\n\ncafé, 2 €\n' | cmp -s - "$tmp/echo-client.out" ||
    fail "echo-client.js printed '$(cat "$tmp/echo-client.out")', expected hello, an empty line, café, 2 €"
printf 'one\ntwo\n' >"$tmp/want"
run "echo-client-stdin" node "$pkgdir/echo-client.js" "$addr" <"$tmp/want"
cmp -s "$tmp/want" "$tmp/echo-client-stdin.out" ||
    fail "echo-client.js with stdin printed '$(cat "$tmp/echo-client-stdin.out")'"

# 2. sockmsg.js's tests.  node:test prints TAP when not on a terminal.
SOCKMSG_ADDR=$addr SOCKMSG_MODULE=$module run "sockmsg.test.js" node tests/node/sockmsg.test.js
pass=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$tmp/sockmsg.test.js.out")
failed=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$tmp/sockmsg.test.js.out")
skipped=$(sed -n 's/^# skipped \([0-9][0-9]*\)$/\1/p' "$tmp/sockmsg.test.js.out")
if [ -z "$pass" ] || [ "$failed" != 0 ] || [ "${skipped:-0}" != 0 ]; then
    cat "$tmp/sockmsg.test.js.out" >&2
    fail "sockmsg.test.js: pass ${pass:-?}, fail ${failed:-?}, skipped ${skipped:-?}"
fi

kill -TERM "$pid" 2>/dev/null || true
st=0
wait "$pid" || st=$?
pid=
[ "$st" -eq 0 ] || fail "echo-server exited with status $st after SIGTERM"
echo "node peer: ok (npm package $version installed, echo-client.js 2 runs, sockmsg.test.js $pass tests)"
