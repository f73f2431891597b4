#!/bin/sh
# The Python package (examples/python: sockmsg.py, with the examples
# server.py and client.py) against the C examples, each other and smcat.
# Everything runs against sockmsg as pip installs it, never the source
# folder: `pip install ./examples/python` into a fresh virtual environment
# (no package index needed: the build backend is in the tree), and the
# programs run with `python -I`, so the sockmsg.py beside them is not seen.
#
#   sh tests/python.sh BUILD_DIR       (make check passes it; needs
#                                       BUILD_DIR/examples/{server,client,echo-server})
#
# 0. the install: sockmsg imported from the environment's site-packages,
#    identical to examples/python/sockmsg.py, with libsockmsg's version;
#    the backend's TOML reader (for Pythons before 3.11) reads
#    pyproject.toml as tomllib does; the sdist it builds installs too
# 1. client.py against the C server (examples/server.c)
# 2. the C client (examples/client.c) against server.py
# 3. client.py against server.py; each client must print exactly "TEST\n"
# 4. sockmsg against the C echo-server: messages of 0, 1, 4, ... 65537,
#    70000 bytes and 1 MiB, each echo checked byte for byte, then three
#    messages in one write, which must come back as three messages
# 4b. the asyncio API (read_msg, write_msg) against the C echo-server as
#    in 4, its errors on a socket pair as in 5, and a read_msg cancelled by
#    asyncio.wait_for in mid-message, which the next call resumes
# 5. sockmsg's error handling on a socket pair: clean close (None),
#    truncated header and payload, a header over max_len (exactly max_len
#    passes)
# 5b. a socket timeout in mid-header and mid-payload loses nothing: the
#    next recv_msg resumes; connect(addr, timeout=T) leaves T on the socket
# 6. as 4, against `smcat --listen 127.0.0.1:0 --echo` when BUILD_DIR/smcat
#    exists (tools/smcat/); skipped with a note otherwise
#
# Servers listen on 127.0.0.1 port 0 and print the port they got.  Every
# program runs under timeout(1), so no wait is unbounded, and a server
# still running when the script ends is killed by its PID.
set -eu

build=${1:?usage: sh tests/python.sh BUILD_DIR}
[ -d "$build" ] || { echo "python peers: FAIL: no directory $build" >&2; exit 1; }
build=$(cd "$build" && pwd)
cd "$(dirname "$0")/.."
py=examples/python
ex=$build/examples
limit=30 # seconds any one program may run
# Python as users run it: stdout buffered unless the program flushes (the
# servers must flush their "listening on" line).  No .pyc files in the tree.
unset PYTHONUNBUFFERED
PYTHONDONTWRITEBYTECODE=1
export PYTHONDONTWRITEBYTECODE

fail() {
    printf "python peers: FAIL: %s\n" "$*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (make deps)"
for f in server client echo-server; do
    [ -x "$ex/$f" ] || fail "no $ex/$f (build it: make BUILD=$build all)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-python.XXXXXX") || fail "mktemp -d"
pids=
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# 0. pip install ./examples/python into a fresh environment.  It is made
# without pip (that is quick) and python3's own pip installs into it; a pip
# older than --python (22.3) gets environments with a pip of their own.
# pip_install ENV ARGS...: pip install ARGS into the environment ENV.
if python3 -m pip help install 2>/dev/null | grep -q -- '--python '; then
    venv_opts=--without-pip
    pip_install() {
        env=$1
        shift
        timeout 120 python3 -m pip --python "$env/bin/python" install --no-index \
            --disable-pip-version-check --quiet "$@"
    }
else
    venv_opts=
    pip_install() {
        env=$1
        shift
        timeout 120 "$env/bin/python" -m pip install --no-index --disable-pip-version-check --quiet "$@"
    }
