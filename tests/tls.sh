#!/bin/sh
# TLS between libsockmsg's programs and other TLS stacks: Python's ssl
# module and openssl s_client, both ways, and the README's walk-through.
#
#   sh tests/tls.sh BUILD_DIR          (make check passes it; needs
#                                       BUILD_DIR/examples/{echo-server,client,
#                                       login-server,login-client}, BUILD_DIR/smcat)
#
# 1. Python (ssl.create_default_context(cafile=the test CA)) against the C
#    echo-server over TLS: messages of 0 B to 1 MiB echoed byte for byte,
#    three in one write, over TLS 1.3 and 1.2; Python refuses the server
#    for another name and with only the system's CAs, and the server keeps
#    serving after those failed handshakes
# 2. the C client example (--tls-ca) against a Python ssl server
#    (tests/peer.py tls-serve): prints TEST; refuses a Python server whose
#    certificate names another host
# 3. smcat (--tls-ca) against the Python ssl server: an echo checked byte
#    for byte; mutual TLS, the Python server requiring smcat's client
#    certificate (--tls-cert/--tls-key), and refusing smcat without one
# 4. Python with and without a client certificate against
#    smcat --listen --echo --tls-ca (mutual TLS)
# 5. openssl s_client against the TLS echo-server: the chain verifies for
#    localhost, and a frame it sends comes back
# 6. the README's login walk-through, with the certificate made by the
#    README's own openssl command: login-client prints OK, then DENIED;
#    Python and smcat trust that certificate as well
#
# Certificates are made fresh by tests/tls/make-certs.sh in a temporary
# directory that is removed at the end.  Servers listen on 127.0.0.1 port 0
# and print the port they got.  Every program runs under timeout(1), and a
# server still running when the script ends is killed by its PID.  Built
# without OpenSSL, only the examples' clear refusal is checked.
set -eu

build=${1:?usage: sh tests/tls.sh BUILD_DIR}
[ -d "$build" ] || { echo "tls: FAIL: no directory $build" >&2; exit 1; }
build=$(cd "$build" && pwd)
cd "$(dirname "$0")/.."
ex=$build/examples
smcat=$build/smcat
limit=30 # seconds any one program may run
PYTHONDONTWRITEBYTECODE=1
export PYTHONDONTWRITEBYTECODE

fail() {
    printf "tls: FAIL: %s\n" "$*" >&2
    exit 1
}

for f in "$ex/echo-server" "$ex/client" "$ex/login-server" "$ex/login-client" "$smcat"; do
    [ -x "$f" ] || fail "no $f (build it: make BUILD=$build all)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-tls.XXXXXX") || fail "mktemp -d"
pids=
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

if "$ex/client" --tls-ca /dev/null 127.0.0.1:1 2>"$tmp/notls.err" ||
    grep -q "built without TLS" "$tmp/notls.err"; then
    grep -q "built without TLS" "$tmp/notls.err" || fail "client: $(cat "$tmp/notls.err")"
    echo "tls: note: built without TLS (OpenSSL): only the refusal was checked"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (make deps)"
command -v openssl >/dev/null 2>&1 || fail "openssl is not installed"
sh tests/tls/make-certs.sh "$tmp/certs" || fail "making certificates with openssl"
c=$tmp/certs
cases=0

# start NAME COMMAND...: runs COMMAND in the background (stdout and stderr
# to $tmp/NAME.out and .err), waits at most 10 s for its "listening on
# ADDR" line and sets $pid and $addr ("127.0.0.1:PORT") and $port.
start() {
    name=$1
    shift
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    pids="$pids $pid"
    i=0
    until grep -qE '^(smcat: )?listening on ' "$tmp/$name.out" "$tmp/$name.err" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/$name.err" >&2; fail "$name exited early"; }
        i=$((i + 1))
        [ "$i" -le 100 ] || fail "$name did not say where it listens within 10 s"
        sleep 0.1
    done
    addr=$(sed -n 's/^\(smcat: \)\{0,1\}listening on //p' "$tmp/$name.out" "$tmp/$name.err" | head -n 1)
    case $addr in
    127.0.0.1:[1-9]*) port=${addr##*:} ;;
    *) fail "$name: listening on '$addr', expected 127.0.0.1:PORT" ;;
    esac
}

# finish NAME STATUS...: waits (bounded by timeout) for the server started
# last; its exit status must be one of STATUS.
finish() {
    name=$1
    shift
    st=0
    wait "$pid" || st=$?
    pids=$(echo "$pids" | sed "s/ $pid\$//")
    case " $* " in
    *" $st "*) ;;
    *) cat "$tmp/$name.err" >&2; fail "$name exited with status $st, expected one of: $*" ;;
    esac
}

