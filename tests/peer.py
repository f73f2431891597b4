#!/usr/bin/env python3
"""A libsockmsg peer in plain Python 3 (standard library only), used by the
interop tests (tests/test_interop.c), the smcat tests (tests/smcat.sh) and
the TLS tests (tests/tls.sh).  It speaks docs/PROTOCOL.md: each
message is a 4-byte unsigned big-endian length N, then N bytes of payload.

    peer.py serve HOST:PORT       listen (port 0: any free port), print
                                  "listening on HOST:PORT", accept one client
                                  and echo every message until it closes
    peer.py client HOST:PORT N    send N messages (sizes cycle through
                                  0, 1, 100, 4096, 70000, 1048576), check each
                                  echo byte for byte, print "ok N"
    peer.py slow-echo HOST:PORT MS [N]
                                  listen and accept one client as serve does,
                                  but echo each message MS milliseconds after
                                  it arrived, and close after N echoes (default:
                                  never).  Like libsockmsg's event server, it
                                  takes the end of the client's input as the
                                  end of the conversation: it closes at once,
                                  and echoes not yet sent are lost.
    peer.py tls-serve HOST:PORT CERT KEY [CA] [GREETING]
                                  as serve, over TLS (the ssl module) with the
                                  certificate CERT and its key KEY; with a CA
                                  file other than "-", clients must show a
                                  certificate it signed (mutual TLS), whose
                                  subject goes to stderr; GREETING, if given,
                                  is sent once the handshake is done

Addresses: "127.0.0.1:PORT", "[::1]:PORT" or "name:PORT".  Exit status 0 on
success; 1 with a message on stderr on any error; 2 on bad usage.
"""
import select
import socket
import ssl
import struct
import sys
import time

HEADER = struct.Struct("!I")          # 4 bytes, unsigned, big-endian
MAX_FRAME = 16 * 1024 * 1024          # libsockmsg's default maximum
TIMEOUT = 30.0                        # seconds; no call here waits longer
SIZES = [0, 1, 100, 4096, 70000, 1048576]


class TruncatedFrame(EOFError):
    """The stream ended inside a frame (in its header or its payload)."""


class FrameTooBig(ValueError):
    """A header announced more than the maximum frame size."""


def send_msg(sock, data):
    """Send data (bytes-like) as one message."""
    data = memoryview(data)
    if data.nbytes > 0xFFFFFFFF:
        raise FrameTooBig("%d bytes do not fit a frame" % data.nbytes)
    header = HEADER.pack(data.nbytes)
    if data.nbytes <= 65536:
        sock.sendall(header + data)   # one write: no Nagle stall
    else:
        sock.sendall(header)
        sock.sendall(data)


