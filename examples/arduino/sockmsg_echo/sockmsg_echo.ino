/*
 * sockmsg_echo - an Arduino sketch that speaks libsockmsg's frames on the
 * serial port and answers every message with the same message.
 *
 * A frame is a 4-byte big-endian length N, then N bytes (docs/PROTOCOL.md),
 * so a PC program using libsockmsg's format over the serial line - or
 * examples/python/sockmsg.py with pyserial in place of a socket - can talk
 * to it.  Serial at 115200 baud.
 *
 * It uses nothing but the freestanding codec, include/sockmsg/frame.h:
 * copy that one file into this sketch's folder, next to this .ino, then
 * build and upload as usual.  (make mcu builds this sketch over Debian's
 * Arduino AVR core with -I include/sockmsg instead of a copy, and
 * tests/mcu.sh runs it under simavr.)
 *
 * Memory: messages up to MAX_MSG bytes.  A frame that lies whole in one
 * read is answered straight from the read buffer; only a message split
 * across reads is collected in msg_buf.  A header announcing more than
 * MAX_MSG means the other side does not speak this protocol, or bytes were
 * lost: there is no way to find the next frame, so the sketch stops
 * answering and lights the LED until it is reset.
 */
#include "frame.h"

#define MAX_MSG 64 /* longest message accepted: an Uno has 2 KiB of RAM */

static uint8_t msg_buf[MAX_MSG];
static sm_frame_decoder decoder;
static bool broken;

static void send_msg(const uint8_t *msg, uint32_t len)
{
    uint8_t header[SM_FRAME_HEADER_LEN];
    sm_frame_header_put(header, len);
    Serial.write(header, sizeof header);
    Serial.write(msg, len);
}

void setup()
{
    Serial.begin(115200);
    pinMode(LED_BUILTIN, OUTPUT);
    sm_frame_decoder_init(&decoder, MAX_MSG, msg_buf, sizeof msg_buf);
}

void loop()
{
    /* Whatever has arrived, up to a chunk: frames may be split anywhere. */
    uint8_t chunk[32];
    size_t n = 0;
    while (n < sizeof chunk && Serial.available() > 0)
        chunk[n++] = (uint8_t)Serial.read();
    if (broken)
        return; /* drop everything until reset */

    const uint8_t *in = chunk;
    while (n > 0) {
        sm_frame_result r;
        int st = sm_frame_decode(&decoder, in, n, &r);
        if (st < 0) { /* SM_ETOOBIG: a header over MAX_MSG */
            broken = true;
            digitalWrite(LED_BUILTIN, HIGH);
            return;
        }
        if (st == SM_FRAME_MSG)
            send_msg(r.msg, r.len); /* the echo */
        in += r.used;
        n -= r.used;
    }
}