# stop NAME: SIGTERM to the server started last, which must exit 0.
stop() {
    kill -TERM "$pid" 2>/dev/null || true
    finish "$1" 0
}

# run NAME COMMAND...: runs a client to its end; sets $st.
run() {
    name=$1
    shift
    st=0
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || st=$?
}

# expect_ok NAME: the last run exited 0 and wrote nothing to stderr.
expect_ok() {
    [ "$st" -eq 0 ] || { cat "$tmp/$1.err" >&2; fail "$1 exited with status $st"; }
    [ ! -s "$tmp/$1.err" ] || { cat "$tmp/$1.err" >&2; fail "$1 wrote to stderr"; }
}

# The Python client: echo checks and refusals, over the ssl module, with
# tests/peer.py's framing.
cat >"$tmp/client.py" <<'EOF'
"""client.py echo|refused ADDR CA NAME [--tls12] [--cert CERT KEY]

echo:    connect over TLS (ssl.create_default_context(cafile=CA), the server
         verified for NAME), send messages of 0 B to 1 MiB and three in one
         write, check every echo, print "ok N VERSION"
refused: the same connection must fail: in the handshake (CA "-": with the
         system's CAs), or, for a server that wants a client certificate,
         no echo may come back.  Prints "refused: REASON"."""
import os
import socket
import ssl
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from peer import HEADER, message, parse_addr, recv_msg, send_msg  # noqa: E402

mode, addr, ca, name = sys.argv[1:5]
rest = sys.argv[5:]
ctx = ssl.create_default_context(cafile=None if ca == "-" else ca)
if "--tls12" in rest:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
if "--cert" in rest:
    i = rest.index("--cert")
    ctx.load_cert_chain(rest[i + 1], rest[i + 2])


def echo(s):
    count = 0
    for i in range(12):
        want = message(i)               # 0 B ... 1 MiB, bytes that depend on i
        send_msg(s, want)
        got = recv_msg(s)
        if got != want:
            sys.exit("message %d: sent %d bytes, got back %r" % (i, len(want), got and len(got)))
        count += 1
    glued = [b"hi", b"", b"abc"]
    s.sendall(b"".join(HEADER.pack(len(m)) + m for m in glued))
    got = [recv_msg(s) for m in glued]
    if got != glued:
        sys.exit("three messages in one write came back as %r" % got)
    return count + len(glued)


raw = socket.create_connection(parse_addr(addr), timeout=20)
try:
    s = ctx.wrap_socket(raw, server_hostname=name)
except ssl.SSLCertVerificationError as e:
    if mode == "refused":
        print("refused: %s" % e.verify_message)
        sys.exit(0)
    raise
with s:
    if mode == "echo":
        print("ok %d %s" % (echo(s), s.version()))
        sys.exit(0)
    try:
        send_msg(s, b"let me in")
        got = recv_msg(s)
    except (ssl.SSLError, OSError) as e:
        print("refused: %s" % e)
        sys.exit(0)
    if got is None:
        print("refused: closed")
        sys.exit(0)
    sys.exit("the server answered %r" % got)
EOF

# --- 1. Python's ssl against the C echo-server ------------------------------
start "echo-server" "$ex/echo-server" --tls-cert "$c/server.pem" --tls-key "$c/server.key" 127.0.0.1:0
run py13 python3 "$tmp/client.py" echo "$addr" "$c/ca.pem" localhost
expect_ok py13
grep -qx 'ok 15 TLSv1.3' "$tmp/py13.out" || fail "Python, TLS 1.3: '$(cat "$tmp/py13.out")'"
run py12 python3 "$tmp/client.py" echo "$addr" "$c/ca.pem" 127.0.0.1 --tls12
expect_ok py12
grep -qx 'ok 15 TLSv1.2' "$tmp/py12.out" || fail "Python, TLS 1.2: '$(cat "$tmp/py12.out")'"
run pyname python3 "$tmp/client.py" refused "$addr" "$c/ca.pem" example.invalid
expect_ok pyname
grep -q "refused: .*mismatch" "$tmp/pyname.out" || fail "Python, another name: '$(cat "$tmp/pyname.out")'"
run pysys python3 "$tmp/client.py" refused "$addr" - localhost
expect_ok pysys
grep -q "refused: " "$tmp/pysys.out" || fail "Python, system CAs: '$(cat "$tmp/pysys.out")'"
run pyagain python3 "$tmp/client.py" echo "$addr" "$c/ca.pem" localhost
expect_ok pyagain
stop "echo-server"
cases=$((cases + 1))

