/* raw-buffered-64k: the raw-buffered baseline of the results up to
 * 2026-11-25, kept to compare with: the same sends (coalesced in 64 KiB),
 * but a 64 KiB receive buffer whose every read takes all of its free room,
 * the unread bytes moving to the front only when a frame would not fit
 * (a larger frame gets a buffer of its size, read in the same way).  Its
 * epoll echo server reads 64 KiB at a time. */
#define RAWBUF_NAME "raw-buffered-64k"
#define RAWBUF_IN (64u * 1024u)
#define RAWBUF_READ 0u

#include "transport-raw-buffered.c"
