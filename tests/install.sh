#!/bin/sh
# Install test: make install into a DESTDIR, build a consumer with
# pkg-config against the installed copy (shared and static), run both,
# check the exported symbols, then make uninstall.  Run from the top dir.
set -eu
fail() { echo "install test: FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=/opt/smtest
root=$tmp$prefix
make -s install PREFIX=$prefix DESTDIR="$tmp" >/dev/null || fail "make install"
for f in include/sockmsg/sockmsg.h lib/libsockmsg.a lib/libsockmsg.so lib/libsockmsg.so.0 lib/pkgconfig/sockmsg.pc; do
    [ -e "$root/$f" ] || fail "$f not installed"
done
ls "$root"/lib/libsockmsg.so.0.* >/dev/null 2>&1 || fail "versioned .so not installed"

others=$(nm -D --defined-only "$root/lib/libsockmsg.so" | awk '{print $3}' | grep -v '^sm_' || true)
[ -z "$others" ] || fail "exports more than sm_*: $others"

cat > "$tmp/consumer.c" <<'C'
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    sm_listener *l;
    sm_conn *client, *server;
    char addr[SM_ADDRSTRLEN], buf[16];
    if (sm_listen(&l, "127.0.0.1:0") < 0 || sm_listener_addr(l, addr, sizeof addr) < 0 ||
        sm_connect(&client, addr) < 0 || sm_accept(l, &server) < 0 ||
        sm_send(client, "hello", 5) < 0 || sm_recv(server, buf, sizeof buf) != 5 ||
        memcmp(buf, "hello", 5) != 0) {
        fprintf(stderr, "consumer: %s\n", sm_last_error());
        return 1;
    }
    printf("consumer ok %s\n", sm_version());
    sm_close(client);
    sm_close(server);
    sm_listener_close(l);
    return 0;
}
C
export PKG_CONFIG_PATH="$root/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp"
version=$(pkg-config --modversion sockmsg) || fail "pkg-config does not find sockmsg"

# shellcheck disable=SC2046
cc "$tmp/consumer.c" $(pkg-config --cflags --libs sockmsg) -o "$tmp/shared" || fail "shared build"
out=$(LD_LIBRARY_PATH="$root/lib" "$tmp/shared") || fail "shared consumer run"
[ "$out" = "consumer ok $version" ] || fail "shared consumer printed '$out'"
LD_LIBRARY_PATH="$root/lib" ldd "$tmp/shared" | grep -q "libsockmsg.so.0 => $root/lib" ||
    fail "shared consumer did not load the installed libsockmsg.so.0"

# shellcheck disable=SC2046
cc -static "$tmp/consumer.c" $(pkg-config --static --cflags --libs sockmsg) -o "$tmp/static" 2>"$tmp/static.log" ||
    { cat "$tmp/static.log" >&2; fail "static build"; }
out=$("$tmp/static") || fail "static consumer run"
[ "$out" = "consumer ok $version" ] || fail "static consumer printed '$out'"
ldd "$tmp/static" >/dev/null 2>&1 && fail "static consumer is dynamically linked"

make -s uninstall PREFIX=$prefix DESTDIR="$tmp" >/dev/null || fail "make uninstall"
left=$(find "$root" -type f -o -type l)
[ -z "$left" ] || fail "left after uninstall: $left"
echo "install test: ok (version $version, shared and static)"
