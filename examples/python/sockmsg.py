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

for asyncio streams (asyncio.open_connection, asyncio.start_server):

    await read_msg(reader)  receive one whole message (None: closed)
    write_msg(writer, data) queue one message; then `await writer.drain()`

and, to use the same address strings as the C examples ("host:port",
"[v6addr]:port", ":port" for every interface, "unix:/path"; port 0 lets the
system pick a free port):

    listen(addr)            a listening socket, ready for accept()
    connect(addr)           a connected socket
    connect(addr, timeout=2.0)  the same, and every later call on the
                            socket gives up after 2 s (see Timeouts)
    address_of(sock)        a socket's own address as such a string

Timeouts.  With a timeout on the socket (sock.settimeout(2.0), or
connect(addr, timeout=2.0), which leaves it there), recv_msg raises
socket.timeout (TimeoutError) when nothing completes a message in time.
Nothing is lost: the bytes of a message that had begun to arrive are kept
with the socket, and the next recv_msg(sock) resumes where this one
stopped.  The same holds for a non-blocking socket (BlockingIOError), and
for read_msg cancelled by asyncio.wait_for.  So read a socket only through
recv_msg.  A timeout in send_msg is different: part of the message may
have gone out, and the peer can no longer tell where messages start, so
close the connection.
"""
import asyncio
import os
import socket
import stat
import struct
import weakref

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


def recv_until(sock, buf, n):
    """Receive into buf (a bytearray) until it holds n bytes, or fewer only
    if the peer closed first.

    sock.recv(k) returns between 1 and k bytes - whatever part of the stream
    has arrived, however the sender's send() calls were split - and b"" once
    the peer has closed the connection.  So ask again until n bytes are here.
    If the socket times out, buf keeps what did arrive."""
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 65536))
        if not chunk:  # b"": the peer closed the connection
            break
        buf += chunk


# A message cut short by a timeout: its bytes so far, for the next recv_msg
# on the same socket.  Forgotten when the socket is.
_unfinished = weakref.WeakKeyDictionary()


def recv_msg(sock, max_len=MAX_LEN):
    """Receive one whole message and return it as bytes (b"" if it is empty).

    Returns None when the peer closed the connection cleanly between two
    messages: the normal end of a conversation.  Raises TruncatedMessage (an
    EOFError) if it closed in the middle of a message, and MessageTooBig (a
    ValueError) if the header announces more than max_len bytes - checked
    before reading the payload, so a broken or hostile peer cannot make us
    wait for or store up to 4 GiB.  Network errors (connection reset) are
    raised by the socket as OSError; a timeout raises socket.timeout and
    loses nothing: call recv_msg again to resume (see Timeouts above)."""
    buf = _unfinished.pop(sock, None) or bytearray()  # header + payload so far
    try:
        recv_until(sock, buf, HEADER.size)
        if not buf:
            return None
        if len(buf) < HEADER.size:
            raise TruncatedMessage("connection closed after %d of the 4 header bytes"
                                   % len(buf))
        (n,) = HEADER.unpack_from(buf)
        if n > max_len:
            raise MessageTooBig("peer announced a %d-byte message, more than the %d allowed"
                                % (n, max_len))
        recv_until(sock, buf, HEADER.size + n)
    except (socket.timeout, BlockingIOError):
        _unfinished[sock] = buf  # the next call goes on from here
        raise
    if len(buf) < HEADER.size + n:
        raise TruncatedMessage("connection closed after %d of %d message bytes"
                               % (len(buf) - HEADER.size, n))
    return bytes(buf[HEADER.size:])


# ---- the same for asyncio streams ----

# A header read_msg had taken when it was cancelled (asyncio.wait_for): the
# length it announced, for the next read_msg on the same reader.
_announced = weakref.WeakKeyDictionary()


async def read_msg(reader, max_len=MAX_LEN):
    """Receive one whole message from an asyncio.StreamReader, as recv_msg.

    Returns the payload as bytes, or None when the peer closed between two
    messages; raises TruncatedMessage and MessageTooBig (checked before the
    payload is read) as recv_msg does.  Cancelled, for instance by
    asyncio.wait_for(read_msg(reader), 2.0), it loses nothing: the next
    read_msg(reader) resumes."""
    n = _announced.pop(reader, None)
    if n is None:
        try:
            # readexactly takes all n bytes from the stream or, waiting for
            # them, none: a cancellation here leaves the stream as it was.
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise TruncatedMessage("connection closed after %d of the 4 header bytes"
                                   % len(e.partial)) from None
        (n,) = HEADER.unpack(header)
        if n > max_len:
            raise MessageTooBig("peer announced a %d-byte message, more than the %d allowed"
                                % (n, max_len))
    try:
        return await reader.readexactly(n)
    except asyncio.CancelledError:
        _announced[reader] = n  # the header is read: the next call needs n
        raise
    except asyncio.IncompleteReadError as e:
        raise TruncatedMessage("connection closed after %d of %d message bytes"
                               % (len(e.partial), n)) from None


def write_msg(writer, data):
    """Queue data (bytes) as one message on an asyncio.StreamWriter.

    Like writer.write, it does not wait: follow it with `await
    writer.drain()`, which waits while the peer is slow to read."""
    if len(data) > 0xFFFFFFFF:
        raise MessageTooBig("%d bytes do not fit in one message" % len(data))
    writer.write(HEADER.pack(len(data)) + data)


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
    """A socket connected to addr.  A name is tried at each of its addresses
    in turn.

    timeout (seconds; None: wait as long as the system does) bounds the
    connecting and STAYS on the socket, as with socket.create_connection:
    every later send_msg and recv_msg on it gives up after timeout seconds
    too (see Timeouts above).  To wait without limit from then on, call
    sock.settimeout(None)."""
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
