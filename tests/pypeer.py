#!/usr/bin/env python3
"""A libsockmsg peer in plain Python 3 (standard library only), for the
interop tests.  The frame format: 4-byte big-endian length, then payload.

    pypeer.py serve HOST:PORT      echo every message until the client closes
    pypeer.py client HOST:PORT N   send N messages, check each echo, print "ok N"
"""
import socket
import struct
import sys


def send_msg(sock, data):
    sock.sendall(struct.pack("!I", len(data)) + data)


def recv_exactly(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    return bytes(buf)


def recv_msg(sock):
    """One whole message; None on a clean close between messages."""
    header = recv_exactly(sock, 4)
    if not header:
        return None
    if len(header) < 4:
        raise EOFError("truncated frame header")
    (n,) = struct.unpack("!I", header)
    payload = recv_exactly(sock, n)
    if len(payload) < n:
        raise EOFError("truncated frame")
    return payload


def split_addr(text):
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def serve(addr):
    host, port = split_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as ls:
        ls.bind((host, port))
        ls.listen(1)
        bound = ls.getsockname()
        shown = "[%s]" % bound[0] if family == socket.AF_INET6 else bound[0]
        print("listening on %s:%d" % (shown, bound[1]), flush=True)
        conn, _ = ls.accept()
        with conn:
            while (msg := recv_msg(conn)) is not None:
                send_msg(conn, msg)


SIZES = [0, 1, 100, 4096, 70000, 1048576]


def message(i):
    size = SIZES[i % len(SIZES)]
    return bytes((i * 13 + k) % 251 for k in range(size))


def client(addr, count):
    with socket.create_connection(split_addr(addr), timeout=20) as s:
        for i in range(count):
            want = message(i)
            send_msg(s, want)
            got = recv_msg(s)
            if got != want:
                print("message %d: echo differs" % i, file=sys.stderr)
                return 1
    print("ok %d" % count, flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "client":
        sys.exit(client(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit(__doc__)