# --- 2. the C client against a Python ssl server ----------------------------
start "peer.py tls-serve" python3 tests/peer.py tls-serve 127.0.0.1:0 "$c/server.pem" \
    "$c/server.key" - TEST
run cclient "$ex/client" --tls-ca "$c/ca.pem" "localhost:$port"
expect_ok cclient
[ "$(cat "$tmp/cclient.out")" = TEST ] || fail "C client: printed '$(cat "$tmp/cclient.out")'"
finish "peer.py tls-serve" 0
grep -q "echoed 0 over TLSv1.3" "$tmp/peer.py tls-serve.err" ||
    fail "peer.py: $(cat "$tmp/peer.py tls-serve.err")"

start "peer.py wronghost" python3 tests/peer.py tls-serve 127.0.0.1:0 "$c/wronghost.pem" \
    "$c/wronghost.key" - TEST
run cwrong "$ex/client" --tls-ca "$c/ca.pem" "localhost:$port"
[ "$st" -ne 0 ] || fail "the C client accepted a certificate for another host"
[ ! -s "$tmp/cwrong.out" ] || fail "C client, another host: printed '$(cat "$tmp/cwrong.out")'"
grep -q "mismatch" "$tmp/cwrong.err" || fail "C client, another host: $(cat "$tmp/cwrong.err")"
finish "peer.py wronghost" 0 1
cases=$((cases + 1))

# --- 3. smcat against the Python ssl server ---------------------------------
# be32 N: N as a 4-byte big-endian length header.
be32() {
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
        $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}
head -c 1048576 /dev/urandom >"$tmp/big"
{ be32 5; printf hello; be32 0; be32 1048576; cat "$tmp/big"; } >"$tmp/want.framed"
start "peer.py echo" python3 tests/peer.py tls-serve 127.0.0.1:0 "$c/server.pem" "$c/server.key"
run smcat "$smcat" --connect "localhost:$port" --tls-ca "$c/ca.pem" --data hello --data '' \
    --file "$tmp/big" --format framed --expect 3
expect_ok smcat
cmp -s "$tmp/smcat.out" "$tmp/want.framed" || fail "smcat against Python: the echoes differ"
finish "peer.py echo" 0
grep -q "echoed 3 over TLSv1.3" "$tmp/peer.py echo.err" || fail "peer.py: $(cat "$tmp/peer.py echo.err")"

start "peer.py mtls" python3 tests/peer.py tls-serve 127.0.0.1:0 "$c/server.pem" "$c/server.key" \
    "$c/ca.pem"
run smcatm "$smcat" --connect "127.0.0.1:$port" --tls-ca "$c/ca.pem" --tls-cert "$c/client.pem" \
    --tls-key "$c/client.key" --data hi --expect 1
expect_ok smcatm
[ "$(cat "$tmp/smcatm.out")" = hi ] || fail "smcat, mutual TLS: '$(cat "$tmp/smcatm.out")'"
finish "peer.py mtls" 0
grep -q "client certificate: CN=robot-3" "$tmp/peer.py mtls.err" ||
    fail "peer.py did not see smcat's certificate: $(cat "$tmp/peer.py mtls.err")"

start "peer.py mtls2" python3 tests/peer.py tls-serve 127.0.0.1:0 "$c/server.pem" "$c/server.key" \
    "$c/ca.pem"
run smcatnone "$smcat" --connect "127.0.0.1:$port" --tls-ca "$c/ca.pem" --data hi --expect 1
[ "$st" -ne 0 ] || fail "a Python server requiring a certificate answered smcat without one"
[ ! -s "$tmp/smcatnone.out" ] || fail "smcat without a certificate got '$(cat "$tmp/smcatnone.out")'"
finish "peer.py mtls2" 1
cases=$((cases + 1))

# --- 4. Python with a client certificate against smcat (mutual TLS) ---------
start "smcat --echo" "$smcat" --listen 127.0.0.1:0 --echo --tls-cert "$c/server.pem" \
    --tls-key "$c/server.key" --tls-ca "$c/ca.pem" -v
run pycert python3 "$tmp/client.py" echo "$addr" "$c/ca.pem" localhost --cert "$c/client.pem" "$c/client.key"
expect_ok pycert
grep -q '^ok 15 ' "$tmp/pycert.out" || fail "Python with a certificate: '$(cat "$tmp/pycert.out")'"
run pynocert python3 "$tmp/client.py" refused "$addr" "$c/ca.pem" localhost
expect_ok pynocert
run pyother python3 "$tmp/client.py" refused "$addr" "$c/ca.pem" localhost --cert "$c/self.pem" "$c/self.key"
expect_ok pyother
stop "smcat --echo"
[ "$(grep -c "verified client certificate /CN=robot-3" "$tmp/smcat --echo.err")" -eq 1 ] ||
    fail "smcat -v: $(cat "$tmp/smcat --echo.err")"
