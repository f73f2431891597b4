#!/bin/sh
# debian/libsockmsg0.symbols from the built shared library: every symbol it
# exports, each with the version that first had it.
#
#   sh debian/gen-symbols.sh LIBRARY            rewrite debian/libsockmsg0.symbols
#   sh debian/gen-symbols.sh --check LIBRARY    exit 1, showing the difference,
#                                               unless the file matches LIBRARY
#
# LIBRARY is the built libsockmsg.so (make BUILD=build lib: build/libsockmsg.so).
# A symbol already in the file keeps its version; a new one gets the
# version in include/sockmsg/sockmsg.h (SM_VERSION_*), so raise that first
# when adding API after a release.  A symbol gone from the library is an
# ABI break: it needs a new soname, not just a new symbols file.
#
# The package build (dpkg-gensymbols -c4 in debian/rules) and tests/symbols.sh
# (make check) fail on any difference, so the file changes only when someone
# runs this script and commits the result.
set -eu

check=
if [ "${1:-}" = --check ]; then
    check=yes
    shift
fi
lib=${1:?usage: sh debian/gen-symbols.sh [--check] path/to/libsockmsg.so}
top=$(cd "$(dirname "$0")/.." && pwd)
file=$top/debian/libsockmsg0.symbols
header=$top/include/sockmsg/sockmsg.h
export LC_ALL=C

fail() {
    echo "gen-symbols: $*" >&2
    exit 1
}
[ -f "$lib" ] || fail "no library $lib (build it: make lib)"
part() { sed -n "s/^#define SM_VERSION_$1 \([0-9][0-9]*\).*/\1/p" "$header"; }
version=$(part MAJOR).$(part MINOR).$(part PATCH)
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
case $soname in
libsockmsg.so.[0-9]*) ;;
*) fail "$lib has soname '$soname', expected libsockmsg.so.N" ;;
esac
package=libsockmsg${soname#libsockmsg.so.}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-symbols.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# The defined dynamic symbols (functions and data), by name.
nm -D --defined-only "$lib" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/exported"
[ -s "$tmp/exported" ] || fail "$lib exports nothing"

# Versions already recorded: "name version" per symbol.
: >"$tmp/known"
[ ! -f "$file" ] || sed -n 's/^ \([^@ ]*\)@Base \([^ ]*\).*/\1 \2/p' "$file" | sort -u >"$tmp/known"

{
    echo "$soname $package #MINVER#"
    echo "* Build-Depends-Package: libsockmsg-dev"
    while read -r sym; do
        v=$(awk -v s="$sym" '$1 == s { print $2; exit }' "$tmp/known")
        echo " $sym@Base ${v:-$version}"
    done <"$tmp/exported"
} >"$tmp/new"

if [ -z "$check" ]; then
    cp "$tmp/new" "$file"
    echo "gen-symbols: wrote $(wc -l <"$tmp/exported") symbols of $soname to debian/libsockmsg0.symbols"
    exit 0
fi
if [ -f "$file" ] && cmp -s "$tmp/new" "$file"; then
    echo "gen-symbols: debian/libsockmsg0.symbols matches $lib ($(wc -l <"$tmp/exported") symbols)"
    exit 0
fi
{
    echo "gen-symbols: debian/libsockmsg0.symbols does not match the exported API of $lib:"
    diff -u --label debian/libsockmsg0.symbols --label "exported by $lib" "$file" "$tmp/new" | sed 's/^/    /' || true
    cut -d' ' -f1 "$tmp/known" | comm -23 - "$tmp/exported" | sed 's/^/    REMOVED (an ABI break: the soname must change): /'
    echo "If the change to the API is intended, regenerate the file and commit it:"
    echo "    make lib && sh debian/gen-symbols.sh build/libsockmsg.so && git add debian/libsockmsg0.symbols"
} >&2
exit 1
