/*
 * The address parser on arbitrary strings: it must never crash, must say
 * why it refuses, and what it accepts must parse again to the same thing
 * when written back in the canonical form.
 */
#include "addr.h"

#include <sockmsg/sockmsg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_back(const sm_addr *a, char *buf, size_t cap)
{
    if (a->is_unix)
        snprintf(buf, cap, "unix:%s", a->unix_addr.sun_path);
    else if (a->host[0] == '\0')
        snprintf(buf, cap, ":%s", a->port);
    else /* brackets: "unix" or "::1" as a host is written [unix] and [::1] */
        snprintf(buf, cap, "[%s]:%s", a->host, a->port);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sm_addr a, again;
    int rc = sm__addr_parse(&a, text);
    if (rc != 0) {
        if (rc != SM_EADDR || sm_last_error()[0] == '\0')
            abort();
        free(text);
        return 0;
    }
    if (!a.is_unix) {
        char *end;
        unsigned long port = strtoul(a.port, &end, 10);
        if (a.port[0] == '\0' || *end != '\0' || port > 65535)
            abort();
    }
    char canonical[512];
    write_back(&a, canonical, sizeof canonical);
    if (!a.is_unix && (strchr(a.host, '[') || strchr(a.host, ']')))
        abort(); /* a bracket inside a host name is never valid */
    if (sm__addr_parse(&again, canonical) != 0 || again.is_unix != a.is_unix ||
        strcmp(again.host, a.host) != 0 || strcmp(again.port, a.port) != 0 ||
        again.unix_len != a.unix_len || strcmp(again.unix_addr.sun_path, a.unix_addr.sun_path) != 0)
        abort();
    free(text);
    return 0;
}