cases=$((cases + 1))

# --- 5. openssl s_client against the TLS echo-server -------------------------
# s_client reads the frame from a FIFO held open until the echo is back;
# closing it ends s_client (-no_ign_eof: -quiet alone would wait on).
start "echo-server" "$ex/echo-server" --tls-cert "$c/server.pem" --tls-key "$c/server.key" 127.0.0.1:0
mkfifo "$tmp/sclient.in"
timeout "$limit" openssl s_client -connect "$addr" -servername localhost -verify_hostname localhost \
    -CAfile "$c/ca.pem" -verify_return_error -quiet -no_ign_eof <"$tmp/sclient.in" >"$tmp/sclient.out" \
    2>"$tmp/sclient.err" &
spid=$!
pids="$pids $spid"
exec 3>"$tmp/sclient.in"
{ be32 12; printf 'from openssl'; } >"$tmp/sclient.frame"
cat "$tmp/sclient.frame" >&3
i=0
until [ "$(wc -c <"$tmp/sclient.out")" -ge 16 ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { cat "$tmp/sclient.err" >&2; fail "no echo for openssl s_client in 10 s"; }
    kill -0 "$spid" 2>/dev/null || { cat "$tmp/sclient.err" >&2; fail "openssl s_client exited"; }
    sleep 0.1
done
exec 3>&-
wait "$spid" || true
cmp -s "$tmp/sclient.out" "$tmp/sclient.frame" || fail "openssl s_client: the echo differs"
grep -q "verify return:1" "$tmp/sclient.err" || fail "s_client did not verify: $(cat "$tmp/sclient.err")"
stop "echo-server"
cases=$((cases + 1))

# --- 6. the README's login walk-through over TLS -----------------------------
mkdir "$tmp/readme"
cmd=$(sed -n '/^    openssl req -x509/,/[^\\]$/p' README.md)
[ -n "$cmd" ] || fail "README.md has no 'openssl req -x509' command"
(cd "$tmp/readme" && eval "$cmd") >"$tmp/readme.log" 2>&1 ||
    { cat "$tmp/readme.log" >&2; fail "the README's openssl command failed"; }
r=$tmp/readme
[ -s "$r/cert.pem" ] && [ -s "$r/key.pem" ] || fail "the README's command made no cert.pem and key.pem"
SM_PASSWORD=secret timeout "$limit" "$ex/login-server" --add alice "$r/users.txt" ||
    fail "login-server --add"
start "login-server" "$ex/login-server" --tls-cert "$r/cert.pem" --tls-key "$r/key.pem" \
    127.0.0.1:0 "$r/users.txt"
run loginok env SM_PASSWORD=secret "$ex/login-client" --tls-ca "$r/cert.pem" "localhost:$port" alice
expect_ok loginok
[ "$(cat "$tmp/loginok.out")" = OK ] || fail "README login: printed '$(cat "$tmp/loginok.out")'"
run logindenied env SM_PASSWORD=wrong "$ex/login-client" --tls-ca "$r/cert.pem" "localhost:$port" alice
[ "$st" -eq 1 ] && [ "$(cat "$tmp/logindenied.out")" = DENIED ] ||
    fail "README login, wrong password: status $st, printed '$(cat "$tmp/logindenied.out")'"
run loginca env SM_PASSWORD=secret "$ex/login-client" --tls-ca "$c/ca.pem" "localhost:$port" alice
[ "$st" -eq 2 ] && [ ! -s "$tmp/loginca.out" ] || fail "a client trusting another CA logged in"
stop "login-server"
! grep -q warning "$tmp/login-server.err" || fail "login-server over TLS: $(cat "$tmp/login-server.err")"

start "echo-server" "$ex/echo-server" --tls-cert "$r/cert.pem" --tls-key "$r/key.pem" 127.0.0.1:0
run pyreadme python3 "$tmp/client.py" echo "$addr" "$r/cert.pem" localhost
expect_ok pyreadme
run smreadme "$smcat" --connect "localhost:$port" --tls-ca "$r/cert.pem" --data hi --expect 1
expect_ok smreadme
[ "$(cat "$tmp/smreadme.out")" = hi ] || fail "smcat with the README's certificate"
stop "echo-server"
cases=$((cases + 1))

echo "tls: ok ($cases cases)"
