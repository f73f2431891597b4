/* smcat: the command line, into struct config (see smcat.h). */
#include "smcat.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: smcat --connect ADDR [options]      send messages, print replies\n"
               "       smcat --listen ADDR [options]       serve one client the same way\n"
               "       smcat --listen ADDR --echo [-v]     echo server for many clients\n"
               "\n"
               "ADDR: host:port, [v6addr]:port, :port, unix:/path (port 0: any free port;\n"
               "--listen always prints \"smcat: listening on ADDR\" to stderr unless -q)\n"
               "\n"
               "Connection:\n"
               "  -c, --connect ADDR      connect to ADDR\n"
               "  -l, --listen ADDR       listen on ADDR, serve one client, then exit\n"
               "  -e, --echo              with --listen: echo every message back to its\n"
               "                          sender, any number of clients, until SIGINT/SIGTERM\n"
               "  -r, --retry             keep trying to connect (backoff) until it works\n"
               "  -t, --timeout MS        give up connecting (retrying) or waiting for a\n"
               "                          client after MS milliseconds\n"
               "TLS (each --tls-* option implies --tls):\n"
               "      --tls               connect over TLS, verifying the server against the\n"
               "                          system's CAs and the host in ADDR\n"
               "      --tls-ca FILE       verify against the CAs in FILE (PEM) instead; with\n"
               "                          --listen: require client certificates they signed\n"
               "      --tls-name NAME     the name the server's certificate must hold\n"
               "                          (default: the host in ADDR; needed for unix:)\n"
               "      --tls-insecure      do NOT verify the server: anyone on the path can\n"
               "                          read and change everything (for tests only)\n"
               "      --tls-cert FILE     own certificate chain (PEM): the client's, for\n"
               "                          mutual TLS, or with --listen the server's (needed)\n"
               "      --tls-key FILE      the private key of --tls-cert (PEM)\n"
               "Sending (default: stdin, one message per line):\n"
               "  -d, --data TEXT         send TEXT as one message (repeatable)\n"
               "  -f, --file PATH         send the file's contents as one message (repeatable)\n"
               "  -i, --in FORMAT         how stdin is split: lines (newline removed),\n"
               "                          whole (all of it is one message), framed (frames\n"
               "                          as --format framed writes them)\n"
               "      --stdin-whole       same as --in whole\n"
               "      --stdin-framed      same as --in framed\n"
               "  -n, --count N           send the messages N times (default 1)\n"
               "      --interval MS       pause MS milliseconds between messages\n"
               "Receiving (default: print until the peer closes):\n"
               "  -o, --format FORMAT     text (default: one line per message, bytes other\n"
               "                          than printable ASCII as \\xNN, backslash as \\\\),\n"
               "                          raw (payloads back to back), framed (length +\n"
               "                          payload, as on the wire), hex (a dump per message)\n"
               "      --expect N          stop once N messages have arrived\n"
               "  -N, --no-wait           send, then close without reading replies\n"
               "      --half-close        once everything is sent, shut down the sending\n"
               "                          side, so the peer sees the end of the input\n"
               "                          (default: keep it open while waiting)\n"
               "  -w, --recv-timeout MS   fail if no message arrives for MS milliseconds\n"
               "                          (with --echo: disconnect clients idle that long)\n"
               "  -m, --max-frame N       largest message accepted (also from --in framed);\n"
               "                          suffix K or M for KiB or MiB (default 16M)\n"
               "Messages:\n"
               "  -v, --verbose           report connects and disconnects on stderr\n"
               "  -q, --quiet             no listening line, no progress line\n"
               "  -h, --help              show this help\n"
               "  -V, --version           show the version\n"
               "\n"
               "Exit codes: 0 success, 1 other error (file, stdin, stdout, connection reset,\n"
               "peer closed before --expect N), 2 usage, 3 bad address, 4 connect or listen\n"
               "failed, 5 protocol error (frame too large or truncated), 6 timeout.\n");
}

/* Parses a whole decimal number in [min, max]; with `sizes`, a K or M
 * suffix multiplies by 1024 or 1024*1024. */
