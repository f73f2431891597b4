/* addr - address strings ("host:port", "[v6]:port", ":port", "unix:/path")
 * to socket addresses and back. */
#ifndef SM_LIB_ADDR_H
#define SM_LIB_ADDR_H

#include <netdb.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct sm_addr {
    int is_unix;
    char host[256]; /* empty: all interfaces (listen) or localhost (connect) */
    char port[6];
    struct sockaddr_un unix_addr;
    socklen_t unix_len;
} sm_addr;

/* Parses text; returns 0 or SM_EADDR (with sm_last_error set). */
int sm__addr_parse(sm_addr *a, const char *text);

/* getaddrinfo for a TCP address; passive for bind.  Returns 0, SM_EADDR,
 * SM_ENOMEM or -errno.  Free *out with freeaddrinfo. */
int sm__addr_resolve(const sm_addr *a, int passive, struct addrinfo **out);

/* Writes sa in the form sm__addr_parse reads (IPv4-mapped IPv6 addresses as
 * plain IPv4).  Returns the length, or SM_EINVAL if cap is too small. */
int sm__addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap);

/* Formats the peer's (peer != 0) or the local address of socket fd, as
 * sm__addr_format.  Returns the length, SM_EINVAL or -errno. */
int sm__addr_of_fd(int fd, int peer, char *buf, size_t cap);

#endif
