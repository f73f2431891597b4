/* Address strings: parsing and formatting, no network needed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>
#include <string.h>

#include "addr.h"

/* text parses as a network address with this host and port. */
static void expect_host_port(const char *text, const char *host, const char *port)
{
    sm_addr a;
    cr_assert_eq(sm__addr_parse(&a, text), 0, "'%s': %s", text, sm_last_error());
    cr_assert_not(a.is_unix, "'%s'", text);
    cr_assert_str_eq(a.host, host, "'%s'", text);
    cr_assert_str_eq(a.port, port, "'%s'", text);
}

Test(addr, host_port)
{
    expect_host_port("example.org:80", "example.org", "80");
    expect_host_port("127.0.0.1:0", "127.0.0.1", "0");
}

Test(addr, bracketed_ipv6)
{
    expect_host_port("[::1]:29876", "::1", "29876");
}

Test(addr, any_interface)
{
    expect_host_port(":65535", "", "65535");
}

Test(addr, unix_path)
{
    sm_addr a;
    cr_assert_eq(sm__addr_parse(&a, "unix:/tmp/x.sock"), 0);
    cr_assert(a.is_unix);
    cr_assert_str_eq(a.unix_addr.sun_path, "/tmp/x.sock");
}

Test(addr, malformed_are_rejected)
{
    char long_path[200] = "unix:/";
    memset(long_path + 6, 'a', sizeof long_path - 7);
    const char *bad[] = { "", "nocolon", "host:", "host:-1", "host:65536", "host:99999",
                          "host:12ab", "host:123456", "::1:80", "[::1:80", "[::1]80", "[]:80",
                          "unix:", long_path,
                          /* found by fuzz_addr: brackets inside a host */
                          "[[]:1", "[[::1]:1", "a]b:1", "x[y:1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sm_addr a;
        cr_assert_eq(sm__addr_parse(&a, bad[i]), SM_EADDR, "'%s' accepted", bad[i]);
        cr_assert(strstr(sm_last_error(), bad[i]) != NULL, "detail '%s' names the address",
                  sm_last_error());
    }
}

Test(addr, format_forms)
{
    char buf[SM_ADDRSTRLEN];
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(80) };
    inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
    cr_assert_eq(sm__addr_format((struct sockaddr *)&in, sizeof in, buf, sizeof buf), 11);
    cr_assert_str_eq(buf, "10.1.2.3:80");

    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(9) };
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    sm__addr_format((struct sockaddr *)&in6, sizeof in6, buf, sizeof buf);
    cr_assert_str_eq(buf, "[::1]:9");
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    sm__addr_format((struct sockaddr *)&in6, sizeof in6, buf, sizeof buf);
    cr_assert_str_eq(buf, "127.0.0.1:9", "v4-mapped shown as IPv4");

    cr_assert_eq(sm__addr_format((struct sockaddr *)&in, sizeof in, buf, 5), SM_EINVAL);
}

Test(addr, formatted_address_parses_back)
{
    char buf[SM_ADDRSTRLEN];
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(4242) };
    inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr);
    sm__addr_format((struct sockaddr *)&in6, sizeof in6, buf, sizeof buf);
    expect_host_port(buf, "fe80::1", "4242");
}
