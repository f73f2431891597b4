#include "addr.h"

#include "error.h"

#include <sockmsg/sockmsg.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static int parse_unix(sm_addr *a, const char *path, const char *text)
{
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof a->unix_addr.sun_path)
        return sm__error_set(SM_EADDR, "'%s': Unix socket path must be 1 to %zu bytes", text,
                             sizeof a->unix_addr.sun_path - 1);
    a->is_unix = 1;
    a->unix_addr.sun_family = AF_UNIX;
    memcpy(a->unix_addr.sun_path, path, len + 1);
    a->unix_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

static int parse_port(sm_addr *a, const char *port, const char *text)
{
    size_t len = strlen(port);
    unsigned long value = 0;
    for (size_t i = 0; i < len; i++) {
        if (port[i] < '0' || port[i] > '9')
            len = 0;
        else
            value = value * 10 + (unsigned long)(port[i] - '0');
    }
    if (len == 0 || len > 5 || value > 65535)
        return sm__error_set(SM_EADDR, "'%s': port must be a number from 0 to 65535", text);
    /* Canonical form, so "00" is port "0" to every later check. */
    snprintf(a->port, sizeof a->port, "%lu", value);
    return 0;
}

static int parse_host(sm_addr *a, const char *host, size_t len, const char *text)
{
    if (len >= sizeof a->host)
        return sm__error_set(SM_EADDR, "'%s': host name too long", text);
    if (memchr(host, ':', len))
        return sm__error_set(SM_EADDR, "'%s': write IPv6 addresses in brackets, as [::1]:port",
                             text);
    if (memchr(host, '[', len) || memchr(host, ']', len))
        return sm__error_set(SM_EADDR, "'%s': brackets only around a whole IPv6 address", text);
    memcpy(a->host, host, len);
    a->host[len] = '\0';
    return 0;
}

int sm__addr_parse(sm_addr *a, const char *text)
{
    memset(a, 0, sizeof *a);
    if (strncmp(text, "unix:", 5) == 0)
        return parse_unix(a, text + 5, text);
    const char *colon = strrchr(text, ':');
    if (!colon)
        return sm__error_set(SM_EADDR, "'%s': expected host:port, [v6]:port, :port or unix:/path",
                             text);
    int rc;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close + 1 != colon || close == text + 1)
            return sm__error_set(SM_EADDR, "'%s': expected [v6address]:port", text);
        size_t len = (size_t)(close - text - 1);
        if (len >= sizeof a->host)
            return sm__error_set(SM_EADDR, "'%s': host name too long", text);
        if (memchr(text + 1, '[', len))
            return sm__error_set(SM_EADDR, "'%s': brackets only around a whole IPv6 address", text);
        memcpy(a->host, text + 1, len);
        a->host[len] = '\0';
        rc = 0;
    } else {
        rc = parse_host(a, text, (size_t)(colon - text), text);
    }
    return rc ? rc : parse_port(a, colon + 1, text);
}

int sm__addr_resolve(const sm_addr *a, int passive, struct addrinfo **out)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    const char *host = a->host[0] ? a->host : NULL;
    int rc = getaddrinfo(host, a->port, &hints, out);
    if (rc == 0)
        return 0;
    int code = rc == EAI_MEMORY ? SM_ENOMEM : SM_EADDR;
    return sm__error_set(code, "resolve '%s': %s", a->host, gai_strerror(rc));
}

int sm__addr_of_fd(int fd, int peer, char *buf, size_t cap)
{
    struct sockaddr_storage ss = { 0 };
    socklen_t len = sizeof ss;
    int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
                  : getsockname(fd, (struct sockaddr *)&ss, &len);
    if (rc < 0)
        return sm__error_set(-errno, peer ? "getpeername" : "getsockname");
    return sm__addr_format((struct sockaddr *)&ss, len, buf, cap);
}

int sm__addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int n;
    if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t path_len = len > offsetof(struct sockaddr_un, sun_path)
                              ? strnlen(un->sun_path, len - offsetof(struct sockaddr_un, sun_path))
                              : 0;
        n = snprintf(buf, cap, "unix:%.*s", (int)path_len, un->sun_path);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        n = snprintf(buf, cap, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        unsigned port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, sizeof ip);
            n = snprintf(buf, cap, "%s:%u", ip, port);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
            n = snprintf(buf, cap, "[%s]:%u", ip, port);
        }
    } else {
        n = snprintf(buf, cap, "family-%d", sa->sa_family);
    }
    if (n < 0 || (size_t)n >= cap)
        return sm__error_set(SM_EINVAL, "address buffer of %zu bytes too small", cap);
    return n;
}
