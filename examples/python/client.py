#!/usr/bin/env python3
"""client.py - the tutorial's client, rebuilt on sockmsg.py.

Connects (default "localhost:29876"), receives one message, prints it.
Try:  python3 client.py 127.0.0.1:PORT   (the port a server printed)

It is examples/client.c line for line, with the same arguments and output;
it works with server.py and with the C server alike.
"""
import sys

import sockmsg  # sockmsg.py, next to this file


def main(argv):
    addr = argv[1] if len(argv) > 1 else "localhost:29876"

    # Tutorial: s = socket.socket(); s.connect(('localhost', 29876))
    # C:        sm_connect(&conn, addr)
    try:
        conn = sockmsg.connect(addr)
    except ValueError as e:  # a malformed address
        print("client: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:  # e.strerror: "Connection refused" and the like
        print("client: connect to %s: %s" % (addr, e.strerror or e), file=sys.stderr)
        return 1

    with conn:  # Tutorial: s.close()   C: sm_close(conn)
        # Tutorial: data = s.recv(1024) - recv_msg returns one whole message,
        # never a piece of one, however the network splits it.
        try:
            msg = sockmsg.recv_msg(conn)
        except (OSError, EOFError, ValueError) as e:
            print("client: %s" % e, file=sys.stderr)
            return 1
    if msg is None:  # the server closed without sending anything
        print("client: connection closed by peer", file=sys.stderr)
        return 1

    # The message is bytes: write them as they are, then a newline.
    sys.stdout.buffer.write(msg + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
