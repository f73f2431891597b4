/* smcat: what arrived, on stdout (see smcat.h): text, raw, framed, hex. */
#include "smcat.h"

#include <stdio.h>

/* Printable ASCII stays, backslash doubles, everything else is \xNN, so
 * no message can move the cursor or change the terminal's state. */
static void write_text(FILE *f, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\\')
            fputs("\\\\", f);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            putc(p[i], f);
        else
            fprintf(f, "\\x%02x", p[i]);
    }
    putc('\n', f);
}

/* hexdump -C's layout, after a line giving the message's number and length. */
static void write_hex(FILE *f, const uint8_t *p, size_t len, uint64_t number)
{
    fprintf(f, "message %llu: %zu bytes\n", (unsigned long long)number, len);
    for (size_t off = 0; off < len; off += 16) {
        fprintf(f, "%08zx  ", off);
        for (size_t i = 0; i < 16; i++) {
            if (off + i < len)
                fprintf(f, "%02x ", p[off + i]);
            else
                fputs("   ", f);
            if (i == 7)
                putc(' ', f);
        }
        fputs(" |", f);
        for (size_t i = 0; i < 16 && off + i < len; i++)
            putc(p[off + i] >= 0x20 && p[off + i] < 0x7f ? p[off + i] : '.', f);
        fputs("|\n", f);
    }
}

static void write_framed(FILE *f, const uint8_t *p, size_t len)
{
    uint8_t h[SM_FRAME_HEADER_LEN];
    sm_frame_header_put(h, (uint32_t)len);
    fwrite(h, 1, sizeof h, f);
    fwrite(p, 1, len, f);
}

void write_message(enum out_format fmt, const void *msg, size_t len, uint64_t number)
{
    switch (fmt) {
    case OUT_RAW: fwrite(msg, 1, len, stdout); break;
    case OUT_FRAMED: write_framed(stdout, msg, len); break;
    case OUT_HEX: write_hex(stdout, msg, len, number); break;
    default: write_text(stdout, msg, len); break;
    }
}
