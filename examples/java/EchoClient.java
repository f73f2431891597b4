/*
 * EchoClient.java - sends messages to a libsockmsg server and prints each
 * reply: a client for the echo server (build/examples/echo-server), on
 * SockMsg.java.
 *
 *     javac -d out examples/java/*.java
 *     java -cp out EchoClient 127.0.0.1:PORT hello "" world
 *
 * Each argument after the address is one message (sent as UTF-8; the JVM
 * decodes arguments by the locale); with none, each line of standard input,
 * read as UTF-8, is one.  Each reply is printed on a line of its own, as
 * UTF-8.  Exit status 0, or 1 on any error.
 */
import java.io.BufferedReader;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public final class EchoClient {
    private EchoClient() {
    }

    public static void main(String[] args) throws IOException {
        if (args.length < 1) {
            System.err.println("usage: java EchoClient HOST:PORT [MESSAGE...]");
            System.exit(2);
        }
        List<String> messages = new ArrayList<>(Arrays.asList(args).subList(1, args.length));
        if (messages.isEmpty()) {
            BufferedReader stdin = new BufferedReader(
                new InputStreamReader(System.in, StandardCharsets.UTF_8));
            for (String line; (line = stdin.readLine()) != null;) {
                messages.add(line);
            }
        }
        PrintStream stdout = new PrintStream(System.out, false, "UTF-8");
        try (Socket s = SockMsg.connect(args[0])) {
            DataOutputStream out = SockMsg.output(s);
            DataInputStream in = SockMsg.input(s);
            for (String m : messages) {
                SockMsg.send(out, m.getBytes(StandardCharsets.UTF_8));
                byte[] reply = SockMsg.receive(in);
                if (reply == null) {
                    System.err.println("EchoClient: connection closed by peer");
                    System.exit(1);
                }
                stdout.println(new String(reply, StandardCharsets.UTF_8));
            }
        } catch (IOException | IllegalArgumentException e) {
            stdout.flush();
            System.err.println("EchoClient: " + args[0] + ": " + e.getMessage());
            System.exit(1);
        }
        stdout.flush();
    }
}
