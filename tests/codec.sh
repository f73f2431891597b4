#!/bin/sh
# The public codec header, include/sockmsg/frame.h, as its users compile it.
#
#   sh tests/codec.sh [BUILD_DIR]      (BUILD_DIR is not needed)
#
# 1. It holds the one enum sm_error: sockmsg.h includes it and declares
#    no copy of its own.
# 2. It includes nothing but <stddef.h>, <stdint.h> and <string.h>, and
#    with -ffreestanding -nostdinc it compiles against the compiler's own
#    headers alone: no C library at all.
# 3. It compiles cleanly, with every function used, under gcc and clang as
#    C99, C11 and C++11 (an Arduino sketch is C++), with -Wall -Wextra
#    -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wcast-qual and
#    more, all as errors.
# 4. With sockmsg.h in one translation unit, in either order, as C and C++.
# 5. Every name it declares starts with sm_ or SM_.
set -eu

cd "$(dirname "$0")/.."
header=include/sockmsg/frame.h

fail() {
    printf "codec header: FAIL: %s\n" "$*" >&2
    exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-codec.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
checks=0

# ---- 1. one set of error codes ----
grep -q '^enum sm_error {' "$header" || fail "no enum sm_error in $header"
grep -qx '#include <sockmsg/frame.h>' include/sockmsg/sockmsg.h ||
    fail "include/sockmsg/sockmsg.h does not include <sockmsg/frame.h>"
if grep -n 'enum sm_error {' include/sockmsg/sockmsg.h >&2; then
    fail "include/sockmsg/sockmsg.h declares enum sm_error again: frame.h holds it"
fi
checks=$((checks + 1))

# ---- 2. no C library ----
others=$(sed -n 's/^#[ \t]*include[ \t]*\(.*\)/\1/p' "$header" |
    grep -vxE '<(stddef|stdint|string)\.h>' || true)
[ -z "$others" ] || fail "$header includes $others"

# A program that calls every function, so each is compiled and checked.
cat >"$tmp/use.c" <<'C'
#include <sockmsg/frame.h>

int use(const uint8_t *in, size_t n);

int use(const uint8_t *in, size_t n)
{
    static uint8_t buf[16];
    uint8_t h[SM_FRAME_HEADER_LEN];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_header_put(h, sm_frame_header_get(in));
    sm_frame_decoder_init(&d, sizeof buf, NULL, 0);
    sm_frame_decoder_set_buffer(&d, buf, sizeof buf);
    int st = sm_frame_decode(&d, in, n, &r);
    return st == SM_ETOOBIG ? -1 : sm_frame_decoder_in_frame(&d) + (int)r.used + h[0];
}
C
cp "$tmp/use.c" "$tmp/use.cpp"
strict="-Wall -Wextra -Wpedantic -Werror -Wconversion -Wsign-conversion -Wshadow -Wcast-qual
        -Wundef -Wcast-align -Wpointer-arith -Wwrite-strings -Wredundant-decls"
if command -v gcc >/dev/null 2>&1; then
    gcc_include=$(gcc -print-file-name=include)
    # shellcheck disable=SC2086
    gcc -std=c11 -ffreestanding -nostdinc -isystem "$gcc_include" -Iinclude $strict \
        -Wstrict-prototypes -Wmissing-prototypes -c "$tmp/use.c" -o "$tmp/use.o" ||
        fail "$header needs more than the compiler's own headers (gcc -ffreestanding -nostdinc)"
    checks=$((checks + 1))
fi

# ---- 3. strict C and C++ ----
for cc in gcc clang; do
    command -v "$cc" >/dev/null 2>&1 || { echo "codec header: note: no $cc, skipped"; continue; }
    for std in c99 c11; do
        for mode in "" -ffreestanding; do
            # shellcheck disable=SC2086
            $cc -std=$std $mode -Iinclude $strict -Wstrict-prototypes -Wmissing-prototypes \
                -c "$tmp/use.c" -o "$tmp/use.o" || fail "$cc -std=$std $mode"
            checks=$((checks + 1))
        done
    done
    cxx=$([ $cc = gcc ] && echo g++ || echo clang++)
    command -v "$cxx" >/dev/null 2>&1 || { echo "codec header: note: no $cxx, skipped"; continue; }
    # shellcheck disable=SC2086
    $cxx -std=c++11 -Iinclude $strict -c "$tmp/use.cpp" -o "$tmp/use.o" || fail "$cxx -std=c++11"
    checks=$((checks + 1))
done

# ---- 4. together with sockmsg.h, in either order ----
for first in frame sockmsg; do
    second=$([ $first = frame ] && echo sockmsg || echo frame)
    printf '#include <sockmsg/%s.h>\n#include <sockmsg/%s.h>\n' "$first" "$second" >"$tmp/both.c"
    cat >>"$tmp/both.c" <<'C'
int both(void);
int both(void)
{
    enum sm_error e = SM_ETOOBIG;
    return (int)e + SM_FRAME_HEADER_LEN + (int)SM_DEFAULT_MAX_FRAME;
}
C
    cp "$tmp/both.c" "$tmp/both.cpp"
    cc -std=c11 -D_GNU_SOURCE -Iinclude -Wall -Wextra -Wpedantic -Werror -c "$tmp/both.c" \
        -o "$tmp/both.o" || fail "$first.h then $second.h does not compile as C"
    if command -v c++ >/dev/null 2>&1; then
        c++ -std=c++11 -Iinclude -Wall -Wextra -Wpedantic -Werror -c "$tmp/both.cpp" \
            -o "$tmp/both.o" || fail "$first.h then $second.h does not compile as C++"
    fi
    checks=$((checks + 1))
done

# ---- 5. names ----
{
    # Macros, types and tags, enumerators, functions.
    sed -n 's/^#define[ \t]*\([A-Za-z_0-9]*\).*/\1/p' "$header"
    sed -n 's/^} *\([A-Za-z_0-9]*\);/\1/p; s/^\(typedef \)\{0,1\}\(struct\|enum\) \([A-Za-z_0-9]*\).*/\3/p' "$header"
    sed -n 's/^[ \t]*\([A-Za-z_][A-Za-z_0-9]*\) = .*/\1/p' "$header"
    sed -n 's/^static inline [^(]*[ *]\([A-Za-z_0-9]*\)(.*/\1/p' "$header"
} | sort -u >"$tmp/names"
[ "$(grep -c . "$tmp/names")" -ge 20 ] || fail "found only $(grep -c . "$tmp/names") names in $header"
bad=$(grep -vE '^(sm_|SM_)' "$tmp/names" | grep -vx SOCKMSG_FRAME_H || true)
[ -z "$bad" ] || fail "names without the sm_/SM_ prefix: $(echo "$bad" | tr '\n' ' ')"
checks=$((checks + 1))

echo "codec header: ok ($checks checks, $(grep -c . "$tmp/names") names)"
