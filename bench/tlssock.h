/* TLS helpers shared by the TLS transports (sockmsg-tls and raw-tls), and
 * linked into those only: the run's certificates, OpenSSL contexts made
 * the way a first program makes them, the raw OpenSSL connection, and the
 * TLS echo clients of the server workload. */
#ifndef TLSSOCK_H
#define TLSSOCK_H

#include "bench.h"

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The directory of certificates made for this run by
 * tests/tls/make-certs.sh: $BENCH_TLS_DIR when set (run.py makes one per
 * run), else a temporary directory made when the program starts (from
 * $BENCH_TLS_CERTS, default tests/tls/make-certs.sh) and removed when it
 * exits.  Writes dir/name into buf (PATH_MAX bytes). */
void tls_path(char *buf, const char *name);

/* OpenSSL's contexts with its defaults (so TLS 1.3 and its default cipher
 * suites and groups): a client that verifies the server against the run's
 * CA, a server with the run's certificate for localhost and 127.0.0.1.
 * Made once per process; die on failure. */
SSL_CTX *tls_client_ctx(void);
SSL_CTX *tls_server_ctx(void);
/* A client session on connected socket fd that checks the certificate
 * names 127.0.0.1 (the library does the same for an IP address), or NULL. */
SSL *tls_client_session(int fd);
/* Prints what failed with OpenSSL's reason; returns -1. */
int tls_fail(const char *what);
/* Puts what ssl negotiated in bench_note: tls=<version> cipher=<suite>
 * group=<key exchange>. */
void tls_note(SSL *ssl);

/* The raw OpenSSL connection: a blocking TCP socket with TCP_NODELAY, as
 * rawsock.c makes them; each message is an SSL_write of its 4-byte
 * big-endian length, then one of the payload; receiving, SSL_reads of
 * exactly 4 bytes, then of the payload into a buffer grown to the largest
 * message. */
typedef struct tls_conn tls_conn;
int tls_conn_connect(tls_conn **c, int port);
/* Accepts on listen_fd and does the server's handshake. */
int tls_conn_accept(tls_conn **c, int listen_fd);
int tls_conn_send(tls_conn *c, const void *msg, size_t len);
ssize_t tls_conn_recv(tls_conn *c, const uint8_t **msg);
/* close_notify (not waited for), then the socket closed. */
void tls_conn_close(tls_conn *c);
SSL *tls_conn_ssl(tls_conn *c);

/* The server workload's clients, over TLS: bench_framed_clients' epoll
 * loop with OpenSSL non-blocking on each socket.  Every socket is
 * connected (blocking connect, TCP_NODELAY) and its handshake started
 * right away; open_s runs until every handshake is done (the handshakes
 * finish together in the loop).  Then one untimed round trip each, the
 * server's RSS with all of them idle, and the timed rounds; a request is
 * one SSL_write of the whole 68-byte frame (one record), as the plain
 * clients send it in one send(). */
int tls_echo_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r);

#endif
