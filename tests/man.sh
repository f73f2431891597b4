#!/bin/sh
# The man pages in docs/man, checked against the public header.
#
#   sh tests/man.sh [BUILD_DIR]        (BUILD_DIR is not needed)
#
# 1. Every public function (each SM_API declaration in
#    include/sockmsg/sockmsg.h) has docs/man/<name>.3: the page itself or a
#    one-line ".so man3/<group>.3" link to the page of its group.  The page
#    names it in NAME and its SYNOPSIS prototype (.Ft/.Fo/.Fa/.Fc) is the
#    header's, token for token.  No sm_*.3 page is left for a function the
#    header no longer declares.
# 2. Every SM_E* error code, every public macro and every field of the
#    public structs appears in some page; "#define" lines a SYNOPSIS shows
#    (.Fd) and the error codes' values match the header.
# 3. mandoc -Tlint -W warning reports nothing for any page (for a .so link,
#    its target is linted; the link itself only draws mandoc's ".so is
#    fragile" style note).  This includes pages written by others, such as
#    smcat.1.
# 4. man -l renders every page, links included, to non-empty output with
#    nothing on stderr.  Links use the installed form ".so man3/x.3", which
#    man-db and mandoc resolve from the root of a man tree, so the pages
#    are rendered from a scratch tree laid out as "make install" lays them
#    out (man1/, man3/, man7/).
set -eu

cd "$(dirname "$0")/.."
header=include/sockmsg/sockmsg.h
mandir=docs/man

fail() {
    echo "man pages: FAIL: $*" >&2
    exit 1
}

command -v mandoc >/dev/null 2>&1 || fail "mandoc is not installed (make deps)"
command -v man >/dev/null 2>&1 || fail "man is not installed (make deps)"
[ -f "$header" ] || fail "no $header"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# ---- the pages ----------------------------------------------------------

pages=$(ls "$mandir" 2>/dev/null | grep -E '\.[137]$' || true)
[ -n "$pages" ] || fail "no pages in $mandir"
count=0
for p in $pages; do
    count=$((count + 1))
done

# is_link PAGE: the page is a .so link.
is_link() {
    head -n 1 "$mandir/$1" | grep -q '^\.so[ 	]'
}

# target PAGE: the file name a link page points to, after checking its form.
target() {
    [ "$(wc -l < "$mandir/$1")" -eq 1 ] ||
        fail "$1: a .so link page must be the one line '.so manN/page.N'"
    t=$(sed -n 's|^\.so man\([137]\)/\([A-Za-z0-9_.-]*\.\1\)$|\2|p' "$mandir/$1")
    [ -n "$t" ] || fail "$1: '$(cat "$mandir/$1")' is not of the form '.so manN/page.N'"
    [ -f "$mandir/$t" ] || fail "$1: links to $t, which is not in $mandir"
    is_link "$t" && fail "$1: links to $t, which is itself a link"
    echo "$t"
}

# resolve PAGE: the page that holds the text (PAGE itself or its target).
resolve() {
    if is_link "$1"; then target "$1"; else echo "$1"; fi
}

# The text of every page that is not a link, for the grep checks.
for p in $pages; do
    is_link "$p" || cat "$mandir/$p"
done > "$tmp/all"

# ---- 1. one page per public function ------------------------------------

# One line per SM_API declaration, continuation lines joined.
awk '/^SM_API[ \t]/ { on = 1; buf = "" }
     on { buf = buf " " $0; if ($0 ~ /;/) { print buf; on = 0 } }' \
    "$header" | sed 's/^ *SM_API//' > "$tmp/protos"
sed -n 's/.*[^A-Za-z0-9_]\(sm_[A-Za-z0-9_]*\)[ 	]*(.*/\1/p' "$tmp/protos" > "$tmp/funcs"
[ -s "$tmp/funcs" ] || fail "no SM_API declarations found in $header"
[ "$(wc -l < "$tmp/funcs")" -eq "$(wc -l < "$tmp/protos")" ] ||
    fail "could not read every function name from $header"

while read -r fn; do
    [ -f "$mandir/$fn.3" ] || fail "$fn has no page: $mandir/$fn.3 is missing"
    page=$(resolve "$fn.3")
    # NAME lists it, so the link leads to a page that speaks of it.
    grep -Eq "^\.Nm $fn( ,)?\$" "$mandir/$page" ||
        fail "$fn: $page does not name $fn in NAME (.Nm $fn)"
    # The SYNOPSIS prototype, rebuilt from .Ft/.Fo/.Fa/.Fc, whitespace removed.
    doc=$(awk -v fn="$fn" '
        /^\.Ft / { ft = substr($0, 5) }
        $0 == ".Fo " fn { inside = 1; args = ""; next }
        inside && /^\.Fa / { a = substr($0, 5); args = args (args == "" ? "" : ",") a; next }
        inside && /^\.Fc/ { print ft " " fn "(" args ");"; exit }
    ' "$mandir/$page" | tr -d ' \t"')
    [ -n "$doc" ] || fail "$fn: $page has no SYNOPSIS prototype (.Ft, .Fo $fn, .Fa, .Fc)"
    want=$(grep -E "[^A-Za-z0-9_]$fn[ 	]*\(" "$tmp/protos" | tr -d ' \t')
    [ "$doc" = "$want" ] ||
        fail "$fn: the prototype in $page differs from $header:
  page:   $doc
  header: $want"
done < "$tmp/funcs"

# No page for a function that is gone.
for p in $pages; do
    case $p in
    sm_*.3)
        grep -qx "${p%.3}" "$tmp/funcs" ||
            fail "$p documents ${p%.3}, which $header does not declare"
        ;;
    esac
done

