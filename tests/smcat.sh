#!/bin/sh
# tests/smcat.sh BUILD_DIR - end-to-end tests of the smcat tool.
#
# Only 127.0.0.1 with port 0 and Unix sockets in a private temporary
# directory are used, so runs never collide.  Every smcat runs in the
# background and is waited for with a time limit, so a hung smcat fails
# the test instead of hanging it; the EXIT trap kills what is left, by PID.
set -eu

build=${1:-build}
smcat=$build/smcat
[ -x "$smcat" ] || { echo "smcat tests: $smcat is not built" >&2; exit 1; }

tmp=$(mktemp -d)
pids=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

cases=0
fail() {
    echo "smcat tests: FAIL: $*" >&2
    for f in "$tmp"/*.err; do
        [ -s "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" >&2
    done
    exit 1
}
ok() { cases=$((cases + 1)); }

# spawn NAME COMMAND...: COMMAND in the background, stdout in NAME.out,
# stderr in NAME.err, stdin from NAME.in if it exists (else /dev/null).
spawn() {
    name=$1
    shift
    in=/dev/null
    [ -e "$tmp/$name.in" ] && in=$tmp/$name.in
    "$@" <"$in" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    eval "pid_$name=$!"
    pids="$pids $!"
}

# start NAME ARGS...: smcat ARGS in the background, as spawn.
start() {
    name=$1
    shift
    spawn "$name" "$smcat" "$@"
}

# finish NAME [SECONDS]: waits (at most SECONDS, default 20) for NAME to
# exit and sets rc to its exit status.
finish() {
    eval "p=\$pid_$1"
    i=0
    while kill -0 "$p" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le "$((${2:-20} * 10))" ] || fail "$1 still running after ${2:-20} s"
        sleep 0.1
    done
    rc=0
    wait "$p" || rc=$?
}

# run NAME ARGS...: start, then finish.
run() {
    start "$@"
    finish "$1"
}

# stop NAME: SIGTERM, then wait for it (bounded).
stop() {
    eval "kill \$pid_$1" 2>/dev/null || true
    finish "$1" 10
}

# addr_of NAME: the address NAME reported in its listening line (<= 10 s):
# smcat's on stderr, or tests/peer.py's on stdout.
addr_of() {
    i=0
    until grep -qs '^smcat: listening on ' "$tmp/$1.err" ||
        grep -qs '^listening on ' "$tmp/$1.out"; do
        i=$((i + 1))
        [ "$i" -le 100 ] || fail "$1 never printed its listening line"
        sleep 0.1
    done
    sed -n 's/^smcat: listening on //p' "$tmp/$1.err"
    sed -n 's/^listening on //p' "$tmp/$1.out"
}

# expect_rc NAME WANT: the last finish's status must be WANT.
expect_rc() {
    [ "$rc" -eq "$2" ] || fail "$1: exit status $rc, expected $2"
}

# be32 N: N as a 4-byte big-endian length header.
be32() {
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
        $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}

# --- 1. echo server, and a client that expects one reply -----------------
start echo --listen 127.0.0.1:0 --echo
echo_addr=$(addr_of echo)
case $echo_addr in 127.0.0.1:[1-9]*) ;; *) fail "listening line gave '$echo_addr'" ;; esac
run hi --connect "$echo_addr" --data hi --expect 1
expect_rc "--data hi --expect 1" 0
[ "$(cat "$tmp/hi.out")" = hi ] || fail "echo of hi printed '$(cat "$tmp/hi.out")'"
ok

# --half-close: once everything is sent, smcat shuts its sending side, so
# the echo server sees the end of our input and closes; without --expect,
# replies are printed until then.
run two --connect "$echo_addr" --data one --data two --half-close
expect_rc "--data one --data two --half-close" 0
[ "$(cat "$tmp/two.out")" = "$(printf 'one\ntwo')" ] || fail "two messages: got '$(cat "$tmp/two.out")'"
ok

# Stdin lines (the default), --count: one message per line, empty ones too.
printf 'a\n\nb' >"$tmp/lines.in"
run lines --connect "$echo_addr" --count 2 --expect 6
expect_rc "stdin lines --count 2" 0
[ "$(cat "$tmp/lines.out")" = "$(printf 'a\n\nb\na\n\nb')" ] || fail "stdin lines: got '$(cat "$tmp/lines.out")'"
ok

# A server that answers later, and takes the end of our input as the end of
# the conversation (as libsockmsg's event server does: replies due after it
# are lost).  smcat keeps its sending side open while it waits for
# replies, with --expect N and by default, so both echoes arrive.
peer=$(dirname "$0")/peer.py
if command -v python3 >/dev/null 2>&1; then
    spawn slowecho python3 "$peer" slow-echo 127.0.0.1:0 300
    run later --connect "$(addr_of slowecho)" --data one --data two --expect 2
    expect_rc "--expect 2 against a server that answers after 300 ms" 0
    [ "$(cat "$tmp/later.out")" = "$(printf 'one\ntwo')" ] || fail "late replies: got '$(cat "$tmp/later.out")'"
    finish slowecho
    expect_rc "peer.py slow-echo" 0
    ok

    # By default smcat prints until the peer closes: this one does after
    # two echoes.
    spawn slowecho2 python3 "$peer" slow-echo 127.0.0.1:0 300 2
    run later2 --connect "$(addr_of slowecho2)" --data one --data two
    expect_rc "print until closed, server answering after 300 ms" 0
    [ "$(cat "$tmp/later2.out")" = "$(printf 'one\ntwo')" ] || fail "late replies, no --expect: got '$(cat "$tmp/later2.out")'"
    finish slowecho2
    ok

    # --half-close asks for the old behaviour: that server then sees the
    # end of our input and closes before answering.
    spawn slowecho3 python3 "$peer" slow-echo 127.0.0.1:0 300
    run halfclosed --connect "$(addr_of slowecho3)" --data one --expect 1 --half-close
    expect_rc "--half-close against a server that ends on end of input" 1
    grep -q "closed the connection after 0 of 1 expected" "$tmp/halfclosed.err" ||
        fail "--half-close: $(cat "$tmp/halfclosed.err")"
    finish slowecho3
    ok
else
    echo "smcat tests: note: no python3, the late-reply cases are skipped"
fi

# --- 2. binary data, byte-exact, through --format framed and --in framed ----
head -c 1000 /dev/urandom >"$tmp/small"
: >"$tmp/empty"
head -c 10485760 /dev/urandom >"$tmp/big"
{
    be32 1000; cat "$tmp/small"
    be32 0
    be32 10485760; cat "$tmp/big"
    be32 1; printf x
    be32 0
} >"$tmp/expected.framed"

start cap1 --listen 127.0.0.1:0 --format framed
run send1 --connect "$(addr_of cap1)" --no-wait --file "$tmp/small" --file "$tmp/empty" \
    --file "$tmp/big" --data x --file "$tmp/empty"
expect_rc "sending files" 0
finish cap1
expect_rc "framed capture" 0
cmp -s "$tmp/cap1.out" "$tmp/expected.framed" || fail "--format framed output differs from the wire format"
ok

# Replay the capture with another smcat: exactly the same messages arrive.
cp "$tmp/cap1.out" "$tmp/replay.in"
start cap2 --listen 127.0.0.1:0 --format framed
run replay --connect "$(addr_of cap2)" --in framed --no-wait
expect_rc "--in framed replay" 0
finish cap2
expect_rc "replay capture" 0
cmp -s "$tmp/cap2.out" "$tmp/expected.framed" || fail "replayed capture differs"
ok

# The same replay shown raw is the payloads back to back.
cp "$tmp/cap1.out" "$tmp/replay2.in"
start raw --listen 127.0.0.1:0 --format raw
run replay2 --connect "$(addr_of raw)" --stdin-framed --no-wait
finish raw
{ cat "$tmp/small" "$tmp/big"; printf x; } >"$tmp/expected.raw"
cmp -s "$tmp/raw.out" "$tmp/expected.raw" || fail "--format raw differs from the payloads"
ok

# A 10 MiB message through the echo server, whole stdin as one message.
cp "$tmp/big" "$tmp/bigecho.in"
run bigecho --connect "$echo_addr" --stdin-whole --format raw --expect 1
expect_rc "10 MiB echo" 0
cmp -s "$tmp/bigecho.out" "$tmp/big" || fail "10 MiB message came back different"
ok

# Standard output closed early (a pipe into head -c 20): exit 1 with a
# message naming stdout, not death by SIGPIPE.  10 MiB cannot fit in the
# pipe, so smcat is still writing when head exits.
mkfifo "$tmp/epipe.out"
head -c 20 <"$tmp/epipe.out" >"$tmp/head.out" &
pids="$pids $!"
run epipe --connect "$echo_addr" --file "$tmp/big" --format raw --expect 1
expect_rc "stdout closed by head -c 20" 1
grep -q '^smcat: stdout: Broken pipe$' "$tmp/epipe.err" || fail "closed stdout: stderr '$(cat "$tmp/epipe.err")'"
[ "$(wc -c <"$tmp/head.out")" -eq 20 ] || fail "head got $(wc -c <"$tmp/head.out") bytes"
ok

# --- 3. --format hex and text escaping --------------------------------------
run hex --connect "$echo_addr" --data 'hello, framed world!' --data '' --format hex --expect 2
expect_rc "--format hex" 0
cat >"$tmp/hex.expected" <<'EOF'
message 1: 20 bytes
00000000  68 65 6c 6c 6f 2c 20 66  72 61 6d 65 64 20 77 6f  |hello, framed wo|
00000010  72 6c 64 21                                       |rld!|
message 2: 0 bytes
EOF
cmp -s "$tmp/hex.out" "$tmp/hex.expected" || fail "--format hex: got: $(cat "$tmp/hex.out")"
ok

tricky=$(printf 'a\\b\tc\nd\351\177\033[2J~')
run text --connect "$echo_addr" --data "$tricky" --expect 1
expect_rc "--format text" 0
[ "$(cat "$tmp/text.out")" = 'a\\b\x09c\x0ad\xe9\x7f\x1b[2J~' ] ||
    fail "text escaping: got '$(cat "$tmp/text.out")'"
ok

# --- 4. exit codes ----------------------------------------------------------
for args in "--bogus" "" "--connect" "--connect 127.0.0.1:1 --format nope" \
    "--connect 127.0.0.1:1 --count 0" "--listen 127.0.0.1:0 --echo --data x" \
    "--connect 127.0.0.1:1 extra"; do
    # shellcheck disable=SC2086 # split on purpose: one option per word
    run usage $args
    expect_rc "smcat $args" 2
    [ "$(wc -l <"$tmp/usage.err")" -eq 1 ] || fail "smcat $args: error is not one line"
done
run usage --bogus
grep -q "unknown option '--bogus'" "$tmp/usage.err" || fail "unknown option not named"
ok

run badaddr --connect nonsense --data x
expect_rc "bad address" 3
grep -q nonsense "$tmp/badaddr.err" || fail "bad address not named: $(cat "$tmp/badaddr.err")"
ok

# A listener that waits 300 ms for a client (exit 6) leaves a free port behind.
run gone --listen 127.0.0.1:0 --timeout 300
expect_rc "accept --timeout" 6
gone_addr=$(sed -n 's/^smcat: listening on //p' "$tmp/gone.err")
run refused --connect "$gone_addr" --data x
expect_rc "connect refused" 4
grep -q "Connection refused" "$tmp/refused.err" || fail "refusal not explained: $(cat "$tmp/refused.err")"
ok

# A peer that sends one message, then stays silent and open: the receive
# timeout strikes (6).
start slow --listen 127.0.0.1:0 --data first --count 2 --interval 30000
run recvto --connect "$(addr_of slow)" --recv-timeout 300
expect_rc "--recv-timeout" 6
[ "$(cat "$tmp/recvto.out")" = first ] || fail "recv timeout: message before it lost"
stop slow
ok

# Protocol errors (5): a frame over --max-frame; framed input cut short.
head -c 2000 /dev/urandom >"$tmp/2k"
start small --listen 127.0.0.1:0 --max-frame 1K
run tobig --connect "$(addr_of small)" --file "$tmp/2k"
finish small
expect_rc "frame over --max-frame" 5
head -c 1010 "$tmp/cap1.out" >"$tmp/cut.in"
start sink --listen 127.0.0.1:0 --format framed
run cut --connect "$(addr_of sink)" --in framed
expect_rc "truncated framed input" 5
stop sink
ok

# The peer closes before --expect N arrived (1).
start one --listen 127.0.0.1:0 --data only --half-close
run short --connect "$(addr_of one)" --expect 3
expect_rc "--expect 3, one sent" 1
finish one
ok

# --- 5. --retry: start connecting before the server exists -----------------
start late --connect "unix:$tmp/late.sock" --retry --timeout 10000 --data hi --expect 1
sleep 0.5
kill -0 "$pid_late" 2>/dev/null || fail "--retry gave up before the server started"
start lateserver --listen "unix:$tmp/late.sock" --echo
finish late
expect_rc "--retry" 0
[ "$(cat "$tmp/late.out")" = hi ] || fail "--retry: got '$(cat "$tmp/late.out")'"
stop lateserver
expect_rc "echo server on SIGTERM" 0
ok

run never --connect "unix:$tmp/never.sock" --retry --timeout 300 --data x
expect_rc "--retry --timeout with no server" 6
ok

# The waits are libsockmsg's backoff (sm_connect_retry: 100 ms, doubling
# with jitter up to 5 s), and --timeout bounds them all: smcat gives up
# once it has passed, not before and not a whole wait later.
t0=$(date +%s%N)
run never2 --connect "unix:$tmp/never.sock" --retry --timeout 1500 --verbose --data x
took=$((($(date +%s%N) - t0) / 1000000))
expect_rc "--retry --timeout 1500 with no server" 6
[ "$took" -ge 1500 ] || fail "--retry --timeout 1500 gave up after $took ms"
[ "$took" -lt 4000 ] || fail "--retry --timeout 1500 gave up only after $took ms"
grep -q 'gave up after 1500 ms (--timeout)' "$tmp/never2.err" || fail "--timeout 1500: no 'gave up' line"
grep -q 'trying again until it works' "$tmp/never2.err" || fail "--retry --verbose said nothing"
ok

# A server that comes 2.5 s later (the waits have grown past 1 s by then)
# is reached within the longest wait, 5 s, of its start.
start later --connect "unix:$tmp/later2.sock" --retry --data hi --expect 1
sleep 2.5
start laterserver --listen "unix:$tmp/later2.sock" --echo
t0=$(date +%s%N)
finish later 10
took=$((($(date +%s%N) - t0) / 1000000))
expect_rc "--retry, a server 2.5 s late" 0
[ "$(cat "$tmp/later.out")" = hi ] || fail "--retry, a server 2.5 s late: got '$(cat "$tmp/later.out")'"
[ "$took" -lt 6000 ] || fail "--retry reached a server $took ms after it started"
stop laterserver
ok

# An address that cannot work is not tried again: exit 3 at once.
run badretry --connect no-port-here --retry --data x
expect_rc "--retry with a malformed address" 3
run badname --connect no-such-host.invalid:7 --retry --timeout 20000 --data x
expect_rc "--retry with a name that does not resolve" 3
ok

# --- 6. --help, --version, --quiet ------------------------------------------
run help --help
expect_rc "--help" 0
grep -q -- '--connect ADDR' "$tmp/help.out" || fail "--help lacks --connect"
grep -q 'Exit codes' "$tmp/help.out" || fail "--help lacks the exit codes"
run version --version
expect_rc "--version" 0
grep -Eq '^smcat \(libsockmsg\) [0-9]+\.[0-9]+\.[0-9]+$' "$tmp/version.out" ||
    fail "--version printed '$(cat "$tmp/version.out")'"
ok

run quiet --listen "unix:$tmp/q.sock" --quiet --timeout 100
expect_rc "--quiet, no client" 6
! grep -q listening "$tmp/quiet.err" || fail "--quiet still printed the listening line"
ok

# --- 7. TLS -----------------------------------------------------------------
# Certificates made fresh by tests/tls/make-certs.sh (a test CA; server for
# localhost and 127.0.0.1; client CN=robot-3; another CA), in $tmp, which
# the EXIT trap removes.  Built without OpenSSL, smcat must say so.
run notls --connect 127.0.0.1:1 --tls --data x
if grep -q "built without TLS" "$tmp/notls.err"; then
    expect_rc "--tls without OpenSSL" 1
    echo "smcat tests: note: smcat built without TLS, only that message was checked"
    ok
else
    sh "$(dirname "$0")/tls/make-certs.sh" "$tmp/certs" || fail "making certificates with openssl"
    c=$tmp/certs
    start tlsecho --listen 127.0.0.1:0 --echo --tls-cert "$c/server.pem" --tls-key "$c/server.key"
    tls_addr=$(addr_of tlsecho)
    tls_name=localhost:${tls_addr##*:}

    # Verified against the test CA, by name and by address; an empty message too.
    run tlshi --connect "$tls_name" --tls-ca "$c/ca.pem" --data hi --data '' --expect 2 -v
    expect_rc "--tls-ca, by name" 0
    printf 'hi\n\n' >"$tmp/tlshi.want"
    cmp -s "$tmp/tlshi.out" "$tmp/tlshi.want" || fail "TLS echo: got '$(cat "$tmp/tlshi.out")'"
    grep -q "TLS with .*: verified certificate /CN=localhost" "$tmp/tlshi.err" ||
        fail "-v does not name the server's certificate: $(cat "$tmp/tlshi.err")"
    run tlsip --connect "$tls_addr" --tls-ca "$c/ca.pem" --data hi --expect 1
    expect_rc "--tls-ca, by address" 0
    ok

    # 10 MiB, byte for byte, over many TLS records; --half-close ends it.
    cp "$tmp/big" "$tmp/tlsbig.in"
    run tlsbig --connect "$tls_name" --tls-ca "$c/ca.pem" --stdin-whole --format raw --half-close
    expect_rc "10 MiB over TLS, --half-close" 0
    cmp -s "$tmp/tlsbig.out" "$tmp/big" || fail "10 MiB over TLS came back different"
    ok

    # Verification fails (4) for another CA, another name, and the system's
    # CAs (which never signed the test CA's certificates).
    run tlsca --connect "$tls_name" --tls-ca "$c/other-ca.pem" --data x --expect 1
    expect_rc "--tls-ca of another CA" 4
    grep -q "certificate verify failed" "$tmp/tlsca.err" || fail "another CA: $(cat "$tmp/tlsca.err")"
    run tlsname --connect "$tls_addr" --tls-ca "$c/ca.pem" --tls-name example.invalid --data x
    expect_rc "--tls-name of another host" 4
    grep -q "mismatch" "$tmp/tlsname.err" || fail "--tls-name: $(cat "$tmp/tlsname.err")"
    run tlssys --connect "$tls_name" --tls --data x
    expect_rc "--tls with the system's CAs" 4
    grep -q "certificate verify failed" "$tmp/tlssys.err" || fail "--tls: $(cat "$tmp/tlssys.err")"
    ok

    # --tls-insecure connects to anyone, and says so (unless --quiet).
    run insecure --connect "$tls_addr" --tls-insecure --data hi --expect 1
    expect_rc "--tls-insecure" 0
    [ "$(cat "$tmp/insecure.out")" = hi ] || fail "--tls-insecure: got '$(cat "$tmp/insecure.out")'"
    grep -q "warning: --tls-insecure" "$tmp/insecure.err" || fail "--tls-insecure gave no warning"
    run insecureq --connect "$tls_addr" --tls-insecure --quiet --data hi --expect 1
    [ ! -s "$tmp/insecureq.err" ] || fail "--tls-insecure --quiet: $(cat "$tmp/insecureq.err")"
    ok

    # A plain client on the TLS port is dropped unanswered; a TLS client on
    # a plain port fails its handshake (4).
    run plainontls --connect "$tls_addr" --data hi --expect 1
    expect_rc "plain client, TLS server" 1
    [ ! -s "$tmp/plainontls.out" ] || fail "a plain client was answered: $(cat "$tmp/plainontls.out")"
    run tlsonplain --connect "$echo_addr" --tls-ca "$c/ca.pem" --data hi --expect 1
    expect_rc "TLS client, plain server" 4
    ok

    # Mutual TLS: with --tls-ca, the echo server lets in only clients with a
    # certificate of that CA, and -v names it.
    start mtls --listen 127.0.0.1:0 --echo --tls-cert "$c/server.pem" --tls-key "$c/server.key" \
        --tls-ca "$c/ca.pem" -v
    mtls_addr=$(addr_of mtls)
    run mtlsok --connect "$mtls_addr" --tls-ca "$c/ca.pem" --tls-cert "$c/client.pem" \
        --tls-key "$c/client.key" --data hi --expect 1
    expect_rc "mutual TLS with the client's certificate" 0
    [ "$(cat "$tmp/mtlsok.out")" = hi ] || fail "mutual TLS: got '$(cat "$tmp/mtlsok.out")'"
    grep -q "verified client certificate /CN=robot-3" "$tmp/mtls.err" ||
        fail "-v does not name the client's certificate: $(cat "$tmp/mtls.err")"
    run mtlsnone --connect "$mtls_addr" --tls-ca "$c/ca.pem" --data hi --expect 1
    [ "$rc" -ne 0 ] || fail "mutual TLS let a client without a certificate in"
    [ ! -s "$tmp/mtlsnone.out" ] || fail "a client without a certificate was answered"
    stop mtls
    expect_rc "mutual TLS echo server on SIGTERM" 0
    ok

    # --listen for one client over TLS; a Unix socket needs --tls-name (2).
    start tlsone --listen "unix:$tmp/tls.sock" --tls-cert "$c/server.pem" --tls-key "$c/server.key" \
        --data served --half-close --timeout 10000
    addr_of tlsone >/dev/null
    run tlsnoname --connect "unix:$tmp/tls.sock" --tls-ca "$c/ca.pem" --expect 1
    expect_rc "TLS over unix: without --tls-name" 2
    run tlsunix --connect "unix:$tmp/tls.sock" --tls-ca "$c/ca.pem" --tls-name localhost --expect 1
    expect_rc "TLS over unix:, --tls-name localhost" 0
    [ "$(cat "$tmp/tlsunix.out")" = served ] || fail "--listen over TLS: got '$(cat "$tmp/tlsunix.out")'"
    finish tlsone
    expect_rc "--listen over TLS" 0
    ok

    # --retry over TLS: connecting before the server exists.
    start tlslate --connect "unix:$tmp/tlslate.sock" --tls-ca "$c/ca.pem" --tls-name localhost \
        --retry --timeout 10000 --data hi --expect 1
    sleep 0.5
    start tlslateserver --listen "unix:$tmp/tlslate.sock" --echo --tls-cert "$c/server.pem" \
        --tls-key "$c/server.key"
    finish tlslate
    expect_rc "--retry over TLS" 0
    [ "$(cat "$tmp/tlslate.out")" = hi ] || fail "--retry over TLS: got '$(cat "$tmp/tlslate.out")'"
    stop tlslateserver
    ok

    # Options that do not fit together (2), and a file that is not there (4).
    for args in "--listen 127.0.0.1:0 --tls" "--listen 127.0.0.1:0 --tls-cert $c/server.pem" \
        "--connect 127.0.0.1:1 --tls-key $c/client.key" \
        "--listen 127.0.0.1:0 --tls-cert $c/server.pem --tls-key $c/server.key --tls-insecure" \
        "--connect 127.0.0.1:1 --tls-insecure --tls-ca $c/ca.pem" "--connect 127.0.0.1:1 --tls-ca"; do
        # shellcheck disable=SC2086 # split on purpose: one option per word
        run tlsusage $args
        expect_rc "smcat $args" 2
        [ "$(wc -l <"$tmp/tlsusage.err")" -eq 1 ] || fail "smcat $args: error is not one line"
    done
    run tlsnofile --listen 127.0.0.1:0 --echo --tls-cert "$tmp/none.pem" --tls-key "$tmp/none.key"
    expect_rc "--tls-cert of a missing file" 4
    grep -q "certificate file" "$tmp/tlsnofile.err" || fail "missing file: $(cat "$tmp/tlsnofile.err")"
    run tlshelp --help
    grep -q -- '--tls-ca FILE' "$tmp/tlshelp.out" || fail "--help lacks --tls-ca"
    ok

    stop tlsecho
    expect_rc "TLS echo server on SIGTERM" 0
fi

stop echo
expect_rc "echo server on SIGTERM" 0
echo "smcat tests: ok ($cases cases)"
