/*
 * uart-peer - runs an AVR firmware under simavr (libsimavr) with a peer on
 * its serial port: the bytes of the file INPUT go into UART0 as fast as
 * the UART takes them, and every byte the firmware sends on UART0 goes to
 * the file OUTPUT.  tests/mcu.sh uses it to talk frames to the Arduino
 * sketch.
 *
 *     uart-peer FIRMWARE.elf INPUT OUTPUT [QUIET_MS]
 *
 * The MCU is an ATmega328P at 16 MHz (an Arduino Uno).  The run ends when
 * the firmware sleeps with interrupts off or crashes, when all input is
 * in and nothing has come out for QUIET_MS (default 50) of simulated time,
 * or after 20 simulated seconds at most.  Exit status: 0, or 1 on a
 * crash, a time limit or a usage error.
 */
#include <avr_uart.h>
#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_irq.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define HZ 16000000u
#define LIMIT_CYCLES (20ull * HZ)
/* The UART drops what arrives before the firmware enables its receiver:
 * give setup() 20 ms first. */
#define START_CYCLES (HZ / 50)

static int fifo_full;
static avr_cycle_count_t last_output;
static FILE *output;

/* The UART's input FIFO filled up or has room again: flow control. */
static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *arg)
{
    (void)irq, (void)value, (void)arg;
    fifo_full = 1;
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *arg)
{
    (void)irq, (void)value, (void)arg;
    fifo_full = 0;
}

static void on_output(struct avr_irq_t *irq, uint32_t value, void *arg)
{
    (void)irq;
    avr_t *avr = arg;
    putc((int)(value & 0xff), output);
    last_output = avr->cycle;
}

/* Reads the whole input file into memory. */
static uint8_t *read_input(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *p = realloc(buf, cap *= 2);
            if (!p)
                free(buf);
            buf = p;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: uart-peer FIRMWARE.elf INPUT OUTPUT [QUIET_MS]\n");
        return 1;
    }
    avr_cycle_count_t quiet = (argc == 5 ? strtoull(argv[4], NULL, 10) : 50) * (HZ / 1000);
    size_t len, pos = 0;
    uint8_t *input = read_input(argv[2], &len);
    if (!input) {
        perror(argv[2]);
        return 1;
    }
    output = fopen(argv[3], "wb");
    if (!output) {
        perror(argv[3]);
        return 1;
    }
    elf_firmware_t fw = { 0 };
    if (elf_read_firmware(argv[1], &fw) != 0) {
        fprintf(stderr, "uart-peer: cannot read %s\n", argv[1]);
        return 1;
    }
    avr_t *avr = avr_make_mcu_by_name("atmega328p");
    if (!avr || avr_init(avr) != 0) {
        fprintf(stderr, "uart-peer: simavr has no atmega328p\n");
        return 1;
    }
    avr->log = LOG_ERROR;
    avr_load_firmware(avr, &fw);
    avr->frequency = HZ;

    /* Bytes go to us, not to simavr's console printer. */
    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uint32_t uart = AVR_IOCTL_UART_GETIRQ('0');
    avr_irq_register_notify(avr_io_getirq(avr, uart, UART_IRQ_OUTPUT), on_output, avr);
    avr_irq_register_notify(avr_io_getirq(avr, uart, UART_IRQ_OUT_XON), on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, uart, UART_IRQ_OUT_XOFF), on_xoff, NULL);
    avr_irq_t *rx = avr_io_getirq(avr, uart, UART_IRQ_INPUT);

    int state = cpu_Running;
    while (state != cpu_Done && state != cpu_Crashed) {
        if (pos < len && !fifo_full && avr->cycle >= START_CYCLES) {
            avr_raise_irq(rx, input[pos++]);
            if (pos == len)
                last_output = avr->cycle; /* the quiet time starts now */
        }
        state = avr_run(avr);
        if (pos == len && avr->cycle - last_output > quiet)
            break;
        if (avr->cycle > LIMIT_CYCLES) {
            fprintf(stderr, "uart-peer: still running after %llu cycles\n",
                    (unsigned long long)avr->cycle);
            return 1;
        }
    }
    free(input);
    if (fclose(output) != 0) {
        perror(argv[3]);
        return 1;
    }
    if (state == cpu_Crashed) {
        fprintf(stderr, "uart-peer: the firmware crashed\n");
        return 1;
    }
    return 0;
}
