#!/bin/sh
# The event-loop adapters as a user gets them: include/sockmsg/adapters/
# libuv.h and libevent.h (their behaviour is tested in tests/test_adapters.c).
#
#   sh tests/adapters.sh BUILD_DIR         (make check passes it)
#
# 1. Each header compiles on its own, as C99 and C11 with gcc and clang
#    (-Wall -Wextra -Wpedantic -Wconversion -Werror) and as C++11 with g++
#    and clang++, and every name it defines starts with sm_, SM_ or
#    SOCKMSG_.
# 2. make install into a DESTDIR puts both under include/sockmsg/adapters/,
#    and a consumer built against that copy with pkg-config (sockmsg and
#    libuv, sockmsg and libevent_core) runs a server timer through the
#    adapter until the server stops, then exits 0.
# 3. libsockmsg itself does not link libuv or libevent.
#
# A loop library that is not installed is skipped with a note (make deps
# installs both), or failed if SM_REQUIRE_TOOLS is set (as .ci/run does).
set -eu

build=${1:?usage: sh tests/adapters.sh BUILD_DIR}
[ -d "$build" ] || { echo "adapters: FAIL: no directory $build" >&2; exit 1; }
cd "$(dirname "$0")/.."

fail() {
    printf "adapters: FAIL: %s\n" "$*" >&2
    exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-adapters.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

have() { pkg-config --exists "$1" 2>/dev/null; }
present=
for pkg in libuv libevent_core; do
    if have $pkg; then
        present="$present $pkg"
    else
        echo "adapters: $pkg skipped: not installed (make deps installs it)"
        [ -z "${SM_REQUIRE_TOOLS:-}" ] || fail "SM_REQUIRE_TOOLS is set: not skipping $pkg"
    fi
done
header_of() { case $1 in libuv) echo libuv.h ;; libevent_core) echo libevent.h ;; esac; }

# ---- 1. each header alone, in C and C++, and its names ----
for pkg in $present; do
    h=sockmsg/adapters/$(header_of $pkg)
    printf '#include <%s>\n' "$h" >"$tmp/alone.c"
    for cc in gcc clang; do
        for std in c99 c11; do
            $cc -std=$std -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Wconversion \
                -Wsign-conversion -Werror \
                -Iinclude $(pkg-config --cflags $pkg) -fsyntax-only "$tmp/alone.c" \
                2>"$tmp/cc.log" || { cat "$tmp/cc.log" >&2; fail "$h: $cc -std=$std"; }
        done
    done
    for cxx in g++ clang++; do
        $cxx -std=c++11 -Wall -Wextra -Wpedantic -Werror -Iinclude $(pkg-config --cflags $pkg) \
            -fsyntax-only -x c++ "$tmp/alone.c" 2>"$tmp/cc.log" ||
            { cat "$tmp/cc.log" >&2; fail "$h: $cxx -std=c++11"; }
    done
    # Functions, types and macros it defines (the doc comments aside).
    names=$(sed -e '/^ \*/d' -e '/^\/\*/d' "include/$h" |
        sed -n -e 's/^static inline [^(]*[ *]\([A-Za-z_0-9]*\)(.*/\1/p' \
            -e 's/^typedef struct \([A-Za-z_0-9]*\).*/\1/p' -e 's/^} \([A-Za-z_0-9]*\);/\1/p' \
            -e 's/^#define \([A-Za-z_0-9]*\).*/\1/p')
    [ -n "$names" ] || fail "$h: no names found (the check is broken)"
    for n in $names; do
        case $n in sm_* | SM_* | SOCKMSG_*) ;; *) fail "$h defines '$n', outside sm_/SM_/SOCKMSG_" ;; esac
    done
done

# ---- 2. installed, then used through pkg-config ----
prefix=/opt/smadapters
root=$tmp/root$prefix
make -s install BUILD="$build" PREFIX=$prefix DESTDIR="$tmp/root" >"$tmp/make.log" 2>&1 ||
    { cat "$tmp/make.log" >&2; fail "make install"; }
for f in include/sockmsg/adapters/*.h; do
    cmp -s "$f" "$root/$f" || fail "$f not installed (or differs) under $prefix"
done

cat >"$tmp/consumer.c" <<'C'
#include <stdio.h>
#ifdef USE_UV
#include <sockmsg/adapters/libuv.h>
#else
#include <sockmsg/adapters/libevent.h>
#endif

static void tick(sm_server *s, uint64_t id, void *arg)
{
    (void)id;
    if (++*(int *)arg == 3)
        sm_server_stop(s);
}

int main(void)
{
    sm_server *s;
    int ticks = 0, rc;
    if (sm_server_new(&s, NULL, NULL, NULL) < 0 || sm_server_timer(s, 10, 10, tick, &ticks, NULL) < 0)
        return 1;
#ifdef USE_UV
    uv_loop_t loop;
    sm_uv_adapter *a;
    if (uv_loop_init(&loop) < 0 || sm_uv_attach(s, &loop, &a) < 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = sm_uv_status(a);
    sm_uv_detach(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) < 0)
        return 1;
#else
    struct event_base *base = event_base_new();
    sm_event_adapter *a;
    if (!base || sm_event_attach(s, base, &a) < 0)
        return 1;
    event_base_dispatch(base);
    rc = sm_event_status(a);
    sm_event_detach(a);
    event_base_free(base);
#endif
    sm_server_free(s);
    printf("%d ticks, %s\n", ticks, sm_strerror(rc));
    return ticks == 3 && rc == SM_ESTOPPED ? 0 : 1;
}
C
for pkg in $present; do
    def=$([ $pkg = libuv ] && echo -DUSE_UV || echo -DUSE_EVENT)
    # The installed sockmsg through its .pc file (staged: a sysroot), the
    # loop library from the system.
    sm_flags=$(PKG_CONFIG_PATH="$root/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp/root" \
        pkg-config --cflags --libs sockmsg) || fail "pkg-config does not find the installed sockmsg"
    # shellcheck disable=SC2046,SC2086
    cc -Wall -Wextra -Werror $def "$tmp/consumer.c" $sm_flags $(pkg-config --cflags --libs $pkg) \
        -o "$tmp/consumer-$pkg" 2>"$tmp/cc.log" || { cat "$tmp/cc.log" >&2; fail "consumer with $pkg"; }
    out=$(LD_LIBRARY_PATH="$root/lib" timeout 10 "$tmp/consumer-$pkg") ||
        fail "consumer with $pkg failed: $out"
    [ "$out" = "3 ticks, server stopped" ] || fail "consumer with $pkg printed '$out'"
done
make -s uninstall BUILD="$build" PREFIX=$prefix DESTDIR="$tmp/root" >"$tmp/make.log" 2>&1 ||
    { cat "$tmp/make.log" >&2; fail "make uninstall"; }
[ ! -e "$root/include/sockmsg/adapters" ] || fail "uninstall left include/sockmsg/adapters"

# ---- 3. the library does not depend on the loops ----
needed=$(readelf -d "$build/libsockmsg.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
case $needed in *libuv* | *libevent*) fail "libsockmsg.so needs: $(echo $needed)" ;; esac
if nm "$build/libsockmsg.a" 2>/dev/null | grep -qE ' U (uv_|event_)'; then
    fail "libsockmsg.a refers to libuv or libevent"
fi

if [ -n "$present" ]; then echo "adapters: ok (${present# })"; else echo "adapters: skipped (neither libuv nor libevent is installed)"; fi
