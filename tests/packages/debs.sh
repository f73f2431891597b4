#!/bin/sh
# The Debian packages, end to end, as .ci/run runs them after the main
# tests (root, or sudo for apt-get and dpkg):
#
#   sh tests/packages/debs.sh
#
# 1. copy the tree (git's files, tracked and new) to a scratch directory,
#    make the source package there (for lintian's source checks) and build
#    the binary ones with `dpkg-buildpackage -us -uc -b`: libsockmsg0,
#    libsockmsg-dev, sockmsg-tools (and their -dbgsym).  The build fails
#    if debian/libsockmsg0.symbols differs from the library's exports.
# 2. lintian on the source and the binaries: any error, warning or info
#    tag fails (pedantic ones are shown); debian/*lintian-overrides give
#    the reason for each tag that stays.
# 3. `apt-get install ./*.deb`, then against the installed packages only:
#    the files each package holds, pkg-config, the man pages, and the
#    tutorial's server and client (examples/server.c, client.c) built with
#    pkg-config, with CMake (find_package(sockmsg 0.1), shared and static)
#    and run together; smcat from sockmsg-tools as an echo server.
# 4. purge the packages (also when a step fails) and check that dpkg's
#    list of installed packages is exactly what it was before.
#
# Loopback only, port 0; every program runs under timeout(1) and servers
# are stopped by their PID.  Refuses to run if one of the packages is
# already installed (it could not leave the machine as it was).
set -eu
cd "$(dirname "$0")/../.."
top=$(pwd)
limit=30 # seconds any one test program may run
PACKAGES="libsockmsg0 libsockmsg-dev sockmsg-tools libsockmsg0-dbgsym sockmsg-tools-dbgsym"

fail() {
    printf "debian packages: FAIL: %s\n" "$*" >&2
    exit 1
}
step() {
    now=$(date +%s)
    printf "debian packages: %s (%ss)\n" "$*" "$((now - started))"
}
started=$(date +%s)

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
for t in dpkg-buildpackage dh lintian apt-get cmake pkg-config cc readelf man; do
    command -v "$t" >/dev/null 2>&1 || fail "$t is not installed (make deps installs what this needs)"
done
installed() { dpkg-query -W -f '${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^.i'; }
for p in $PACKAGES; do
    ! installed "$p" || fail "$p is already installed: purge it first (apt-get purge $p)"
done

part() { sed -n "s/^#define SM_VERSION_$1 \([0-9][0-9]*\).*/\1/p" include/sockmsg/sockmsg.h; }
version=$(part MAJOR).$(part MINOR).$(part PATCH)
major=$(part MAJOR)
changelog_version=$(dpkg-parsechangelog -S Version)
[ "$changelog_version" = "$version" ] ||
    fail "debian/changelog is at $changelog_version, include/sockmsg/sockmsg.h at $version (dch -v $version)"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$multiarch

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-debs.XXXXXX") || fail "mktemp -d"
pids=
did_install=
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
    done
    if [ -n "$did_install" ]; then
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -q $PACKAGES >"$tmp/purge.log" 2>&1 ||
            { cat "$tmp/purge.log" >&2; echo "debian packages: purge failed" >&2; }
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
dpkg-query -W -f '${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n' | sort >"$tmp/dpkg-before"

# ---- 1. build, out of tree ----
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -x -C "$tmp/src"
[ -f "$tmp/src/debian/control" ] || fail "copying the tree to $tmp/src"
(cd "$tmp" && dpkg-source -b src) >"$tmp/source.log" 2>&1 ||
    { cat "$tmp/source.log" >&2; fail "dpkg-source -b"; }
(cd "$tmp/src" && DEB_BUILD_OPTIONS="parallel=2 ${DEB_BUILD_OPTIONS:-}" dpkg-buildpackage -us -uc -b) \
    >"$tmp/build.log" 2>&1 || {
    tail -n 60 "$tmp/build.log" >&2
    if grep -q 'dpkg-gensymbols' "$tmp/build.log"; then
        echo "The exported API differs from debian/libsockmsg0.symbols; if that is intended:" >&2
        echo "    make lib && sh debian/gen-symbols.sh build/libsockmsg.so && git add debian/libsockmsg0.symbols" >&2
    fi
    fail "dpkg-buildpackage -us -uc -b"
}
grep -q '^install test: ok' "$tmp/build.log" || fail "the build's dh_auto_test did not run tests/install.sh"
for p in libsockmsg0 libsockmsg-dev sockmsg-tools; do
    [ -f "$tmp/${p}_${version}_$(dpkg --print-architecture).deb" ] || fail "no ${p}_${version} .deb was built"
done
step "built $(cd "$tmp" && echo *.deb)"