# Every function a page names in NAME can be reached by its own name.
for p in $pages; do
    is_link "$p" && continue
    sed -n '/^\.Sh NAME/,/^\.Sh /s/^\.Nm \([A-Za-z0-9_]*\).*/\1/p' "$mandir/$p" |
        while read -r nm; do
            case $p in
            *.3) [ -f "$mandir/$nm.3" ] ||
                fail "$p names $nm in NAME, but there is no $mandir/$nm.3 (add a .so link)" ;;
            esac
        done
done

# ---- 2. error codes, macros and struct fields ----------------------------

# word SYMBOL WHAT: SYMBOL appears as a whole word in some page.
word() {
    grep -qw -- "$1" "$tmp/all" || fail "$2 is not documented in any page"
}

# (enum sm_error is in frame.h, which sockmsg.h includes)
sed -n '/^enum sm_error/,/^};/p' include/sockmsg/frame.h |
    sed -n 's/^[ 	]*\(SM_E[A-Z0-9_]*\)[ 	]*=[ 	]*\(-*[0-9]*\).*/\1 \2/p' > "$tmp/codes"
[ -s "$tmp/codes" ] || fail "no SM_E* codes found in enum sm_error of include/sockmsg/frame.h"
while read -r code value; do
    word "$code" "error code $code"
    grep -Eq "^[ 	]*$code = $value,?\$" "$tmp/all" ||
        fail "error code $code: no page shows its value ($code = $value)"
done < "$tmp/codes"

sed -n 's/^#define[ 	][ 	]*\(SM_[A-Z0-9_]*\).*/\1/p' "$header" | sort -u |
    grep -v '^SM_API$' > "$tmp/macros" || true
while read -r m; do
    word "$m" "macro $m"
done < "$tmp/macros"

# .Fd lines must repeat the header's #define exactly.
grep '^\.Fd #define' "$tmp/all" | sort -u | while read -r fd; do
    line=${fd#.Fd }
    name=$(echo "$line" | awk '{ print $2 }')
    want=$(grep -E "^#define[ 	]+$name[ 	]" "$header" | sed 's|/\*.*||; s/[ 	]*$//' | tr -s ' \t' ' ')
    have=$(echo "$line" | tr -s ' \t' ' ')
    [ "$have" = "$want" ] || fail ".Fd line '$line' differs from $header: '$want'"
done

# Fields of every "typedef struct sm_x { ... } sm_x;", comments removed.
awk '
/^typedef struct sm_[a-z_]* \{/ { name = $3; body = ""; inside = 1; next }
inside && /^\}/ {
    while ((i = index(body, "/*")) > 0) {
        rest = substr(body, i + 2)
        j = index(rest, "*/")
        body = substr(body, 1, i - 1) " " (j ? substr(rest, j + 2) : "")
    }
    n = split(body, decl, ";")
    for (k = 1; k <= n; k++) {
        d = decl[k]
        if (d ~ /\(\*/) {
            sub(/^[^(]*\(\*[ \t]*/, "", d); sub(/[ \t]*\).*/, "", d)
        } else {
            sub(/\[.*/, "", d); sub(/[ \t\n]*$/, "", d); sub(/.*[^A-Za-z0-9_]/, "", d)
        }
        if (d != "") print name, d
    }
    inside = 0; next
}
inside { body = body " " $0 }
' "$header" > "$tmp/fields"
[ -s "$tmp/fields" ] || fail "no public struct fields found in $header"
while read -r st field; do
    word "$field" "field $field of $st"
done < "$tmp/fields"

# ---- 3. mandoc lint -------------------------------------------------------

for p in $pages; do
    is_link "$p" && continue
    rc=0
    out=$(mandoc -Tlint -W warning "$mandir/$p" 2>&1) || rc=$?
    [ -z "$out" ] && [ "$rc" -eq 0 ] ||
        fail "mandoc -Tlint -W warning $mandir/$p (exit $rc):
$out"
    # The title is the file name: SM_SEND 3 for sm_send.3.
    title=$(sed -n 's/^\.\(Dt\|TH\)[ 	][ 	]*"*\([^ 	"]*\)"*[ 	][ 	]*"*\([0-9]\).*/\2 \3/p' "$mandir/$p" | head -n 1)
    want="${p%.*} ${p##*.}"
    [ "$(echo "$title" | tr '[:lower:]' '[:upper:]')" = "$(echo "$want" | tr '[:lower:]' '[:upper:]')" ] ||
        fail "$p: title (.Dt or .TH) is '$title', expected '$want'"
done

# ---- 4. man -l, in the installed layout ------------------------------------

for p in $pages; do
    sec=${p##*.}
    mkdir -p "$tmp/tree/man$sec"
    cp "$mandir/$p" "$tmp/tree/man$sec/"
done
for p in $pages; do
    sec=${p##*.}
    rc=0
    (cd "$tmp/tree" && MANPAGER=cat PAGER=cat MANWIDTH=80 \
        man -l "man$sec/$p" > "$tmp/out" 2> "$tmp/err") || rc=$?
    [ "$rc" -eq 0 ] || fail "man -l $p exited $rc: $(cat "$tmp/err")"
    [ ! -s "$tmp/err" ] || fail "man -l $p: $(cat "$tmp/err")"
    [ -s "$tmp/out" ] || fail "man -l $p printed nothing"
    if is_link "$p"; then
        # mandoc resolves the link the same way.
        rc=0
        (cd "$tmp/tree" && mandoc -Tascii "man$sec/$p" > "$tmp/out" 2> "$tmp/err") || rc=$?
        [ "$rc" -eq 0 ] && [ ! -s "$tmp/err" ] && [ -s "$tmp/out" ] ||
            fail "mandoc $p (exit $rc): $(cat "$tmp/err")"
    fi
done

echo "man pages: ok ($count pages)"
