"""sockmsg.py - whole messages over TCP and Unix sockets, in plain Python 3 (3.8+).

This is libsockmsg's wire format (docs/PROTOCOL.md) in a page of standard
library code, so a Python program can talk to the C library's programs, and
to other Python programs using this file.  Copy it into your project.

Every message goes on the wire as

    4 bytes   the payload's length N: unsigned, big-endian ("network order")
    N bytes   the payload itself

so b"TEST" is sent as  00 00 00 04 54 45 53 54,  and b"" as  00 00 00 00.

Why not just sock.send(b"TEST") and sock.recv(1024)?  TCP carries a stream
of bytes, not messages: it keeps the bytes in order but not where one send()
ended.  recv(1024) returns whatever part of the stream has arrived so far -
maybe all of "TEST", maybe only "TE" (the rest comes with the next recv),
maybe "TEST" glued to the start of the next message.  On one quiet machine
one send() usually does look like one recv(), so the bug hides until the
messages get big or the network gets busy.  With the length in front, the
receiver knows exactly how many bytes belong to this message, and
recv_msg() below keeps calling recv() until it has them all.

    send_msg(sock, data)    send bytes as one message
    recv_msg(sock)          receive one whole message as bytes; None when the
                            peer closed the connection between two messages

and, to use the same address strings as the C examples ("host:port",
"[v6addr]:port", ":port" for every interface, "unix:/path"; port 0 lets the
system pick a free port):

    listen(addr)            a listening socket, ready for accept()
    connect(addr)           a connected socket
    address_of(sock)        a socket's own address as such a string
"""
import os
import socket
import stat
import struct

HEADER = struct.Struct("!I")  # "!" = big-endian, "I" = 4-byte unsigned int
MAX_LEN = 16 * 2**20          # 16 MiB, libsockmsg's default maximum message


class MessageTooBig(ValueError):
    """The peer announced a message longer than we accept (max_len)."""


class TruncatedMessage(EOFError):
    """The connection ended in the middle of a message."""


def send_msg(sock, data):
    """Send data (bytes) as one message: its 4-byte length, then the bytes.

    sendall() keeps sending until every byte is handed to the system (plain
    send() may take only part of it and tell you how much).  The header and
    the payload go out in one call, so they can leave in one packet instead
    of the payload waiting for the header's acknowledgement."""
    if len(data) > 0xFFFFFFFF:
        raise MessageTooBig("%d bytes do not fit in one message" % len(data))
    sock.sendall(HEADER.pack(len(data)) + data)


def recv_exactly(sock, n):
    """Receive exactly n bytes, or fewer only if the peer closed first.

    sock.recv(k) returns between 1 and k bytes - whatever part of the stream
    has arrived, however the sender's send() calls were split - and b"" once
    the peer has closed the connection.  So ask again until n bytes are here."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 65536))
        if not chunk:  # b"": the peer closed the connection
            break
        buf += chunk
    return bytes(buf)


def recv_msg(sock, max_len=MAX_LEN):
    """Receive one whole message and return it as bytes (b"" if it is empty).

    Returns None when the peer closed the connection cleanly between two
    messages: the normal end of a conversation.  Raises TruncatedMessage (an
    EOFError) if it closed in the middle of a message, and MessageTooBig (a
    ValueError) if the header announces more than max_len bytes - checked
    before reading the payload, so a broken or hostile peer cannot make us
    wait for or store up to 4 GiB.  Network errors (connection reset,
    timeout) are raised by the socket as OSError."""
    header = recv_exactly(sock, HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise TruncatedMessage("connection closed after %d of the 4 header bytes"
                               % len(header))
    (n,) = HEADER.unpack(header)
    if n > max_len:
        raise MessageTooBig("peer announced a %d-byte message, more than the %d allowed"
                            % (n, max_len))
    payload = recv_exactly(sock, n)
    if len(payload) < n:
        raise TruncatedMessage("connection closed after %d of %d message bytes"
                               % (len(payload), n))
    return payload


# ---- addresses, written as in libsockmsg ----

def parse_addr(addr):
    """"host:port", "[v6addr]:port" or ":port" -> (host, port);
    "unix:/path" -> "/path".  Raises ValueError for anything else."""
    if addr.startswith("unix:"):
        return addr[len("unix:"):]
    host, colon, port = addr.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError("'%s': expected host:port, [v6]:port, :port or unix:/path" % addr)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("'%s': write IPv6 addresses in brackets, as [::1]:port" % addr)
    return host, int(port)


def listen(addr):
    """A socket listening on addr.  ":port" takes IPv6 and IPv4 clients."""
    where = parse_addr(addr)
    if isinstance(where, str):  # a Unix-domain socket, a file
        remove_stale_socket(where)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(where)
        sock.listen()
        return sock
    host, port = where
    if not host and socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6,
                                    dualstack_ipv6=True)
    # IPv4 or IPv6, whichever the host name or address turns out to be.
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family)


def remove_stale_socket(path):
    """Delete a socket file a dead server left behind (bind() would fail),
    but not one a live server still answers on."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(path)  # someone answers: leave it, bind() will say so
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass


def connect(addr, timeout=None):
    """A socket connected to addr (timeout in seconds, None: wait as long as
    the system does).  A name is tried at each of its addresses in turn."""
    where = parse_addr(addr)
    if isinstance(where, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(where)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection(where, timeout=timeout)
    # Send small messages at once instead of gathering them (libsockmsg
    # does the same): better for request/answer conversations.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def address_of(sock):
    """The socket's own address, e.g. "127.0.0.1:41234": after listening on
    port 0, the port the system picked."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return "unix:" + name
    host, port = name[0], name[1]
    if host.startswith("::ffff:") and "." in host:  # an IPv4 client over IPv6
        host = host[len("::ffff:"):]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