def recv_exactly(sock, n):
    """Read until n bytes arrived or the stream ended; recv() returns
    whatever piece of the stream is there, so loop.  May return fewer
    than n bytes only at end of stream."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            break
        got += k
    return bytes(view[:got])


def recv_msg(sock, max_frame=MAX_FRAME):
    """One whole message as bytes.  None on a clean close between messages;
    raises TruncatedFrame if the stream ends inside a frame, and FrameTooBig
    (before reading or allocating the payload) if the header announces more
    than max_frame bytes."""
    header = recv_exactly(sock, HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise TruncatedFrame("stream ended after %d header bytes" % len(header))
    (n,) = HEADER.unpack(header)
    if n > max_frame:
        raise FrameTooBig("peer announced %d bytes, max frame is %d" % (n, max_frame))
    payload = recv_exactly(sock, n)
    if len(payload) < n:
        raise TruncatedFrame("stream ended after %d of %d payload bytes" % (len(payload), n))
    return payload


def parse_addr(text):
    """'127.0.0.1:5', '[::1]:5' or 'name:5' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("%r: expected HOST:PORT or [V6ADDR]:PORT" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host or not host:
        raise ValueError("%r: an IPv6 address needs brackets, [::1]:PORT" % text)
    return host, int(port)


def format_addr(sockaddr, family):
    host, port = sockaddr[0], sockaddr[1]
    return "[%s]:%d" % (host, port) if family == socket.AF_INET6 else "%s:%d" % (host, port)


def message(i):
    """Message i of the client: its size cycles through SIZES; its bytes
    depend on i and the offset, so a shifted, mixed-up or truncated echo
    never matches."""
    size = SIZES[i % len(SIZES)]
    period = bytes((i * 13 + k) % 251 for k in range(251))
    return (period * (size // 251 + 1))[:size]


def no_delay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def accept_one(addr):
    """Listen on addr, print "listening on HOST:PORT", accept one client."""
    host, port = parse_addr(addr)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(sockaddr)
        ls.listen(1)
        print("listening on %s" % format_addr(ls.getsockname(), family), flush=True)
        ls.settimeout(TIMEOUT)
        conn, _ = ls.accept()
    conn.settimeout(TIMEOUT)
    no_delay(conn)
    return conn


def serve(addr):
    with accept_one(addr) as conn:
        count = 0
        while (msg := recv_msg(conn)) is not None:
            send_msg(conn, msg)
            count += 1
    print("echoed %d" % count, file=sys.stderr, flush=True)
    return 0


def tls_serve(addr, cert, key, ca, greeting):
    """serve, over TLS: the handshake on accept, then the same echo."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if ca and ca != "-":
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    with accept_one(addr) as raw, ctx.wrap_socket(raw, server_side=True) as conn:
        version = conn.version()
        if ctx.verify_mode == ssl.CERT_REQUIRED:
            subject = dict(item[0] for item in conn.getpeercert()["subject"])
            print("client certificate: CN=%s" % subject.get("commonName"), file=sys.stderr)
        if greeting is not None:
            send_msg(conn, greeting.encode())
        count = 0
        while (msg := recv_msg(conn)) is not None:
            send_msg(conn, msg)
            count += 1
    print("echoed %d over %s" % (count, version), file=sys.stderr, flush=True)
    return 0


def slow_echo(addr, delay_ms, limit):
    """Echo each message delay_ms after it arrived; stop at the client's end
    of input (dropping what is still due) or after limit echoes."""
    deadline = time.monotonic() + TIMEOUT
    with accept_one(addr) as conn:
        pending = bytearray()   # received bytes not yet cut into messages
        due = []                # (time to echo, message), oldest first
        echoed = 0
        while limit is None or echoed < limit:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("still running after %d s" % TIMEOUT)
            wait = min([deadline - now] + [max(t - now, 0) for t, _ in due[:1]])
            if select.select([conn], [], [], wait)[0]:
                data = conn.recv(65536)
                if not data:
                    break       # the client's input ended: so does the conversation
                pending += data
                while len(pending) >= HEADER.size:
                    (n,) = HEADER.unpack_from(pending)
                    if len(pending) < HEADER.size + n:
                        break
                    due.append((time.monotonic() + delay_ms / 1000,
                                bytes(pending[HEADER.size:HEADER.size + n])))
                    del pending[:HEADER.size + n]
            while due and due[0][0] <= time.monotonic() and (limit is None or echoed < limit):
                send_msg(conn, due.pop(0)[1])
                echoed += 1
    print("echoed %d, dropped %d" % (echoed, len(due)), file=sys.stderr, flush=True)
    return 0


def client(addr, count):
    with socket.create_connection(parse_addr(addr), timeout=TIMEOUT) as s:
        no_delay(s)
        for i in range(count):
            want = message(i)
            send_msg(s, want)
            got = recv_msg(s)
            if got is None:
                print("message %d: peer closed instead of echoing" % i, file=sys.stderr)
                return 1
            if got != want:
                at = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                          min(len(got), len(want)))
                print("message %d: echo of %d bytes differs from the %d sent, at offset %d"
                      % (i, len(got), len(want), at), file=sys.stderr)
                return 1
    print("ok %d" % count, flush=True)
    return 0


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "serve":
            return serve(argv[2])
        if len(argv) == 4 and argv[1] == "client" and argv[3].isdigit():
            return client(argv[2], int(argv[3]))
        if len(argv) in (5, 6, 7) and argv[1] == "tls-serve":
            return tls_serve(argv[2], argv[3], argv[4], argv[5] if len(argv) > 5 else None,
                             argv[6] if len(argv) > 6 else None)
        if (len(argv) in (4, 5) and argv[1] == "slow-echo"
                and all(a.isdigit() for a in argv[3:])):
            return slow_echo(argv[2], int(argv[3]), int(argv[4]) if len(argv) == 5 else None)
    except (OSError, EOFError, ValueError) as e:
        print("peer.py %s: %s: %s" % (argv[1], type(e).__name__, e), file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