fi
venv=$tmp/venv
# shellcheck disable=SC2086
timeout 120 python3 -m venv $venv_opts "$venv" || fail "python3 -m venv (Debian: apt-get install python3-venv)"
pip_install "$venv" "./$py" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; fail "pip install ./$py"; }
PY=$venv/bin/python
part() { sed -n "s/^#define SM_VERSION_$1 \([0-9][0-9]*\).*/\1/p" include/sockmsg/sockmsg.h; }
version=$(part MAJOR).$(part MINOR).$(part PATCH)
timeout "$limit" "$PY" -I - "$venv" "$version" "$(pwd)/$py" "$tmp/sdist" >"$tmp/install.out" 2>"$tmp/install.err" <<'EOF' ||
import filecmp, importlib.metadata, os, sys
sys.dont_write_bytecode = True  # -I ignores PYTHONDONTWRITEBYTECODE: no __pycache__ in the tree
venv, version, source, sdist = sys.argv[1:5]
import sockmsg
where = os.path.realpath(sockmsg.__file__)
if not where.startswith(os.path.realpath(venv) + os.sep):
    sys.exit("sockmsg was imported from %s, not from the environment %s" % (where, venv))
if not filecmp.cmp(where, os.path.join(source, "sockmsg.py"), shallow=False):
    sys.exit("the installed %s differs from examples/python/sockmsg.py" % where)
got = importlib.metadata.version("sockmsg")
if got != version:
    sys.exit("the package's version is %s, libsockmsg's (sockmsg.h) %s" % (got, version))
sys.path.insert(0, os.path.join(source, "backend"))
import sockmsg_backend
with open(os.path.join(source, "pyproject.toml"), encoding="utf-8") as f:
    text = f.read()
try:
    import tomllib
except ImportError:
    tomllib = None
if tomllib and sockmsg_backend.parse_project_table(text) != tomllib.loads(text)["project"]:
    sys.exit("the backend's TOML reader and tomllib read pyproject.toml differently")
os.makedirs(sdist)
print(os.path.join(sdist, sockmsg_backend.build_sdist(sdist)))
EOF
    { cat "$tmp/install.err" >&2; fail "the installed sockmsg package"; }
# The sdist the backend makes installs as well, into a second environment.
# shellcheck disable=SC2086
timeout 120 python3 -m venv $venv_opts "$tmp/venv2" || fail "python3 -m venv"
pip_install "$tmp/venv2" "$(cat "$tmp/install.out")" >"$tmp/pip2.log" 2>&1 ||
    { cat "$tmp/pip2.log" >&2; fail "pip install of the sdist $(cat "$tmp/install.out")"; }
[ "$("$tmp/venv2/bin/python" -I -c 'import importlib.metadata as m; print(m.version("sockmsg"))')" = "$version" ] ||
    fail "the sdist did not install sockmsg $version"
cases=1

# start NAME COMMAND...: runs COMMAND in the background (stdout and stderr
# to $tmp/NAME.out and .err), waits at most 10 s for its "listening on
# ADDR" line and sets $pid and $addr.  A server that exits first fails.
start() {
    name=$1
    shift
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    pids="$pids $pid"
    i=0
    until grep -qE '^(smcat: )?listening on ' "$tmp/$name.out" "$tmp/$name.err" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$tmp/$name.err" >&2
            fail "$name exited without saying where it listens"
        fi
        i=$((i + 1))
        [ "$i" -le 100 ] || fail "$name did not say where it listens within 10 s"
        sleep 0.1
    done
    addr=$(sed -n 's/^\(smcat: \)\{0,1\}listening on //p' "$tmp/$name.out" "$tmp/$name.err" | head -n 1)
    case $addr in
    127.0.0.1:[1-9]*) ;;
    *) fail "$name: listening on '$addr', expected 127.0.0.1:PORT" ;;
    esac
}

# finish NAME [STATUS...]: waits (bounded by timeout) for the server
# started last and checks it exited with a STATUS (default 0) and wrote
# nothing to stderr but its "listening on" line.
finish() {
    name=$1
    shift
    st=0
    wait "$pid" || st=$?
    pids=$(echo "$pids" | sed "s/ $pid\$//")
    case " ${*:-0} " in
    *" $st "*) ;;
    *) cat "$tmp/$name.err" >&2; fail "$name exited with status $st" ;;
    esac
    ! grep -qvE '^(smcat: )?listening on ' "$tmp/$name.err" ||
        { cat "$tmp/$name.err" >&2; fail "$name wrote to stderr"; }
}