static int parse_number(const char *opt, const char *arg, unsigned long long min,
                        unsigned long long max, bool sizes, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    bool ok = arg[0] >= '0' && arg[0] <= '9' && errno == 0 && end != arg;
    unsigned long long unit = 1;
    if (ok && sizes && (*end == 'k' || *end == 'K'))
        unit = 1024, end++;
    else if (ok && sizes && (*end == 'm' || *end == 'M'))
        unit = 1024 * 1024, end++;
    if (!ok || *end || v > max / unit || v * unit < min || v * unit > max)
        return complain(EXIT_USAGE, "%s: '%s' is not a number from %llu to %llu", opt, arg, min,
                        max);
    *out = v * unit;
    return 0;
}

static int parse_ms(const char *opt, const char *arg, int *out)
{
    unsigned long long v = 0;
    int rc = parse_number(opt, arg, 0, INT_MAX, false, &v);
    *out = (int)v;
    return rc;
}

/* The names of --in's and --format's values, in enum order. */
static const char *const in_names[] = { "lines", "whole", "framed", NULL };
static const char *const out_names[] = { "text", "raw", "framed", "hex", NULL };

/* The index of arg in names (NULL-terminated), or -1 after a usage error
 * that lists them; what says what they name ("input format"). */
static int parse_choice(const char *opt, const char *what, const char *arg,
                        const char *const *names)
{
    char list[64] = "";
    for (int i = 0; names[i]; i++) {
        if (strcmp(arg, names[i]) == 0)
            return i;
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    }
    complain(EXIT_USAGE, "%s: unknown %s '%s' (%s)", opt, what, arg, list);
    return -1;
}

/* Long-only options. */
enum { OPT_STDIN_WHOLE = 256, OPT_STDIN_FRAMED, OPT_INTERVAL, OPT_EXPECT, OPT_HALF_CLOSE };
enum { OPT_TLS = 300, OPT_TLS_CA, OPT_TLS_NAME, OPT_TLS_INSECURE, OPT_TLS_CERT, OPT_TLS_KEY };

