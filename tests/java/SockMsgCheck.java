/*
 * SockMsgCheck.java - the checks tests/java.sh runs on examples/java/SockMsg.java.
 *
 *     java -cp OUT SockMsgCheck HOST:PORT     (a running echo server)
 *
 * 1. Against the echo server: messages of 0 bytes to 1 MiB, each echo
 *    checked byte for byte; then three messages in one write, which must
 *    come back as three messages.
 * 2. On in-memory streams: a clean close (null), truncated headers and
 *    payloads, headers over the maximum (exactly the maximum passes), and
 *    a header announcing 16 MiB followed by 10 bytes.
 *
 * Prints "ok N" (N checks) and exits 0, or names the first failure and
 * exits 1.
 */
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.util.Arrays;

public final class SockMsgCheck {
    private static int checks;

    private SockMsgCheck() {
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("SockMsgCheck: FAIL: " + what);
            System.exit(1);
        }
        checks++;
    }

    /* Bytes that depend on the message and the offset, so a shifted,
     * mixed-up or truncated echo never matches. */
    private static byte[] pattern(int i, int size) {
        byte[] b = new byte[size];
        for (int k = 0; k < size; k++) {
            b[k] = (byte) ((i * 7 + k) % 251);
        }
        return b;
    }

    private static DataInputStream stream(int... bytes) {
        byte[] b = new byte[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            b[i] = (byte) bytes[i];
        }
        return new DataInputStream(new ByteArrayInputStream(b));
    }

    /* What receive does with these bytes: the message, or the exception. */
    private static Object receive(DataInputStream in, int max) {
        try {
            return SockMsg.receive(in, max);
        } catch (IOException e) {
            return e;
        }
    }

    private static void againstServer(String addr) throws IOException {
        int[] sizes = { 0, 1, 4, 0, 100, 65535, 65536, 65537, 70000, 1 << 20 };
        try (Socket s = SockMsg.connect(addr)) {
            s.setSoTimeout(20000);
            DataOutputStream out = SockMsg.output(s);
            DataInputStream in = SockMsg.input(s);
            for (int i = 0; i < sizes.length; i++) {
                byte[] want = pattern(i, sizes[i]);
                SockMsg.send(out, want);
                byte[] got = SockMsg.receive(in);
                check(Arrays.equals(want, got), "message " + i + " of " + sizes[i]
                      + " bytes: echo " + (got == null ? "missing" : got.length + " bytes, differs"));
            }
            // Three messages in one write come back as three.
            ByteArrayOutputStream glued = new ByteArrayOutputStream();
            DataOutputStream g = new DataOutputStream(glued);
            byte[][] three = { "hi".getBytes("UTF-8"), new byte[0], "abc".getBytes("UTF-8") };
            for (byte[] m : three) {
                g.writeInt(m.length);
                g.write(m);
            }
            out.write(glued.toByteArray());
            out.flush();
            for (byte[] m : three) {
                check(Arrays.equals(m, SockMsg.receive(in)), "three messages in one write");
            }
        }
    }

    private static void onStreams() {
        check(receive(stream(), 100) == null, "clean close: null");
        check(Arrays.equals((byte[]) receive(stream(0, 0, 0, 4, 'T', 'E', 'S', 'T'), 100),
                            "TEST".getBytes()), "a whole message");
        check(receive(stream(0, 0), 100) instanceof SockMsg.TruncatedMessageException,
              "2 header bytes: TruncatedMessageException");
        check(receive(stream(0, 0, 0, 4, 'T', 'E'), 100) instanceof SockMsg.TruncatedMessageException,
              "half a payload: TruncatedMessageException");
        Object big = receive(stream(0xff, 0xff, 0xff, 0xff), SockMsg.DEFAULT_MAX_LEN);
        check(big instanceof SockMsg.MessageTooBigException
              && ((SockMsg.MessageTooBigException) big).announced == 0xffffffffL,
              "4 GiB header: MessageTooBigException announcing 4294967295");
        check(Arrays.equals((byte[]) receive(stream(0, 0, 0, 5, '1', '2', '3', '4', '5'), 5),
                            "12345".getBytes()), "exactly the maximum is accepted");
        check(receive(stream(0, 0, 0, 6, '1', '2', '3', '4', '5', '6'), 5)
              instanceof SockMsg.MessageTooBigException, "one byte over the maximum is refused");
        // 16 MiB announced, 10 bytes sent: truncated, and quickly.
        check(receive(stream(1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10), SockMsg.DEFAULT_MAX_LEN)
              instanceof SockMsg.TruncatedMessageException, "16 MiB announced, 10 bytes sent");
    }

    public static void main(String[] args) throws IOException {
        againstServer(args[0]);
        onStreams();
        System.out.println("ok " + checks);
    }
}
