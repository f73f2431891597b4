#!/bin/sh
# The codec on microcontrollers (built by `make mcu`, which make check runs
# first): sizes, the self-test firmware under simavr, and the Arduino echo
# sketch under simavr with frames on its serial port.
#
#   sh tests/mcu.sh BUILD_DIR
#
# 1. The codec (mcu/codec.c: every function of include/sockmsg/frame.h)
#    compiled -ffreestanding for the ATmega328P and a Cortex-M0+: prints
#    flash, static RAM and stack; fails if it calls a library function
#    (only the compiler's helpers are allowed), uses static RAM, or takes
#    1 KiB of flash or more on the AVR.
# 2. mcu/selftest.c on a simulated ATmega328P (the simavr program): its
#    UART output must be mcu/selftest.expected, line for line.
# 3. The sketch examples/arduino/sockmsg_echo (built over Debian's Arduino
#    core) under tests/mcu/uart_peer.c: frames of 0 to 64 bytes sent back
#    to back must come back byte for byte; after a header over its 64-byte
#    maximum it must answer nothing more.
#
# A part whose tools are missing is skipped with a note (make deps installs
# them all), or fails if SM_REQUIRE_TOOLS is set (as .ci/run does).  Every
# simulation is bounded in simulated and in real time.
set -eu

build=${1:?usage: sh tests/mcu.sh BUILD_DIR}
cd "$(dirname "$0")/.."
mcu=$build/mcu
limit=60 # seconds any one simulation may run

fail() {
    printf "mcu: FAIL: %s\n" "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-mcu.XXXXXX") || fail "mktemp -d"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
done_parts=
skipped=

# sizes OBJECT SIZE_TOOL: "text data bss" of an object file.
sizes() {
    "$2" "$1" | awk 'NR == 2 { print $1, $2, $3 }'
}

# codec NAME BASE SIZE_TOOL NM_TOOL: checks and prints the codec's cost.
# BASE.o is the compiled codec; BASE.elf the same linked with libgcc only.
codec() {
    [ -f "$2.elf" ] || fail "no $2.elf (build it: make BUILD=$build mcu)"
    # Only the compiler's own helpers (libgcc: __bswapsi2 and the like).
    undefined=$("$4" -u "$2.o" | awk '$2 !~ /^__/ { print $2 }')
    [ -z "$undefined" ] || fail "the codec for $1 calls a library: $undefined"
    read -r text data bss <<SIZES
$(sizes "$2.elf" "$3")
SIZES
    if [ "$data" -ne 0 ] || [ "$bss" -ne 0 ]; then
        fail "the codec for $1 uses static RAM: data $data, bss $bss"
    fi
    stack=$(awk '/sm_mcu_decode/ { print $2 }' "$2.su")
    echo "mcu: codec on $1: $text bytes of flash, 0 of static RAM," \
        "$stack bytes of stack in sm_frame_decode"
}

# ---- 1. the codec's size ----
if have avr-gcc; then
    codec "ATmega328P (avr-gcc -Os)" "$mcu/codec-avr" avr-size avr-nm
    flash=$(sizes "$mcu/codec-avr.elf" avr-size | cut -d' ' -f1)
    [ "$flash" -lt 1024 ] || fail "the codec takes $flash bytes of AVR flash; the budget is 1 KiB"
    done_parts="$done_parts avr-size"
else
    skipped="$skipped avr (avr-gcc not installed)"
fi
if have arm-none-eabi-gcc; then
    codec "Cortex-M0+ (arm-none-eabi-gcc -Os -mthumb)" "$mcu/codec-arm" \
        arm-none-eabi-size arm-none-eabi-nm
    done_parts="$done_parts arm-size"
else
    skipped="$skipped cortex-m (arm-none-eabi-gcc not installed)"
fi

# ---- 2. the self-test firmware under simavr ----
if have avr-gcc && have simavr; then
    [ -f "$mcu/selftest.elf" ] || fail "no $mcu/selftest.elf (make BUILD=$build mcu)"
    avr-size -C --mcu=atmega328p "$mcu/selftest.elf" |
        awk '/^(Program|Data):/ { printf "mcu: selftest firmware %s %s bytes\n", $1, $2 }'
    st=0
    timeout "$limit" simavr -m atmega328p -f 16000000 "$mcu/selftest.elf" \
        >"$tmp/simavr.out" 2>"$tmp/simavr.err" || st=$?
    [ "$st" -eq 0 ] || { cat "$tmp/simavr.err" >&2; fail "simavr exited with status $st"; }
    # simavr prints each UART line in colour, with the newline shown as '.'.
    sed 's/\x1b\[[0-9;]*m//g; /^$/d; s/\.$//' "$tmp/simavr.err" >"$tmp/selftest.out"
    diff -u mcu/selftest.expected "$tmp/selftest.out" >&2 ||
        fail "the self-test firmware's output differs from mcu/selftest.expected"
    echo "mcu: selftest under simavr: $(tail -n 1 "$tmp/selftest.out")"
    done_parts="$done_parts selftest"
else
    skipped="$skipped selftest (avr-gcc or simavr not installed)"
fi

# ---- 3. the Arduino sketch, talking frames under simavr ----
if [ -f "$mcu/sockmsg_echo.elf" ] && [ -x "$mcu/uart-peer" ]; then
    avr-size -C --mcu=atmega328p "$mcu/sockmsg_echo.elf" |
        awk '/^(Program|Data):/ { printf "mcu: sketch sockmsg_echo %s %s bytes\n", $1, $2 }'
    # Input: "hello", an empty message, 64 bytes, 200 frames of 0 to 64
    # bytes, then a 65-byte frame (over the maximum) and one more frame.
    # Expected: the echo of everything before the 65-byte frame.
    python3 - "$tmp/in" "$tmp/want" <<'PY' || fail "python3 could not write the sketch's input"
import struct, sys
def frame(b):
    return struct.pack("!I", len(b)) + b
msgs = [b"hello", b"", bytes(range(64))]
msgs += [bytes((i + k) % 256 for k in range(i * 7 % 65)) for i in range(200)]
echoed = b"".join(frame(m) for m in msgs)
with open(sys.argv[1], "wb") as f:
    f.write(echoed + frame(b"x" * 65) + frame(b"after"))
with open(sys.argv[2], "wb") as f:
    f.write(echoed)
PY
    st=0
    timeout "$limit" "$mcu/uart-peer" "$mcu/sockmsg_echo.elf" "$tmp/in" "$tmp/got" 200 \
        >"$tmp/peer.out" 2>"$tmp/peer.err" || st=$?
    [ "$st" -eq 0 ] || { cat "$tmp/peer.err" >&2; fail "uart-peer exited with status $st"; }
    cmp "$tmp/want" "$tmp/got" >&2 ||
        fail "the sketch answered $(wc -c <"$tmp/got") bytes, expected the $(wc -c <"$tmp/want") bytes of 203 echoes"
    echo "mcu: sketch under simavr: 203 messages echoed, silent after a 65-byte header"
    done_parts="$done_parts sketch"
else
    skipped="$skipped sketch (needs arduino-core-avr and libsimavr-dev)"
fi

if [ -n "$skipped" ]; then
    echo "mcu: skipped:$skipped (make deps installs what they need)"
    [ -z "${SM_REQUIRE_TOOLS:-}" ] || fail "SM_REQUIRE_TOOLS is set: not skipping"
fi
[ -n "$done_parts" ] || { echo "mcu: nothing to run here"; exit 0; }
echo "mcu: ok ($(echo "$done_parts" | wc -w) parts)"