# client NAME WANT COMMAND...: runs a client; it must exit 0, print exactly
# the line WANT (byte for byte, newline included) and nothing on stderr.
client() {
    name=$1
    printf '%s\n' "$2" >"$tmp/want"
    shift 2
    st=0
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || st=$?
    [ "$st" -eq 0 ] || { cat "$tmp/$name.err" >&2; fail "$name exited with status $st"; }
    cmp -s "$tmp/want" "$tmp/$name.out" ||
        fail "$name printed '$(od -An -c "$tmp/$name.out" | tr -s ' \n' ' ')', expected '$(od -An -c "$tmp/want" | tr -s ' \n' ' ')'"
    [ ! -s "$tmp/$name.err" ] || { cat "$tmp/$name.err" >&2; fail "$name wrote to stderr"; }
}


# 1-3. The tutorial's server and client, in every pairing but C with C.
start "C server" "$ex/server" 127.0.0.1:0
client "client.py (C server)" TEST "$PY" -I "$py/client.py" "$addr"
finish "C server"
cases=$((cases + 1))

start "server.py" "$PY" -I "$py/server.py" 127.0.0.1:0
client "C client (server.py)" TEST "$ex/client" "$addr"
finish "server.py"
cases=$((cases + 1))

start "server.py" "$PY" -I "$py/server.py" 127.0.0.1:0
client "client.py (server.py)" TEST "$PY" -I "$py/client.py" "$addr"
finish "server.py"
cases=$((cases + 1))

