/*
 * The codec on its own, for measuring what it costs on a microcontroller:
 * its functions are static inline, so this file gives each one an external
 * body that the compiler must emit.  `make mcu` builds it for the
 * ATmega328P and a Cortex-M0+ and prints the sizes.
 */
#include <sockmsg/frame.h>

void sm_mcu_header_put(uint8_t out[SM_FRAME_HEADER_LEN], uint32_t len);
uint32_t sm_mcu_header_get(const uint8_t in[SM_FRAME_HEADER_LEN]);
void sm_mcu_init(sm_frame_decoder *d, uint32_t max_frame, uint8_t *buf, size_t cap);
void sm_mcu_set_buffer(sm_frame_decoder *d, uint8_t *buf, size_t cap);
int sm_mcu_in_frame(const sm_frame_decoder *d);
int sm_mcu_decode(sm_frame_decoder *d, const uint8_t *in, size_t n, sm_frame_result *r);

void sm_mcu_header_put(uint8_t out[SM_FRAME_HEADER_LEN], uint32_t len)
{
    sm_frame_header_put(out, len);
}

uint32_t sm_mcu_header_get(const uint8_t in[SM_FRAME_HEADER_LEN])
{
    return sm_frame_header_get(in);
}

void sm_mcu_init(sm_frame_decoder *d, uint32_t max_frame, uint8_t *buf, size_t cap)
{
    sm_frame_decoder_init(d, max_frame, buf, cap);
}

void sm_mcu_set_buffer(sm_frame_decoder *d, uint8_t *buf, size_t cap)
{
    sm_frame_decoder_set_buffer(d, buf, cap);
}

int sm_mcu_in_frame(const sm_frame_decoder *d)
{
    return sm_frame_decoder_in_frame(d);
}

int sm_mcu_decode(sm_frame_decoder *d, const uint8_t *in, size_t n, sm_frame_result *r)
{
    return sm_frame_decode(d, in, n, r);
}