# ---- 2. lintian ----
lintian --info --display-experimental --pedantic --fail-on error,warning,info \
    "$tmp/libsockmsg_${version}.dsc" "$tmp"/libsockmsg_"${version}"_*.changes >"$tmp/lintian.log" 2>&1 || {
    cat "$tmp/lintian.log" >&2
    fail "lintian found problems (fix them, or give the reason in debian/*lintian-overrides)"
}
grep -v 'running with root privileges' "$tmp/lintian.log" | sed 's/^/    /'
step "lintian clean"

# ---- 3. install, and use what was installed ----
did_install=yes
(cd "$tmp" && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends ./*.deb) \
    >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "apt-get install ./*.deb"; }
for p in $PACKAGES; do
    installed "$p" || fail "$p is not installed after apt-get install ./*.deb"
done
# Installing must not have pulled in anything else.
dpkg-query -W -f '${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n' | sort >"$tmp/dpkg-during"
extra=$(comm -13 "$tmp/dpkg-before" "$tmp/dpkg-during" | grep -vE "^($(echo "$PACKAGES" | tr ' ' '|')):" || true)
[ -z "$extra" ] || fail "apt-get install ./*.deb also installed or changed: $extra"

owner() { dpkg-query -S "$1" 2>/dev/null | sed 's/:.*//' | head -n 1; }
for f in "$libdir/libsockmsg.so.$version:libsockmsg0" "$libdir/libsockmsg.so.$major:libsockmsg0" \
    "/usr/include/sockmsg/sockmsg.h:libsockmsg-dev" "/usr/include/sockmsg/frame.h:libsockmsg-dev" \
    "$libdir/libsockmsg.a:libsockmsg-dev" "$libdir/libsockmsg.so:libsockmsg-dev" \
    "$libdir/pkgconfig/sockmsg.pc:libsockmsg-dev" "$libdir/cmake/sockmsg/sockmsgConfig.cmake:libsockmsg-dev" \
    "$libdir/cmake/sockmsg/sockmsgConfigVersion.cmake:libsockmsg-dev" \
    "/usr/share/man/man3/sm_send.3.gz:libsockmsg-dev" "/usr/share/man/man7/sockmsg.7.gz:libsockmsg-dev" \
    "/usr/bin/smcat:sockmsg-tools" "/usr/share/man/man1/smcat.1.gz:sockmsg-tools"; do
    path=${f%:*}
    [ -e "$path" ] || fail "$path is not installed"
    [ "$(owner "$path")" = "${f##*:}" ] || fail "$path belongs to '$(owner "$path")', not ${f##*:}"
done
cmp -s include/sockmsg/sockmsg.h /usr/include/sockmsg/sockmsg.h || fail "installed sockmsg.h differs from the tree's"
# pkg-config needs the modules of sockmsg.pc's Requires.private (openssl in
# a TLS build): libsockmsg-dev must depend on the packages holding them.
for m in $(sed -n 's/^Requires\.private://p' "$libdir/pkgconfig/sockmsg.pc" | grep -o '[A-Za-z][A-Za-z0-9_.+-]*' || true); do
    pkg=$(dpkg-query -S "$(pkg-config --variable=pcfiledir "$m")/$m.pc" | sed -n '1s/[:,].*//p')
    dpkg-query -W -f '${Depends}\n' libsockmsg-dev | tr ',' '\n' | grep -qE "^ *$pkg( |\$)" ||
        fail "libsockmsg-dev does not depend on $pkg, which holds $m.pc (sockmsg.pc: Requires.private: $m)"
done
for p in libsockmsg0 libsockmsg-dev sockmsg-tools; do
    echo "    $p depends on: $(dpkg-query -W -f '${Depends}' "$p")"
done
# loads FILE: the real path of the libsockmsg.so.N that a program (or,
# with no FILE, the dynamic linker's cache) resolves, or nothing.
loads() {
    if [ $# = 0 ]; then ldconfig -p; else ldd "$1"; fi |
        sed -n "s/^[[:space:]]*libsockmsg\.so\.$major .*=> \(.*\.so\.$major\).*/\1/p" | head -n 1 |
        xargs -r realpath
}
[ "$(loads)" = "$libdir/libsockmsg.so.$version" ] ||
    fail "the dynamic linker's cache does not list libsockmsg.so.$major in $libdir"
[ "$(pkg-config --modversion sockmsg)" = "$version" ] || fail "pkg-config --modversion sockmsg is not $version"
for page in smcat sm_send sm_server_new sockmsg.7; do
    man -w "$page" >/dev/null 2>&1 || fail "man -w $page: no manual page installed"
done
[ "$(smcat --version | head -n 1)" = "smcat (libsockmsg) $version" ] ||
    fail "smcat --version printed '$(smcat --version | head -n 1)'"
readelf -d /usr/bin/smcat | grep -q "NEEDED.*libsockmsg\.so\.$major" ||
    fail "smcat does not link the shared libsockmsg.so.$major"

# start NAME COMMAND...: a server in the background; waits (at most 10 s)
# for its "listening on ADDR" line and sets $pid and $addr.
start() {
    name=$1
    shift
    timeout "$limit" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    pids="$pids $pid"
    i=0
    until grep -qE '^(smcat: )?listening on ' "$tmp/$name.out" "$tmp/$name.err" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/$name.err" >&2; fail "$name exited without listening"; }
        i=$((i + 1))
        [ "$i" -le 100 ] || fail "$name did not say where it listens within 10 s"
        sleep 0.1
    done
    addr=$(sed -n 's/^\(smcat: \)\{0,1\}listening on //p' "$tmp/$name.out" "$tmp/$name.err" | head -n 1)
}
# stop: waits for the server started last; it must exit 0.
stop() {
    st=0
    wait "$pid" || st=$?
    pids=$(echo "$pids" | sed "s/ $pid\$//")
    [ "$st" -eq 0 ] || { cat "$tmp/$name.err" >&2; fail "$name exited with status $st"; }
}
# tutorial DIR HOW: DIR/server and DIR/client, run together: the client
# must print TEST, and both must load the installed library (or none).
tutorial() {
    for prog in server client; do
        [ -x "$1/$prog" ] || fail "$2: $1/$prog was not built"
        if [ "$2" = "CMake, static" ]; then
            ! readelf -d "$1/$prog" | grep -q 'NEEDED.*libsockmsg' || fail "$2: $prog needs libsockmsg.so"
        else
            [ "$(loads "$1/$prog")" = "$libdir/libsockmsg.so.$version" ] ||
                fail "$2: $prog does not load $libdir/libsockmsg.so.$major"
        fi
    done
    start "server ($2)" "$1/server" 127.0.0.1:0
    out=$(timeout "$limit" "$1/client" "$addr") || fail "$2: the client failed"
    [ "$out" = TEST ] || fail "$2: the client printed '$out', expected TEST"
    stop
}

# pkg-config.  (Word splitting of pkg-config's output is intended.)
mkdir "$tmp/pc"
for prog in server client; do
    # shellcheck disable=SC2046
    cc "examples/$prog.c" $(pkg-config --cflags --libs sockmsg) -o "$tmp/pc/$prog" 2>"$tmp/cc.log" ||
        { cat "$tmp/cc.log" >&2; fail "examples/$prog.c does not build with pkg-config"; }
done
tutorial "$tmp/pc" pkg-config

# CMake: tests/cmake, find_package(sockmsg 0.1 REQUIRED) from the system.
cmake_build() {
    dir=$tmp/$1
    shift
    { cmake -S tests/cmake -B "$dir" -DSM_SOURCES="$top/examples/server.c;$top/examples/client.c" \
        -DSM_EXPECT_VERSION="$version" "$@" && cmake --build "$dir"; } >"$dir.log" 2>&1 ||
        { cat "$dir.log" >&2; fail "examples/server.c and client.c do not build with CMake ($*)"; }
    found=$(sed -n 's/^sockmsg_DIR:PATH=//p' "$dir/CMakeCache.txt")
    [ "$(realpath "$found")" = "$libdir/cmake/sockmsg" ] ||
        fail "CMake found sockmsg in '$found', not $libdir/cmake/sockmsg"
}
cmake_build cmake-shared
tutorial "$tmp/cmake-shared" "CMake"
cmake_build cmake-static -Dsockmsg_USE_STATIC_LIBS=ON
tutorial "$tmp/cmake-static" "CMake, static"

# sockmsg-tools: smcat as an echo server and as its client.
start "smcat --echo" smcat --listen 127.0.0.1:0 --echo
out=$(timeout "$limit" smcat --connect "$addr" --data hello --expect 1) || fail "smcat --connect failed"
[ "$out" = hello ] || fail "smcat --connect printed '$out', expected hello"
kill -TERM "$pid" 2>/dev/null || true
stop
step "installed and used: pkg-config, CMake (shared, static), smcat"

# ---- 4. purge, and the machine as it was ----
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get purge -y -q $PACKAGES >"$tmp/purge.log" 2>&1 ||
    { cat "$tmp/purge.log" >&2; fail "apt-get purge"; }
did_install=
dpkg-query -W -f '${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n' | sort >"$tmp/dpkg-after"
cmp -s "$tmp/dpkg-before" "$tmp/dpkg-after" || {
    diff "$tmp/dpkg-before" "$tmp/dpkg-after" >&2 || true
    fail "the installed packages differ from before the test"
}
for path in "$libdir/libsockmsg.so.$major" /usr/include/sockmsg "$libdir/cmake/sockmsg" /usr/bin/smcat; do
    [ ! -e "$path" ] || fail "$path is still there after the purge"
done
! ldconfig -p | grep -q libsockmsg || fail "the dynamic linker's cache still lists libsockmsg"
step "purged; dpkg's package list is as before"
echo "debian packages: ok ($version: built, lintian clean, installed, used with pkg-config and CMake, purged)"
