#!/bin/sh
# Install test, run from the top directory by `make install-test`:
# make install into a DESTDIR, check what landed, build a consumer with
# pkg-config and with CMake against the installed copy (shared and static)
# and run them, check the exported symbols, then make uninstall and check
# nothing is left.
set -eu

fail() { echo "install test: FAIL: $*" >&2; exit 1; }
words() { printf '%s' "$1" | tr '\n' ' '; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-install.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
prefix=/opt/smtest
root=$tmp$prefix
header=include/sockmsg/sockmsg.h
[ -f "$header" ] || fail "run from the top directory (no $header)"

# The version, from the one place it lives.
part() { sed -n "s/^#define SM_VERSION_$1 \([0-9][0-9]*\).*/\1/p" "$header"; }
version=$(part MAJOR).$(part MINOR).$(part PATCH)
major=$(part MAJOR)

make -s install PREFIX=$prefix DESTDIR="$tmp" >"$tmp/make.log" 2>&1 ||
    { cat "$tmp/make.log" >&2; fail "make install"; }

# ---- what was installed ----
for f in include/sockmsg/sockmsg.h include/sockmsg/frame.h lib/libsockmsg.a lib/libsockmsg.so \
         lib/libsockmsg.so.$major lib/libsockmsg.so.$version lib/pkgconfig/sockmsg.pc; do
    [ -e "$root/$f" ] || fail "$prefix/$f not installed"
done
cmp -s "$header" "$root/include/sockmsg/sockmsg.h" || fail "installed header differs from $header"
cmp -s include/sockmsg/frame.h "$root/include/sockmsg/frame.h" ||
    fail "installed frame.h differs from include/sockmsg/frame.h"
if [ -L "$root/lib/libsockmsg.so.$version" ] || [ ! -f "$root/lib/libsockmsg.so.$version" ]; then
    fail "libsockmsg.so.$version is not a regular file"
fi
[ "$(readlink "$root/lib/libsockmsg.so.$major")" = "libsockmsg.so.$version" ] ||
    fail "libsockmsg.so.$major does not link to libsockmsg.so.$version"
[ "$(readlink "$root/lib/libsockmsg.so")" = "libsockmsg.so.$major" ] ||
    fail "libsockmsg.so does not link to libsockmsg.so.$major"
soname=$(readelf -d "$root/lib/libsockmsg.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libsockmsg.so.$major" ] || fail "SONAME is '$soname', expected libsockmsg.so.$major"

# ---- exported symbols: every sm_* function of the header, nothing else ----
nm -D --defined-only "$root/lib/libsockmsg.so" | awk '{print $NF}' | sort -u >"$tmp/exported"
[ -s "$tmp/exported" ] || fail "the shared library exports nothing"
others=$(grep -v '^sm_' "$tmp/exported" || true)
[ -z "$others" ] || fail "exports more than sm_*: $(words "$others")"
sed -n 's/^SM_API[^(]*[ *]\(sm_[a-z0-9_]*\)(.*/\1/p' "$header" | sort -u >"$tmp/declared"
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
[ -z "$missing" ] || fail "declared in the header but not exported: $(words "$missing")"
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
[ -z "$extra" ] || fail "exported but not in the header: $(words "$extra")"

# ---- the static library: the API, and internals only under sm__ ----
# (a program linking libsockmsg.a gets every global name of it: an internal
# one must not be able to clash with a name of the program's own)
nm -g --defined-only "$root/lib/libsockmsg.a" | awk 'NF == 3 {print $3}' | sort -u >"$tmp/static"
leaked=$(grep -v '^sm__' "$tmp/static" | comm -23 - "$tmp/declared")
[ -z "$leaked" ] || fail "libsockmsg.a defines names outside the API and sm__: $(words "$leaked")"

# ---- a consumer, built with pkg-config against the installed copy ----
cat >"$tmp/consumer.c" <<'C'
#include <sockmsg/frame.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    sm_options opt = { .connect_timeout_ms = 5000, .accept_timeout_ms = 5000,
                       .send_timeout_ms = 5000, .recv_timeout_ms = 5000 };
    sm_listener *l;
    sm_conn *client, *server;
    char addr[SM_ADDRSTRLEN];
    void *msg = NULL;
    if (sm_listen_opts(&l, "127.0.0.1:0", &opt) < 0 ||
        sm_listener_addr(l, addr, sizeof addr) < 0 ||
        sm_connect_opts(&client, addr, &opt) < 0 ||
        sm_send(client, "hello", 5) < 0 ||
        sm_accept(l, &server) < 0 ||
        sm_recv_alloc(server, &msg) != 5 || memcmp(msg, "hello", 5) != 0) {
        fprintf(stderr, "consumer: %s\n", sm_last_error());
        return 1;
    }
    free(msg);
    uint8_t header[SM_FRAME_HEADER_LEN];
    sm_frame_header_put(header, 5);
    if (sm_frame_header_get(header) != 5)
        return 1;
    printf("consumer ok %s\n", sm_version());
    sm_close(client);
    sm_close(server);
    sm_listener_close(l);
    return 0;
}
C
PKG_CONFIG_PATH="$root/lib/pkgconfig"
PKG_CONFIG_SYSROOT_DIR="$tmp"
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
pc_version=$(pkg-config --modversion sockmsg) || fail "pkg-config does not find sockmsg"
[ "$pc_version" = "$version" ] || fail "sockmsg.pc says version $pc_version, the header $version"
want="consumer ok $version"

