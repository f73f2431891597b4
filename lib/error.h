/* error - error codes to text, and the per-thread detail of the last failure. */
#ifndef SM_LIB_ERROR_H
#define SM_LIB_ERROR_H

/* Records "<detail>: <sm_strerror(rc)>" for sm_last_error() and returns rc,
 * so a failing path can end with `return sm__error_set(rc, ...)`. */
int sm__error_set(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