# echo_check NAME ADDR: sockmsg.py sends messages of many sizes to the echo
# server at ADDR and checks every echo byte for byte, then three small
# messages in one write (the echoes must come back as three messages).
# Prints "ok N".
echo_check() {
    timeout "$limit" "$PY" -I - "$2" >"$tmp/$1.out" 2>"$tmp/$1.err" <<'EOF' ||
import sys
import sockmsg

def pattern(i, size):
    # Bytes that depend on the message and the offset: a shifted, mixed-up
    # or truncated echo never matches.
    period = bytes((i * 7 + k) % 251 for k in range(251))
    return (period * (size // 251 + 1))[:size]

sizes = [0, 1, 4, 0, 100, 65535, 65536, 65537, 70000, 1 << 20]
with sockmsg.connect(sys.argv[1], timeout=20) as s:
    for i, size in enumerate(sizes):
        want = b"TEST" if size == 4 else pattern(i, size)
        sockmsg.send_msg(s, want)
        got = sockmsg.recv_msg(s)
        if got != want:
            sys.exit("message %d: sent %d bytes, got back %s"
                     % (i, size, "nothing" if got is None else "%d different bytes" % len(got)))
    glued = [b"hi", b"", b"abc"]
    s.sendall(b"".join(sockmsg.HEADER.pack(len(m)) + m for m in glued))
    got = [sockmsg.recv_msg(s) for m in glued]
    if got != glued:
        sys.exit("three messages in one write came back as %r" % got)
print("ok %d" % (len(sizes) + len(glued)))
EOF
    { cat "$tmp/$1.err" >&2; fail "$1: sockmsg.py against the echo server"; }
    [ ! -s "$tmp/$1.err" ] || { cat "$tmp/$1.err" >&2; fail "$1 wrote to stderr"; }
    grep -qx 'ok 13' "$tmp/$1.out" || fail "$1 printed '$(cat "$tmp/$1.out")', expected 'ok 13'"
}

# 4. sockmsg.py against the C echo-server, which stops cleanly on SIGTERM.
start "echo-server" "$ex/echo-server" 127.0.0.1:0
echo_check "sockmsg.py (echo-server)" "$addr"
kill -TERM "$pid" 2>/dev/null || true
finish "echo-server"
cases=$((cases + 1))

# 4b. The asyncio API (read_msg, write_msg) against the C echo-server: the
# same sizes as 4, three messages in one write; then, on a socket pair,
# the errors and a read cancelled by asyncio.wait_for in mid-message.
start "echo-server" "$ex/echo-server" 127.0.0.1:0
timeout "$limit" "$PY" -I - "$addr" >"$tmp/asyncio.out" 2>"$tmp/asyncio.err" <<'EOF' ||
import asyncio, socket, sys
import sockmsg

def pattern(i, size):
    period = bytes((i * 11 + k) % 251 for k in range(251))
    return (period * (size // 251 + 1))[:size]

async def echo(addr):
    host, port = sockmsg.parse_addr(addr)
    reader, writer = await asyncio.open_connection(host, port)
    for i, size in enumerate([0, 1, 4, 100, 65535, 65536, 65537, 70000, 1 << 20]):
        want = pattern(i, size)
        sockmsg.write_msg(writer, want)
        await writer.drain()
        got = await asyncio.wait_for(sockmsg.read_msg(reader), 20)
        if got != want:
            sys.exit("message %d: sent %d bytes, got back %r" % (i, size, got and len(got)))
    glued = [b"hi", b"", b"abc"]
    for m in glued:
        sockmsg.write_msg(writer, m)
    await writer.drain()
    got = [await asyncio.wait_for(sockmsg.read_msg(reader), 20) for m in glued]
    if got != glued:
        sys.exit("three messages in one write came back as %r" % got)
    writer.close()
    await writer.wait_closed()

async def pair():
    """An asyncio stream over one end of a socket pair, and the other end."""
    a, b = socket.socketpair()
    a.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=b)
    return a, reader, writer

async def outcome(data, **kw):
    """What read_msg says after data and a close: its result or exception."""
    a, reader, writer = await pair()
    a.sendall(data)
    a.close()
    try:
        return await asyncio.wait_for(sockmsg.read_msg(reader, **kw), 10)
    except Exception as e:
        return e
    finally:
        writer.close()

async def errors():
    checks = [
        (b"", {}, lambda r: r is None, "clean close: None"),
        (b"\0\0\0\4TEST", {}, lambda r: r == b"TEST", "a whole message"),
        (b"\0\0", {}, lambda r: isinstance(r, sockmsg.TruncatedMessage), "2 header bytes"),
        (b"\0\0\0\4TE", {}, lambda r: isinstance(r, sockmsg.TruncatedMessage), "half a payload"),
        (b"\xff\xff\xff\xff", {}, lambda r: isinstance(r, sockmsg.MessageTooBig), "4 GiB header"),
        (b"\0\0\0\6123456", {"max_len": 5}, lambda r: isinstance(r, sockmsg.MessageTooBig), "max_len + 1"),
        (b"\0\0\0\00512345", {"max_len": 5}, lambda r: r == b"12345", "exactly max_len"),
    ]
    for data, kw, ok, what in checks:
        r = await outcome(data, **kw)
        if not ok(r):
            sys.exit("%s: got %r" % (what, r))

async def cancelled():
    a, reader, writer = await pair()
    loop = asyncio.get_running_loop()
    payload = b"y" * 100000
    frame = sockmsg.HEADER.pack(len(payload)) + payload
    for cut in (2, 4 + 30000):
        await loop.sock_sendall(a, frame[:cut])
        try:
            r = await asyncio.wait_for(sockmsg.read_msg(reader), 0.2)
            sys.exit("read_msg returned %r from a part of a message" % r[:20])
        except asyncio.TimeoutError:
            pass
        await loop.sock_sendall(a, frame[cut:])
        got = await asyncio.wait_for(sockmsg.read_msg(reader), 10)
        if got != payload:
            sys.exit("cut at %d: after the cancellation, got %r..." % (cut, got and got[:20]))
    a.close()
    writer.close()

async def main(addr):
    await echo(addr)
    await errors()
    await cancelled()
    # write_msg refuses what no header can announce, before writing anything.
    class Big(bytes):
        def __len__(self):
            return 1 << 32
    try:
        sockmsg.write_msg(None, Big())
        sys.exit("write_msg accepted a 4 GiB message")
    except sockmsg.MessageTooBig:
        pass
    print("ok")

asyncio.run(main(sys.argv[1]))
EOF
    { cat "$tmp/asyncio.err" >&2; fail "sockmsg.py asyncio API"; }
[ ! -s "$tmp/asyncio.err" ] || { cat "$tmp/asyncio.err" >&2; fail "sockmsg.py asyncio API wrote to stderr"; }
kill -TERM "$pid" 2>/dev/null || true
finish "echo-server"
cases=$((cases + 1))

# 5. sockmsg.py's errors, on a socket pair: what arrives, what recv_msg says.
timeout "$limit" "$PY" -I - >"$tmp/errors.out" 2>"$tmp/errors.err" <<'EOF' ||
import socket, sys
import sockmsg

def receive(data, **kw):
    """Write data and close, then call recv_msg: its result or its exception."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.close()
        b.settimeout(10)
        try:
            return sockmsg.recv_msg(b, **kw)
        except Exception as e:
            return e

cases = [
    (b"", lambda r: r is None, "clean close: None"),
    (b"\0\0\0\4TEST", lambda r: r == b"TEST", "a whole message"),
    (b"\0\0", lambda r: isinstance(r, sockmsg.TruncatedMessage), "2 header bytes: TruncatedMessage"),
    (b"\0\0\0\4TE", lambda r: isinstance(r, sockmsg.TruncatedMessage), "half a payload: TruncatedMessage"),
    (b"\xff\xff\xff\xff", lambda r: isinstance(r, sockmsg.MessageTooBig), "4 GiB header: MessageTooBig"),
    (b"\x01\0\0\0", lambda r: isinstance(r, sockmsg.MessageTooBig), "16 MiB with max_len 1 MiB: MessageTooBig"),
]
bad = 0
for data, ok, what in cases:
    kw = {"max_len": 1 << 20} if data == b"\x01\0\0\0" else {}
    r = receive(data, **kw)
    if not ok(r):
        print("%s: got %r" % (what, r), file=sys.stderr)
        bad += 1
# Exactly max_len is accepted, one byte more is not.
a, b = socket.socketpair()
with a, b:
    b.settimeout(10)
    sockmsg.send_msg(a, b"12345")
    sockmsg.send_msg(a, b"123456")
    if sockmsg.recv_msg(b, max_len=5) != b"12345":
        print("a message of exactly max_len was not accepted", file=sys.stderr)
        bad += 1
    try:
        r = sockmsg.recv_msg(b, max_len=5)
        print("max_len + 1 bytes accepted: %r" % r, file=sys.stderr)
        bad += 1
    except sockmsg.MessageTooBig:
        pass
sys.exit(1 if bad else 0)
EOF
    { cat "$tmp/errors.err" >&2; fail "sockmsg.py error handling"; }
cases=$((cases + 1))

# 5b. A timeout in the middle of a message loses nothing: recv_msg keeps
# the bytes it read and the next call resumes.  connect(addr, timeout=T)
# leaves T on the socket, as documented.
timeout "$limit" "$PY" -I - >"$tmp/resume.out" 2>"$tmp/resume.err" <<'EOF' ||
import socket, sys
import sockmsg

payload = b"x" * 100000 + b"end"
frame = sockmsg.HEADER.pack(len(payload)) + payload
a, b = socket.socketpair()
with a, b:
    b.settimeout(0.2)
    # Cut inside the header, then twice inside the payload.
    for cut in (2, 4 + 50000, len(frame) - 1):
        a.sendall(frame[:cut])
        try:
            sys.exit("recv_msg returned %r from a part of a message" % sockmsg.recv_msg(b)[:20])
        except socket.timeout:
            pass
        a.sendall(frame[cut:])
        got = sockmsg.recv_msg(b)
        if got != payload:
            sys.exit("cut at %d: after the timeout, got %r..." % (cut, got[:20]))
    # A timeout while nothing at all has arrived, then a normal message.
    try:
        sys.exit("recv_msg returned %r from nothing" % sockmsg.recv_msg(b))
    except socket.timeout:
        pass
    sockmsg.send_msg(a, b"after")
    if sockmsg.recv_msg(b) != b"after":
        sys.exit("the message after a timeout was lost")

listener = sockmsg.listen("127.0.0.1:0")
with listener:
    with sockmsg.connect(sockmsg.address_of(listener), timeout=2.5) as c:
        if c.gettimeout() != 2.5:
            sys.exit("connect(timeout=2.5) left %r on the socket" % c.gettimeout())
    with sockmsg.connect(sockmsg.address_of(listener)) as c:
        if c.gettimeout() is not None:
            sys.exit("connect() left a timeout of %r on the socket" % c.gettimeout())
print("ok")
EOF
    { cat "$tmp/resume.err" >&2; fail "sockmsg.py: resuming after a timeout"; }
cases=$((cases + 1))

# 6. smcat (tools/smcat/), when it is built.
if [ -x "$build/smcat" ]; then
    start "smcat --echo" "$build/smcat" --listen 127.0.0.1:0 --echo
    echo_check "sockmsg.py (smcat --echo)" "$addr"
    kill -TERM "$pid" 2>/dev/null || true
    finish "smcat --echo" 0 143 # stopped by SIGTERM: cleanly or by the signal
    cases=$((cases + 1))
else
    echo "python peers: note: $build/smcat not built, smcat case skipped"
fi

echo "python peers: ok ($cases cases)"