# Shared.  (Word splitting of pkg-config's output is intended.)
# shellcheck disable=SC2046
cc "$tmp/consumer.c" $(pkg-config --cflags --libs sockmsg) -o "$tmp/shared" 2>"$tmp/cc.log" ||
    { cat "$tmp/cc.log" >&2; fail "shared consumer does not build"; }
out=$(LD_LIBRARY_PATH="$root/lib" "$tmp/shared") || fail "shared consumer failed"
[ "$out" = "$want" ] || fail "shared consumer printed '$out', expected '$want'"
LD_LIBRARY_PATH="$root/lib" ldd "$tmp/shared" | grep -q "libsockmsg\.so\.$major => $root/lib/" ||
    fail "shared consumer did not load the installed libsockmsg.so.$major"

# Static.  glibc warns that getaddrinfo needs its shared NSS modules at run
# time; that is expected, so the log is shown only on failure.
# shellcheck disable=SC2046
cc -static "$tmp/consumer.c" $(pkg-config --static --cflags --libs sockmsg) -o "$tmp/static" \
    2>"$tmp/cc.log" || { cat "$tmp/cc.log" >&2; fail "static consumer does not build"; }
out=$("$tmp/static") || fail "static consumer failed"
[ "$out" = "$want" ] || fail "static consumer printed '$out', expected '$want'"
if ldd "$tmp/static" >/dev/null 2>&1; then fail "static consumer is dynamically linked"; fi

# ---- the same consumer, built with CMake against the installed copy ----
# tests/cmake/CMakeLists.txt: find_package(sockmsg 0.1 REQUIRED) and
# sockmsg::sockmsg, the DESTDIR copy given as CMAKE_PREFIX_PATH.  The
# shared library by default, the static one with sockmsg_USE_STATIC_LIBS;
# versions the version file must refuse (0.2 is newer, 1.0 another major).
for f in lib/cmake/sockmsg/sockmsgConfig.cmake lib/cmake/sockmsg/sockmsgConfigVersion.cmake; do
    [ -f "$root/$f" ] || fail "$prefix/$f not installed"
done
cmake_ok=yes
if ! command -v cmake >/dev/null 2>&1; then
    [ -z "${SM_REQUIRE_TOOLS:-}" ] || fail "cmake is not installed and SM_REQUIRE_TOOLS is set"
    echo "install test: CMake consumer skipped: cmake is not installed (make deps installs it)"
    cmake_ok=
fi
# cmake_consumer NAME CMAKE-ARGS...: configures and builds tests/cmake into
# $tmp/NAME with consumer.c; returns non-zero (log in $tmp/NAME.log) if
# either step fails.
cmake_consumer() {
    dir=$tmp/$1
    shift
    cmake -S tests/cmake -B "$dir" -DCMAKE_PREFIX_PATH="$root" -DSM_SOURCES="$tmp/consumer.c" \
        -DSM_EXPECT_VERSION="$version" "$@" >"$dir.log" 2>&1 &&
        cmake --build "$dir" >>"$dir.log" 2>&1
}
if [ -n "$cmake_ok" ]; then
    cmake_consumer cmake-shared || { cat "$tmp/cmake-shared.log" >&2; fail "CMake consumer (shared) does not build"; }
    found=$(sed -n 's/^sockmsg_DIR:PATH=//p' "$tmp/cmake-shared/CMakeCache.txt")
    [ "$found" = "$root/lib/cmake/sockmsg" ] || fail "CMake found sockmsg in '$found', not $root/lib/cmake/sockmsg"
    out=$(LD_LIBRARY_PATH="$root/lib" "$tmp/cmake-shared/consumer") || fail "CMake consumer (shared) failed"
    [ "$out" = "$want" ] || fail "CMake consumer (shared) printed '$out', expected '$want'"
    LD_LIBRARY_PATH="$root/lib" ldd "$tmp/cmake-shared/consumer" | grep -q "libsockmsg\.so\.$major => $root/lib/" ||
        fail "CMake consumer (shared) did not load the installed libsockmsg.so.$major"

    cmake_consumer cmake-static -Dsockmsg_USE_STATIC_LIBS=ON ||
        { cat "$tmp/cmake-static.log" >&2; fail "CMake consumer (static) does not build"; }
    out=$("$tmp/cmake-static/consumer") || fail "CMake consumer (static) failed"
    [ "$out" = "$want" ] || fail "CMake consumer (static) printed '$out', expected '$want'"
    ! readelf -d "$tmp/cmake-static/consumer" | grep -q 'NEEDED.*libsockmsg' ||
        fail "CMake consumer (static) needs libsockmsg.so"

    for v in $major.$(($(part MINOR) + 1)) $((major + 1)).0; do
        ! cmake_consumer "cmake-refuse-$v" -DSM_FIND_VERSION="$v" ||
            fail "find_package(sockmsg $v) accepted version $version"
        grep -q 'compatible with requested version' "$tmp/cmake-refuse-$v.log" ||
            { cat "$tmp/cmake-refuse-$v.log" >&2; fail "find_package(sockmsg $v) failed for another reason"; }
    done
fi

# ---- uninstall ----
make -s uninstall PREFIX=$prefix DESTDIR="$tmp" >"$tmp/make.log" 2>&1 ||
    { cat "$tmp/make.log" >&2; fail "make uninstall"; }
left=$(find "$root" ! -type d)
[ -z "$left" ] || fail "left after uninstall: $(words "$left")"

echo "install test: ok (version $version, shared and static, pkg-config${cmake_ok:+ and CMake})"
