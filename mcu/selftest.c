/*
 * Self-test firmware for the ATmega328P (Arduino Uno): runs the codec over
 * a fixed stream fed in odd-sized chunks and prints what it decoded on the
 * UART, then sleeps with interrupts off, which ends a simavr run.
 * tests/mcu.sh runs it under simavr and compares the output with
 * mcu/selftest.expected.
 *
 * Built with -ffreestanding: the codec must not need more.  Only the UART
 * code uses avr-libc (its register names).
 */
#include <sockmsg/frame.h>

#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

static void uart_init(void)
{
    UBRR0 = 8; /* 115200 baud at 16 MHz; simavr takes any rate */
    UCSR0B = (uint8_t)(1 << TXEN0);
    UCSR0C = (uint8_t)(1 << UCSZ01 | 1 << UCSZ00); /* 8N1 */
}

static void put_char(char c)
{
    while (!(UCSR0A & (1 << UDRE0)))
        ;
    UDR0 = (uint8_t)c;
}

static void put_str(const char *s)
{
    while (*s)
        put_char(*s++);
}

/* Decimal, for lengths up to 2^32-1 (no printf: it would dwarf the codec). */
static void put_u32(uint32_t v)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0)
        put_char(digits[--n]);
}

static void put_bytes(const uint8_t *p, uint32_t len)
{
    put_char('\'');
    for (uint32_t i = 0; i < len; i++)
        put_char((char)p[i]);
    put_char('\'');
}

/* "hello", an empty message, the alphabet, "avr", then a header that
 * announces 1024 bytes (more than MAX_FRAME) and bytes that must never be
 * consumed.  (\32 is 26.) */
static const char stream_text[] = "\0\0\0\5"
                                  "hello"
                                  "\0\0\0\0"
                                  "\0\0\0\32"
                                  "abcdefghijklmnopqrstuvwxyz"
                                  "\0\0\0\3"
                                  "avr"
                                  "\0\0\4\0"
                                  "junk";
static const uint8_t *const stream = (const uint8_t *)stream_text;
#define STREAM_LEN (sizeof stream_text - 1) /* without the string's NUL */

#define MAX_FRAME 32

static int failed;

static void fail(const char *what)
{
    put_str("FAIL: ");
    put_str(what);
    put_str("\n");
    failed = 1;
}

/* Feeds the stream in chunks of 1, 3, 7, 2, 5, 11, 1, 3, ... bytes. */
static void decode_stream(void)
{
    static const uint8_t chunks[] = { 1, 3, 7, 2, 5, 11 };
    static uint8_t buf[MAX_FRAME];
    sm_frame_decoder d;
    sm_frame_decoder_init(&d, MAX_FRAME, buf, sizeof buf);
    size_t pos = 0, messages = 0;
    int st = SM_FRAME_MORE;
    for (uint8_t c = 0; pos < STREAM_LEN && st >= 0; c = (uint8_t)((c + 1) % sizeof chunks)) {
        size_t n = chunks[c];
        if (n > STREAM_LEN - pos)
            n = STREAM_LEN - pos;
        const uint8_t *in = stream + pos;
        while (n > 0) {
            sm_frame_result r;
            st = sm_frame_decode(&d, in, n, &r);
            in += r.used;
            n -= r.used;
            pos += r.used;
            if (st == SM_FRAME_MSG) {
                put_str("message ");
                put_u32(++messages);
                put_str(": ");
                put_u32(r.len);
                put_str(r.msg == buf ? " bytes, collected " : " bytes, in place ");
                put_bytes(r.msg, r.len);
                put_str("\n");
            } else if (st == SM_ETOOBIG) {
                put_str("too big: header announces ");
                put_u32(r.len);
                put_str(" bytes, max ");
                put_u32(MAX_FRAME);
                put_str("\n");
                break;
            } else if (st != SM_FRAME_MORE) {
                fail("unexpected status");
                return;
            }
        }
    }
    /* The refused header was consumed, the bytes after it were not, and
     * the decoder stays stopped. */
    sm_frame_result r;
    if (pos != STREAM_LEN - 4)
        fail("stopped at the wrong byte");
    if (sm_frame_decode(&d, stream + pos, 4, &r) != SM_ETOOBIG || r.used != 0)
        fail("decoded past a refused header");
    if (messages != 4)
        fail("wrong number of messages");
}

/* A decoder with no buffer asks for room when a frame is split. */
static void ask_for_room(void)
{
    static const uint8_t part1[] = { 0, 0, 0, 6, 'a', 'b', 'c' };
    static const uint8_t part2[] = { 'd', 'e', 'f' };
    static uint8_t buf[8];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_decoder_init(&d, MAX_FRAME, NULL, 0);
    if (sm_frame_decode(&d, part1, sizeof part1, &r) != SM_FRAME_ROOM || r.used != 4) {
        fail("no SM_FRAME_ROOM");
        return;
    }
    put_str("room: announced ");
    put_u32(r.len);
    put_str(", need ");
    put_u32(r.need);
    put_str("\n");
    sm_frame_decoder_set_buffer(&d, buf, sizeof buf);
    if (sm_frame_decode(&d, part1 + 4, 3, &r) != SM_FRAME_MORE || r.used != 3 ||
        !sm_frame_decoder_in_frame(&d) ||
        sm_frame_decode(&d, part2, sizeof part2, &r) != SM_FRAME_MSG) {
        fail("split frame not collected");
        return;
    }
    put_str("room: then ");
    put_bytes(r.msg, r.len);
    put_str("\n");
    if (sm_frame_decoder_in_frame(&d))
        fail("still in a frame after the message");
}

int main(void)
{
    uart_init();
    put_str("sockmsg codec selftest\n");
    decode_stream();
    ask_for_room();
    put_str(failed ? "selftest: FAIL\n" : "selftest: ok\n");
    /* Sleeping with interrupts off ends the simulation. */
    cli();
    sleep_mode();
    for (;;)
        ;
}
