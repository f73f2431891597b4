#!/usr/bin/env python3
"""server.py - the tutorial's server, rebuilt on sockmsg.py.

Listens (default ":29876", every interface), accepts one client, sends it
the message "TEST", and exits.  Try:  python3 server.py 127.0.0.1:0

It is examples/server.c line for line, with the same arguments and output,
and the two speak the same wire format: the C client can fetch "TEST" from
this server, and client.py from the C server.
"""
import sys

import sockmsg  # sockmsg.py, next to this file


def main(argv):
    addr = argv[1] if len(argv) > 1 else ":29876"

    # Tutorial: s = socket.socket(); s.bind(('', 29876)); s.listen(5)
    # C:        sm_listen(&listener, addr)
    try:
        listener = sockmsg.listen(addr)
    except ValueError as e:  # a malformed address
        print("server: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:  # e.strerror: "Address already in use" and the like
        print("server: listen on %s: %s" % (addr, e.strerror or e), file=sys.stderr)
        return 1

    with listener:  # closes the listening socket at the end of the block
        # Print the real address: with port 0 the system picked one.
        # flush=True sends the line now, even when stdout is a pipe, so a
        # script waiting for it does not wait until the server exits.
        print("listening on %s" % sockmsg.address_of(listener), flush=True)

        try:
            # Tutorial: c, addr = s.accept()
            # C:        sm_accept(listener, &client)
            client, _ = listener.accept()
            with client:  # Tutorial: c.close()   C: sm_close(client)
                # Tutorial: c.send(b"TEST") - but here the whole message
                # arrives as one, its 4-byte length first.
                sockmsg.send_msg(client, b"TEST")
        except OSError as e:
            print("server: %s" % (e.strerror or e), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:  # Ctrl-C while waiting for a client
        sys.exit(130)
