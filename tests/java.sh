#!/bin/sh
# The Java peer (examples/java: SockMsg.java, EchoClient.java) against the
# C echo server.
#
#   sh tests/java.sh BUILD_DIR         (make check passes it; needs
#                                       BUILD_DIR/examples/echo-server)
#
# 1. EchoClient with messages on the command line, then on stdin: each
#    reply printed on its own line, the empty message too.
# 2. tests/java/SockMsgCheck.java: messages of 0 bytes to 1 MiB echoed
#    byte for byte, three messages in one write, and SockMsg.receive's
#    errors on in-memory streams (clean close, truncation, a header over
#    the maximum, exactly the maximum).
#
# Skipped with a note when javac is not installed (make deps installs a
# JDK), or failed if SM_REQUIRE_TOOLS is set (as .ci/run does).  The server
# listens on 127.0.0.1 port 0; every program runs under timeout(1), and
# the server is stopped by its PID.
set -eu

build=${1:?usage: sh tests/java.sh BUILD_DIR}
[ -d "$build" ] || { echo "java peer: FAIL: no directory $build" >&2; exit 1; }
build=$(cd "$build" && pwd)
cd "$(dirname "$0")/.."
limit=60 # seconds any one program may run (the JVM starts slowly)

fail() {
    printf "java peer: FAIL: %s\n" "$*" >&2
    exit 1
}

if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    echo "java peer: skipped: javac or java is not installed (make deps installs default-jdk-headless)"
    [ -z "${SM_REQUIRE_TOOLS:-}" ] || fail "SM_REQUIRE_TOOLS is set: not skipping"
    exit 0
fi
[ -x "$build/examples/echo-server" ] ||
    fail "no $build/examples/echo-server (build it: make BUILD=$build all)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-java.XXXXXX") || fail "mktemp -d"
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# Java 8 source level: what Android builds accept.
javac -encoding UTF-8 -Xlint:all -Xlint:-options -Werror --release 8 -d "$tmp/classes" \
    examples/java/SockMsg.java examples/java/EchoClient.java tests/java/SockMsgCheck.java \
    2>"$tmp/javac.err" || { cat "$tmp/javac.err" >&2; fail "javac"; }

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

# run NAME COMMAND...: runs a Java program; it must exit 0 with nothing on stderr.
run() {
    name=$1
    shift
    st=0
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || st=$?
    [ "$st" -eq 0 ] || { cat "$tmp/$name.err" >&2; fail "$name exited with status $st"; }
    [ ! -s "$tmp/$name.err" ] || { cat "$tmp/$name.err" >&2; fail "$name wrote to stderr"; }
}

# 1. EchoClient: arguments, then stdin (UTF-8 whatever the locale; the
#    JVM decodes arguments by the locale, so those stay ASCII).
run "EchoClient" java -cp "$tmp/classes" EchoClient "$addr" hello "" world
printf 'hello\n\nworld\n' | cmp -s - "$tmp/EchoClient.out" ||
    fail "EchoClient printed '$(cat "$tmp/EchoClient.out")', expected hello, an empty line, world"
printf 'one\ncafé, 2 €\n' >"$tmp/want"
run "EchoClient-stdin" java -cp "$tmp/classes" EchoClient "$addr" <"$tmp/want"
cmp -s "$tmp/want" "$tmp/EchoClient-stdin.out" ||
    fail "EchoClient with stdin printed '$(cat "$tmp/EchoClient-stdin.out")', expected one, café, 2 €"

# 2. SockMsg.java's checks.
run "SockMsgCheck" java -cp "$tmp/classes" SockMsgCheck "$addr"
checks=$(sed -n 's/^ok \([0-9][0-9]*\)$/\1/p' "$tmp/SockMsgCheck.out")
[ -n "$checks" ] || fail "SockMsgCheck printed '$(cat "$tmp/SockMsgCheck.out")', expected 'ok N'"

kill -TERM "$pid" 2>/dev/null || true
st=0
wait "$pid" || st=$?
pid=
[ "$st" -eq 0 ] || fail "echo-server exited with status $st after SIGTERM"
echo "java peer: ok (EchoClient 2 runs, SockMsgCheck $checks checks)"
