/*
 * The server's per-connection input path, without a network: three
 * clients adopted from socketpairs, and the input split into chunks that
 * go to whichever client the input names.  Handlers echo, broadcast and
 * disconnect as the messages ask, so the queueing, backpressure and
 * closing paths run too.  Sanitizers catch the rest.
 *
 * Input: records of [client (0-2; 3 = end of that client's stream)]
 * [chunk length] [bytes].
 */
#include "server.h"

#include <sockmsg/sockmsg.h>

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum { CLIENTS = 3 };

struct state {
    sm_conn_id ids[CLIENTS];
    int peers[CLIENTS]; /* our ends of the socketpairs */
    unsigned messages;
};

/* The first byte of a message says what the handler does with it. */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    struct state *st = arg;
    const uint8_t *m = msg;
    st->messages++;
    switch (len ? m[0] % 4 : 0) {
    case 0: sm_server_send(s, id, msg, len); break;
    case 1: sm_server_broadcast(s, msg, len, id); break;
    case 2: sm_server_disconnect(s, id); break;
    default:
        sm_server_send(s, st->ids[len % CLIENTS], msg, len);
        sm_server_set_data(s, id, st);
        break;
    }
}

static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)reason;
    (void)arg;
    /* Queueing to a closing client must fail, not crash. */
    if (sm_server_send(s, id, "x", 1) != SM_ENOCONN)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sm_server_handlers h = { .on_message = on_message, .on_close = on_close };
    /* Small limits, so the fuzzer reaches them. */
    sm_server_options o = { .max_frame = 300, .high_water = 600, .max_queue = 2000 };
    struct state st = { .messages = 0 };
    sm_server *s;
    if (sm_server_new(&s, &h, &o, &st) != 0)
        return 0;
    for (int i = 0; i < CLIENTS; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
            abort();
        st.peers[i] = sv[0];
        if (sm_server_adopt(s, sv[1], &st.ids[i]) != 0)
            abort();
    }
    size_t pos = 0;
    while (size - pos >= 2) {
        unsigned who = data[pos] % 4;
        size_t len = data[pos + 1];
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        if (who == 3)
            sm__server_input(s, st.ids[len % CLIENTS], NULL, 0);
        else
            sm__server_input(s, st.ids[who], data + pos, len);
        pos += len;
    }
    sm_server_free(s);
    for (int i = 0; i < CLIENTS; i++)
        close(st.peers[i]);
    return 0;
}
