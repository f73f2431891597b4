#!/bin/sh
# The Wireshark dissector (tools/wireshark/sockmsg.lua) under tshark, on
# capture files made here by tests/wireshark/capture.py (see there for
# each packet):
#
#   sh tests/wireshark.sh BUILD_DIR    (make check passes it; unused)
#
# 1. streams.pcap on the default port 29876: the length, payload and text
#    fields of every frame, exactly: one frame per segment in both
#    directions, four frames in one segment (two of them empty), frames
#    split inside the header and the payload and ending where the next
#    begins, a 70000-byte frame over 51 segments (payload compared byte
#    for byte); a header of ff ff ff ff flagged (sockmsg.too_big), the
#    data after it in that direction unframed (sockmsg.after_too_big),
#    the other direction still decoded; no Lua error anywhere
# 2. the max_frame preference: with -o sockmsg.max_frame:3, TEST's header
#    (4) is flagged
# 3. port40000.pcap: not decoded by default; decoded with the port
#    preference (-o sockmsg.port:40000) and with Decode As
#    (-d tcp.port==40000,sockmsg)
#
# Skipped with a note when tshark is not installed (make deps installs it),
# or failed if SM_REQUIRE_TOOLS is set (as .ci/run does).  tshark runs with
# an empty configuration folder of its own, so a user's preferences do
# not change what it decodes.
set -eu
cd "$(dirname "$0")/.."
lua=tools/wireshark/sockmsg.lua
limit=60 # seconds any one tshark run may take

fail() {
    printf "wireshark dissector: FAIL: %s\n" "$*" >&2
    exit 1
}

if ! command -v tshark >/dev/null 2>&1; then
    echo "wireshark dissector: skipped: tshark is not installed (make deps installs it)"
    [ -z "${SM_REQUIRE_TOOLS:-}" ] || fail "SM_REQUIRE_TOOLS is set: not skipping"
    exit 0
fi
tshark -v 2>/dev/null | grep -q 'with Lua' || fail "this tshark is built without Lua"
command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (make deps)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-wireshark.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
mkdir "$tmp/config"
WIRESHARK_CONFIG_DIR=$tmp/config
export WIRESHARK_CONFIG_DIR

python3 tests/wireshark/capture.py "$tmp" || fail "tests/wireshark/capture.py"

# decode NAME PCAP TSHARK-ARGS...: tshark with the dissector into
# $tmp/NAME.out; any error (or a Lua error in its output) fails.
decode() {
    name=$1
    pcap=$2
    shift 2
    timeout "$limit" tshark -n -r "$tmp/$pcap" -X "lua_script:$lua" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" ||
        { cat "$tmp/$name.err" >&2; fail "$name: tshark failed"; }
    if grep -v '^Running as user' "$tmp/$name.err" | grep -q .; then
        cat "$tmp/$name.err" >&2
        fail "$name: tshark wrote errors"
    fi
    ! grep -qi 'lua error' "$tmp/$name.out" || { grep -i 'lua error' "$tmp/$name.out" >&2; fail "$name: Lua error"; }
}
# expect NAME: $tmp/NAME.out must be exactly standard input.
expect() {
    cat >"$tmp/$1.want"
    diff -u "$tmp/$1.want" "$tmp/$1.out" | cut -c1-200 >&2 || true
    cmp -s "$tmp/$1.want" "$tmp/$1.out" || fail "$1: tshark decoded something else (above: - expected, + got)"
}
fields="-T fields -E occurrence=a -E aggregator=, -E separator=;"

# 1. Every decoded frame of streams.pcap, then its details for Lua errors.
# shellcheck disable=SC2086
decode fields streams.pcap -Y sockmsg $fields -e frame.number -e tcp.srcport -e sockmsg.length \
    -e sockmsg.text -e sockmsg.payload -e sockmsg.unframed
# (the 70000-byte payload, when it is exactly big.hex, is written BIG)
awk -F';' -v OFS=';' 'NR == FNR { big = $0; next } $5 == big { $5 = "BIG" } { print }' \
    "$tmp/big.hex" "$tmp/fields.out" >"$tmp/fields.tmp" && mv "$tmp/fields.tmp" "$tmp/fields.out"
expect fields <<'EOF'
4;40001;4;TEST;54455354;
5;29876;4;TEST;54455354;
6;40001;2,0,3,0;hi,abc;6869,616263;
9;40001;5;hello;68656c6c6f;
10;40001;1,2;x,yz;78,797a;
61;40001;70000;;BIG;
62;40001;4294967295;;;6a756e6b
63;40001;;;;0000000454455354
64;29876;2;ok;6f6b;
EOF
decode too-big streams.pcap -Y sockmsg.too_big -T fields -e frame.number
expect too-big <<'EOF'
62
EOF
decode after streams.pcap -Y sockmsg.after_too_big -T fields -e frame.number
expect after <<'EOF'
63
EOF
decode details streams.pcap -V
grep -q 'Length 4294967295 is over the maximum frame 16777216' "$tmp/details.out" ||
    fail "details: no expert info for the oversized header"
grep -q '51 Reassembled TCP Segments (70004 bytes)' "$tmp/details.out" ||
    fail "details: the 70000-byte frame was not reassembled from 51 segments"

# 2. The max_frame preference.
# shellcheck disable=SC2086
decode max-frame streams.pcap -o sockmsg.max_frame:3 -Y 'sockmsg && frame.number <= 6' $fields \
    -e frame.number -e sockmsg.length -e _ws.col.Info
expect max-frame <<'EOF'
4;4;Oversized header: len=4, maximum 3
5;4;Oversized header: len=4, maximum 3
6;;Unframed data after an oversized header (frame 4)
EOF

# 3. Another port: the preference, and Decode As.
# shellcheck disable=SC2086
decode port-default port40000.pcap -Y sockmsg $fields -e frame.number
expect port-default </dev/null
# shellcheck disable=SC2086
decode port-pref port40000.pcap -o sockmsg.port:40000 -Y sockmsg $fields -e frame.number -e sockmsg.text
expect port-pref <<'EOF'
4;TEST
EOF
# shellcheck disable=SC2086
decode decode-as port40000.pcap -d tcp.port==40000,sockmsg -Y sockmsg $fields -e frame.number -e sockmsg.text
expect decode-as <<'EOF'
4;TEST
EOF

echo "wireshark dissector: ok (64 + 4 packets: split, coalesced, 70000 bytes reassembled, oversized," \
    "preferences, Decode As)"