static const struct option long_options[] = {
    { "connect", required_argument, NULL, 'c' },
    { "listen", required_argument, NULL, 'l' },
    { "echo", no_argument, NULL, 'e' },
    { "retry", no_argument, NULL, 'r' },
    { "timeout", required_argument, NULL, 't' },
    { "data", required_argument, NULL, 'd' },
    { "file", required_argument, NULL, 'f' },
    { "in", required_argument, NULL, 'i' },
    { "stdin-whole", no_argument, NULL, OPT_STDIN_WHOLE },
    { "stdin-framed", no_argument, NULL, OPT_STDIN_FRAMED },
    { "count", required_argument, NULL, 'n' },
    { "interval", required_argument, NULL, OPT_INTERVAL },
    { "format", required_argument, NULL, 'o' },
    { "expect", required_argument, NULL, OPT_EXPECT },
    { "no-wait", no_argument, NULL, 'N' },
    { "half-close", no_argument, NULL, OPT_HALF_CLOSE },
    { "recv-timeout", required_argument, NULL, 'w' },
    { "max-frame", required_argument, NULL, 'm' },
    { "tls", no_argument, NULL, OPT_TLS },
    { "tls-ca", required_argument, NULL, OPT_TLS_CA },
    { "tls-name", required_argument, NULL, OPT_TLS_NAME },
    { "tls-insecure", no_argument, NULL, OPT_TLS_INSECURE },
    { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
    { "tls-key", required_argument, NULL, OPT_TLS_KEY },
    { "verbose", no_argument, NULL, 'v' },
    { "quiet", no_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 }
};
static const char short_options[] = ":c:l:ert:d:f:i:n:o:Nw:m:vqhV";

/* The option getopt just rejected, for the error line: a long one as
 * written, a short one by its letter (argv may hold a cluster like -vx). */
static const char *bad_option(char **argv, char *buf, size_t len)
{
    const char *arg = argv[optind - 1];
    if (strncmp(arg, "--", 2) == 0 || optopt == 0)
        return arg;
    snprintf(buf, len, "-%c", optopt);
    return buf;
}

/* Options that only make sense for one connection, not with --echo. */
#define ONE_CONN_OPTS                                                                              \
    "--data, --file, --in, --count, --interval, --expect, "                                        \
    "--no-wait, --half-close, --timeout, --format"

struct parse_state {
    bool one_conn_opt; /* any of ONE_CONN_OPTS given */
    bool in_given;
};

void msg_add(struct config *cfg, const uint8_t *data, size_t len, uint8_t *owned, bool is_file)
{
    cfg->msgs[cfg->nmsgs++] =
        (struct msg){ .data = data, .len = len, .owned = owned, .is_file = is_file };
}

/* --tls and --tls-*: each turns TLS on. */
static void apply_tls_option(int opt, struct config *cfg)
{
    cfg->tls_on = true;
    switch (opt) {
    case OPT_TLS_CA: cfg->tls.ca_file = optarg; break;
    case OPT_TLS_NAME: cfg->tls.server_name = optarg; break;
    case OPT_TLS_INSECURE: cfg->tls.insecure_skip_verify = 1; break;
    case OPT_TLS_CERT: cfg->tls.cert_file = optarg; break;
    case OPT_TLS_KEY: cfg->tls.key_file = optarg; break;
    default: break; /* --tls: the defaults, the system's CAs */
    }
}

/* Checks the TLS options against each other and the mode. */
static int check_tls(struct config *cfg)
{
    sm_tls_options *t = &cfg->tls;
    if (!cfg->tls_on)
        return 0;
    if (!t->cert_file != !t->key_file)
        return complain(EXIT_USAGE, "--tls-cert and --tls-key go together");
    if (cfg->listen) {
        if (t->server_name || t->insecure_skip_verify)
            return complain(EXIT_USAGE, "--tls-name and --tls-insecure are for --connect");
        if (!t->cert_file)
            return complain(EXIT_USAGE, "TLS with --listen needs --tls-cert and --tls-key");
        t->require_client_cert = t->ca_file != NULL; /* --tls-ca: mutual TLS */
    } else if (t->insecure_skip_verify && (t->ca_file || t->server_name)) {
        return complain(EXIT_USAGE, "--tls-insecure verifies nothing: --tls-ca and --tls-name "
                                    "do not apply");
    } else if (!t->insecure_skip_verify && !t->server_name &&
               strncmp(cfg->connect, "unix:", 5) == 0) {
        /* No host in the address: the certificate's name would go unchecked. */
        return complain(EXIT_USAGE, "TLS over unix: needs --tls-name NAME, the name the "
                                    "server's certificate must hold");
    }
    if (!sm_tls_available())
        return complain(EXIT_FAIL, "TLS: this smcat was built without TLS (OpenSSL)");
    if (t->insecure_skip_verify && !cfg->quiet)
        complain(0, "warning: --tls-insecure: the server is not verified; anyone on the path "
                    "can read and change the messages");
    return 0;
}

/* Handles one option; returns 0, or an exit code (-1: exit 0 now). */
static int apply_option(int opt, char **argv, struct config *cfg, struct parse_state *ps)
{
    unsigned long long v = 0;
    int choice;
    char name[8];
    switch (opt) {
    case 'c': cfg->connect = optarg; return 0;
    case 'l': cfg->listen = optarg; return 0;
    case 'e': cfg->echo = true; return 0;
    case 'r': cfg->retry = true; return 0;
    case 't': ps->one_conn_opt = true; return parse_ms("--timeout", optarg, &cfg->timeout_ms);
    case 'd':
        ps->one_conn_opt = true;
        msg_add(cfg, (const uint8_t *)optarg, strlen(optarg), NULL, false);
        return 0;
    case 'f':
        ps->one_conn_opt = true;
        /* Loaded after parsing, so usage errors come before file errors. */
        msg_add(cfg, (const uint8_t *)optarg, 0, NULL, true);
        return 0;
    case 'i':
        ps->one_conn_opt = ps->in_given = true;
        if ((choice = parse_choice("--in", "input format", optarg, in_names)) < 0)
            return EXIT_USAGE;
        cfg->in = (enum in_format)choice;
        return 0;
    case OPT_STDIN_WHOLE:
        ps->one_conn_opt = ps->in_given = true;
        cfg->in = IN_WHOLE;
        return 0;
    case OPT_STDIN_FRAMED:
        ps->one_conn_opt = ps->in_given = true;
        cfg->in = IN_FRAMED;
        return 0;
    case 'n':
        ps->one_conn_opt = true;
        if (parse_number("--count", optarg, 1, ULONG_MAX, false, &v))
            return EXIT_USAGE;
        cfg->count = (unsigned long)v;
        return 0;
    case OPT_INTERVAL:
        ps->one_conn_opt = true;
        return parse_ms("--interval", optarg, &cfg->interval_ms);
    case 'o':
        ps->one_conn_opt = true;
        if ((choice = parse_choice("--format", "output format", optarg, out_names)) < 0)
            return EXIT_USAGE;
        cfg->out = (enum out_format)choice;
        return 0;
    case OPT_EXPECT:
        ps->one_conn_opt = true;
        if (parse_number("--expect", optarg, 0, LONG_MAX, false, &v))
            return EXIT_USAGE;
        cfg->expect = (long)v;
        return 0;
    case 'N':
        ps->one_conn_opt = true;
        cfg->no_wait = true;
        return 0;
    case OPT_HALF_CLOSE:
        ps->one_conn_opt = true;
        cfg->half_close = true;
        return 0;
    case 'w': return parse_ms("--recv-timeout", optarg, &cfg->recv_timeout_ms);
    case 'm':
        if (parse_number("--max-frame", optarg, 1, UINT32_MAX, true, &v))
            return EXIT_USAGE;
        cfg->max_frame = (uint32_t)v;
        return 0;
    case OPT_TLS:
    case OPT_TLS_CA:
    case OPT_TLS_NAME:
    case OPT_TLS_INSECURE:
    case OPT_TLS_CERT:
    case OPT_TLS_KEY: apply_tls_option(opt, cfg); return 0;
    case 'v': cfg->verbose = true; return 0;
    case 'q': cfg->quiet = true; return 0;
    case 'h': usage(stdout); return -1;
    case 'V': printf("smcat (libsockmsg) %s\n", sm_version()); return -1;
    case ':':
        return complain(EXIT_USAGE, "option '%s' needs a value",
                        bad_option(argv, name, sizeof name));
    default:
        return complain(EXIT_USAGE, "unknown option '%s'", bad_option(argv, name, sizeof name));
    }
}

/* Checks that the options given fit together. */
static int check_config(struct config *cfg, const struct parse_state *ps)
{
    if (!cfg->listen == !cfg->connect)
        return complain(EXIT_USAGE, "give exactly one of --listen ADDR and --connect ADDR");
    if (cfg->echo && !cfg->listen)
        return complain(EXIT_USAGE, "--echo needs --listen");
    if (cfg->echo && ps->one_conn_opt)
        return complain(EXIT_USAGE, "--echo sends only echoes: " ONE_CONN_OPTS " do not apply");
    if (cfg->retry && !cfg->connect)
        return complain(EXIT_USAGE, "--retry needs --connect");
    if (cfg->no_wait && cfg->expect >= 0)
        return complain(EXIT_USAGE, "--no-wait and --expect exclude each other");
    cfg->use_stdin = cfg->nmsgs == 0;
    if (!cfg->use_stdin && ps->in_given)
        return complain(EXIT_USAGE, "--in reads stdin, which --data and --file replace");
    if (cfg->expect == 0)
        cfg->no_wait = true; /* expecting nothing is not waiting */
    cfg->stdin_streamed = cfg->use_stdin && cfg->count == 1;
    return check_tls(cfg);
}

int parse_args(int argc, char **argv, struct config *cfg)
{
    struct parse_state ps = { false, false };
    *cfg = (struct config){ .count = 1, .expect = -1, .max_frame = SM_DEFAULT_MAX_FRAME };
    /* At most one message per argument: enough room for every --data/--file. */
    cfg->msgs = calloc((size_t)argc, sizeof *cfg->msgs);
    if (!cfg->msgs)
        return complain(EXIT_FAIL, "out of memory");
    opterr = 0; /* our own one-line messages instead of getopt's */
    int opt;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        int rc = apply_option(opt, argv, cfg, &ps);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return complain(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    return check_config(cfg, &ps);
}
