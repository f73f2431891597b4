/*
 * SockMsg.java - whole messages over TCP, in libsockmsg's wire format
 * (docs/PROTOCOL.md), for Java 8 and later and for Android as it is: it uses
 * java.io and java.net only.  Copy this file into your project.
 *
 * Every message goes on the wire as
 *
 *     4 bytes   the payload's length N: unsigned, big-endian
 *     N bytes   the payload itself
 *
 * which is exactly what DataOutputStream.writeInt and DataInputStream's
 * readFully produce and consume, so "TEST" is sent as 00 00 00 04 54 45 53 54.
 *
 *     Socket s = SockMsg.connect("127.0.0.1:7000");
 *     DataOutputStream out = SockMsg.output(s);
 *     DataInputStream in = SockMsg.input(s);
 *     SockMsg.send(out, "hello".getBytes(StandardCharsets.UTF_8));
 *     byte[] reply = SockMsg.receive(in);     // one whole message, or null
 *
 * On Android, as for any socket, call these off the main thread.
 */
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.Socket;
import java.util.Arrays;

public final class SockMsg {
    /** libsockmsg's default maximum message: 16 MiB. */
    public static final int DEFAULT_MAX_LEN = 16 * 1024 * 1024;

    /** The peer announced a message longer than the receiver accepts. */
    public static final class MessageTooBigException extends IOException {
        private static final long serialVersionUID = 1L;
        /** The length the peer announced (up to 2^32-1). */
        public final long announced;

        MessageTooBigException(long announced, int max) {
            super("peer announced a " + announced + "-byte message, more than the " + max
                  + " allowed");
            this.announced = announced;
        }
    }

    /** The stream ended in the middle of a message. */
    public static final class TruncatedMessageException extends EOFException {
        private static final long serialVersionUID = 1L;

        TruncatedMessageException(String what) {
            super(what);
        }
    }

    private SockMsg() {
    }

    /**
     * Sends msg as one message: its length, then its bytes, then a flush,
     * so it leaves now.  With a buffered stream (see output) the two go out
     * in one write.
     */
    public static void send(DataOutputStream out, byte[] msg) throws IOException {
        send(out, msg, 0, msg.length);
    }

    /** Sends len bytes of msg from off as one message; see send(out, msg). */
    public static void send(DataOutputStream out, byte[] msg, int off, int len) throws IOException {
        out.writeInt(len); // a Java array is never longer than 2^31-1 bytes
        out.write(msg, off, len);
        out.flush();
    }

    /** One whole message of at most DEFAULT_MAX_LEN bytes; see receive(in, maxLen). */
    public static byte[] receive(DataInputStream in) throws IOException {
        return receive(in, DEFAULT_MAX_LEN);
    }

    /**
     * Receives one whole message and returns its bytes (an empty array for
     * an empty message), or null if the stream ended cleanly between two
     * messages: the normal end of a conversation.
     *
     * Throws MessageTooBigException if the header announces more than
     * maxLen bytes, checked before any payload is read, and
     * TruncatedMessageException (an EOFException) if the stream ends
     * inside a message.  After either, close the connection: the stream
     * cannot be followed any more.  Network errors come from the stream.
     *
     * Memory grows with the bytes that arrive, not with the announced
     * length, so a peer announcing 16 MiB and sending 10 bytes costs about
     * 64 KiB, not 16 MiB.
     */
    public static byte[] receive(DataInputStream in, int maxLen) throws IOException {
        // The first byte alone: end of stream here is a clean close, one
        // byte later it is a truncated header.  (readInt cannot tell.)
        int first = in.read();
        if (first < 0) {
            return null;
        }
        byte[] rest = new byte[3];
        try {
            in.readFully(rest);
        } catch (EOFException e) {
            throw new TruncatedMessageException("stream ended inside a message header");
        }
        long len = (long) first << 24 | (rest[0] & 0xffL) << 16 | (rest[1] & 0xffL) << 8
                   | (rest[2] & 0xffL);
        if (len > maxLen) {
            throw new MessageTooBigException(len, maxLen);
        }
        return readPayload(in, (int) len);
    }

    /* Reads len bytes in pieces of at most 64 KiB, growing the array as
     * they arrive. */
    private static byte[] readPayload(DataInputStream in, int len) throws IOException {
        byte[] buf = new byte[Math.min(len, 64 * 1024)];
        int have = 0;
        try {
            while (have < len) {
                if (have == buf.length) {
                    buf = Arrays.copyOf(buf, (int) Math.min(len, 2L * buf.length));
                }
                int n = Math.min(buf.length - have, 64 * 1024);
                in.readFully(buf, have, n);
                have += n;
            }
        } catch (EOFException e) {
            throw new TruncatedMessageException("stream ended after " + have + " of " + len
                                                + " message bytes");
        }
        return buf;
    }

    /**
     * A socket connected to addr: "host:port" or "[v6addr]:port", as in
     * libsockmsg.  TCP_NODELAY is on, as in libsockmsg: a small message
     * leaves at once instead of waiting to be gathered with the next.
     */
    public static Socket connect(String addr) throws IOException {
        int colon = addr.lastIndexOf(':');
        if (colon < 0) {
            throw new IllegalArgumentException("'" + addr + "': expected host:port");
        }
        String host = addr.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        }
        int port;
        try {
            port = Integer.parseInt(addr.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + addr + "': bad port");
        }
        Socket s = new Socket(host.isEmpty() ? "localhost" : host, port);
        s.setTcpNoDelay(true);
        return s;
    }

    /** The socket's output, buffered so a header and its payload leave together. */
    public static DataOutputStream output(Socket s) throws IOException {
        return new DataOutputStream(new BufferedOutputStream(s.getOutputStream(), 64 * 1024));
    }

    /** The socket's input, buffered so a small message costs one read, not two. */
    public static DataInputStream input(Socket s) throws IOException {
        return new DataInputStream(new BufferedInputStream(s.getInputStream(), 64 * 1024));
    }
}
