"""capture.py - writes the capture files tests/wireshark.sh decodes.

    python3 tests/wireshark/capture.py DIR

writes DIR/streams.pcap and DIR/port40000.pcap: TCP over IPv4 on
loopback addresses (raw IP link type), with the handshake, correct
sequence numbers and checksums, made up here byte by byte so that every
TCP segment boundary is exactly where the test wants it.  Standard
library only.

streams.pcap, a client 127.0.0.1:40001 and a server 127.0.0.1:29876:

  frame  direction  TCP payload
   1-3   handshake
   4     C->S  TEST                           one frame, one segment
   5     S->C  TEST                           the reply
   6     C->S  hi, (empty), abc, (empty)      four frames in one segment
   7     C->S  2 bytes of a header            split inside the header
   8     C->S  2 more, "he"                   ... and inside the payload
   9     C->S  "llo" + 3 bytes of a header    hello completes; next begins
  10     C->S  1 more, "x", then "yz"         x completes; yz whole
  11-61  C->S  one 70000-byte frame in 1400-byte segments
  62     C->S  ff ff ff ff + 4 bytes          a header over any maximum
  63     C->S  TEST                           after it: unframed
  64     S->C  ok                             the other direction still framed

port40000.pcap: TEST from 127.0.0.1:40002 to port 40000 (not the
dissector's default port).  DIR/big.hex is the 70000-byte payload in hex.
"""
import os
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(payload):
    """A sockmsg frame: 4-byte big-endian length, then the payload."""
    return struct.pack("!I", len(payload)) + payload


class Capture:
    LINKTYPE_RAW = 101  # IPv4/IPv6 packets with no link-layer header

    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, self.LINKTYPE_RAW))
        self.count = 0

    def packet(self, src, sport, dst, dport, seq, ack, flags, payload=b""):
        src_ip = bytes(int(x) for x in src.split("."))
        dst_ip = bytes(int(x) for x in dst.split("."))
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
        pseudo = struct.pack("!4s4sBBH", src_ip, dst_ip, 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), self.count & 0xFFFF, 0x4000, 64, 6,
                         0, src_ip, dst_ip)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        data = ip + tcp
        self.count += 1
        usec = self.count * 1000
        self.f.write(struct.pack("<IIII", 1700000000 + usec // 1000000, usec % 1000000, len(data), len(data)))
        self.f.write(data)

    def close(self):
        self.f.close()


SYN, ACK, PSH = 0x02, 0x10, 0x08


class Connection:
    """One TCP connection in a capture: the handshake, then segments."""

    def __init__(self, cap, client, server):
        self.cap, self.ends = cap, {"C": client, "S": server}
        self.seq = {"C": 1000, "S": 5000}
        cap.packet(*client, *server, self.seq["C"], 0, SYN)
        self.seq["C"] += 1
        cap.packet(*server, *client, self.seq["S"], self.seq["C"], SYN | ACK)
        self.seq["S"] += 1
        cap.packet(*client, *server, self.seq["C"], self.seq["S"], ACK)

    def send(self, side, payload):
        other = "S" if side == "C" else "C"
        self.cap.packet(*self.ends[side], *self.ends[other], self.seq[side], self.seq[other],
                        PSH | ACK, payload)
        self.seq[side] += len(payload)


def big_payload(size):
    return bytes((k * 7 + 3) % 251 for k in range(size))


def main(outdir):
    cap = Capture(os.path.join(outdir, "streams.pcap"))
    c = Connection(cap, ("127.0.0.1", 40001), ("127.0.0.1", 29876))
    c.send("C", frame(b"TEST"))                                  # 4
    c.send("S", frame(b"TEST"))                                  # 5
    c.send("C", frame(b"hi") + frame(b"") + frame(b"abc") + frame(b""))  # 6
    hello, x = frame(b"hello"), frame(b"x")
    c.send("C", hello[:2])                                       # 7
    c.send("C", hello[2:6])                                      # 8
    c.send("C", hello[6:] + x[:3])                               # 9
    c.send("C", x[3:] + frame(b"yz"))                            # 10
    big = frame(big_payload(70000))
    with open(os.path.join(outdir, "big.hex"), "w") as f:  # as tshark prints the payload
        f.write(big_payload(70000).hex() + "\n")
    for off in range(0, len(big), 1400):                         # 11-61
        c.send("C", big[off:off + 1400])
    c.send("C", b"\xff\xff\xff\xff" + b"junk")                   # 62
    c.send("C", frame(b"TEST"))                                  # 63
    c.send("S", frame(b"ok"))                                    # 64
    cap.close()

    cap = Capture(os.path.join(outdir, "port40000.pcap"))
    c = Connection(cap, ("127.0.0.1", 40002), ("127.0.0.1", 40000))
    c.send("C", frame(b"TEST"))                                  # 4
    cap.close()


if __name__ == "__main__":
    main(sys.argv[1])
