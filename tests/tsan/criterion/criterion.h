/*
 * A stand-in for <criterion/criterion.h>, used only for the ThreadSanitizer
 * build: Criterion's runner cannot start under TSan ("Could not initialize
 * inheritable arena", Criterion issue #274), so `make check SANITIZE=thread`
 * compiles the threaded test files against this header instead.
 *
 * It covers what our test files use: Test() with .timeout/.init/.fini, the
 * cr_assert and cr_expect families (both stop the test here), cr_log_*.
 * Each test runs in a forked child, like Criterion's, bounded by its
 * timeout; main() runs those whose "suite/name" matches --filter (a glob).
 */
#ifndef SM_TSAN_CRITERION_SHIM_H
#define SM_TSAN_CRITERION_SHIM_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct criterion_test_extra_data {
    double timeout;
    void (*init)(void);
    void (*fini)(void);
    int disabled;
    const char *description;
    int shim_end; /* always set last, so Test(suite, name) has a "..." */
};

void shim_register(const char *suite, const char *name, void (*fn)(void),
                   struct criterion_test_extra_data extra);
void shim_check(int ok, const char *expr, const char *file, int line, const char *fmt, ...);
void shim_log(const char *fmt, ...);

#define Test(...) SHIM_TEST_(__VA_ARGS__, .shim_end = 1)
#define SHIM_TEST_(suite, name, ...)                                                               \
    static void suite##_##name(void);                                                              \
    __attribute__((constructor)) static void suite##_##name##_register(void)                       \
    {                                                                                              \
        struct criterion_test_extra_data extra = { __VA_ARGS__ };                                  \
        shim_register(#suite, #name, suite##_##name, extra);                                       \
    }                                                                                              \
    static void suite##_##name(void)

/* Every assertion takes an optional printf-style message; the trailing ""
 * lets the message be left out in ISO C. */
#define SHIM_CHECK_(ok, expr, ...) shim_check(!!(ok), expr, __FILE__, __LINE__, __VA_ARGS__)
#define SHIM_CMP_(op, a, b, ...) SHIM_CHECK_((a)op(b), #a " " #op " " #b, __VA_ARGS__)
#define SHIM_COND_(cond, ...) SHIM_CHECK_(cond, #cond, __VA_ARGS__)
#define SHIM_NOT_(cond, ...) SHIM_CHECK_(!(cond), "!(" #cond ")", __VA_ARGS__)
#define SHIM_NULL_(p, ...) SHIM_CHECK_((p) == NULL, #p " == NULL", __VA_ARGS__)
#define SHIM_NOT_NULL_(p, ...) SHIM_CHECK_((p) != NULL, #p " != NULL", __VA_ARGS__)
#define SHIM_STR_(op, a, b, ...) SHIM_CHECK_(strcmp((a), (b)) op 0, #a " " #op " " #b, __VA_ARGS__)
#define SHIM_ARR_(op, a, b, n, ...)                                                                \
    SHIM_CHECK_(memcmp((a), (b), (n)) op 0, #a " " #op " " #b, __VA_ARGS__)

#define cr_assert(...) SHIM_COND_(__VA_ARGS__, "")
#define cr_assert_not(...) SHIM_NOT_(__VA_ARGS__, "")
#define cr_assert_eq(...) SHIM_CMP_(==, __VA_ARGS__, "")
#define cr_assert_neq(...) SHIM_CMP_(!=, __VA_ARGS__, "")
#define cr_assert_lt(...) SHIM_CMP_(<, __VA_ARGS__, "")
#define cr_assert_leq(...) SHIM_CMP_(<=, __VA_ARGS__, "")
#define cr_assert_gt(...) SHIM_CMP_(>, __VA_ARGS__, "")
#define cr_assert_geq(...) SHIM_CMP_(>=, __VA_ARGS__, "")
#define cr_assert_null(...) SHIM_NULL_(__VA_ARGS__, "")
#define cr_assert_not_null(...) SHIM_NOT_NULL_(__VA_ARGS__, "")
#define cr_assert_str_eq(...) SHIM_STR_(==, __VA_ARGS__, "")
#define cr_assert_str_neq(...) SHIM_STR_(!=, __VA_ARGS__, "")
#define cr_assert_arr_eq(...) SHIM_ARR_(==, __VA_ARGS__, "")
#define cr_assert_fail(...) SHIM_CHECK_(0, "fail", __VA_ARGS__, "")
#define cr_expect cr_assert
#define cr_expect_not cr_assert_not
#define cr_expect_eq cr_assert_eq
#define cr_expect_neq cr_assert_neq
#define cr_expect_lt cr_assert_lt
#define cr_expect_leq cr_assert_leq
#define cr_expect_gt cr_assert_gt
#define cr_expect_geq cr_assert_geq
#define cr_expect_null cr_assert_null
#define cr_expect_not_null cr_assert_not_null
#define cr_expect_str_eq cr_assert_str_eq
#define cr_log_info(...) shim_log(__VA_ARGS__)
#define cr_log_warn(...) shim_log(__VA_ARGS__)
#define cr_log_error(...) shim_log(__VA_ARGS__)

#endif
