/*
 * startup.c -- reset for the firmware on a Cortex-M: the vector table (the stack's top, the reset handler), .data
 * copied from flash, .bss zeroed, the FPU enabled, the stack painted (for its peak, mcu_stack_peak), newlib's
 * semihosting set up, then main(); its status goes back to the host (semihosting's exit). And newlib's _sbrk, for
 * malloc (stdio's buffers), held to the linker script's heap (end to __heap_limit): librdimon's own compares the
 * break with the stack pointer only (its __heap_limit is a variable left at its "unknown" value), so a heap beyond
 * HEAP_SIZE grew into the stack's reserve unnoticed; here malloc fails instead (ENOMEM).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "mcu.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, __stack_bottom, __stack_top;
extern char end, __heap_limit; /* the heap: mps2.ld's .heap */
extern int main(void);
extern void initialise_monitor_handles(void);
extern void exit(int);

void reset_handler(void);

static void fault(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&__stack_top, reset_handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault,
    fault, 0, fault, fault};

#define PAINT 0xA5A5A5A5u

void reset_handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    /* the stack below this frame, painted: the deepest word overwritten later is the stack's peak */
    uint32_t *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (dst = &__stack_bottom; dst < sp - 16;) *dst++ = PAINT;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10 and CP11 (the FPU) full access */
    __asm volatile("dsb\n\tisb");
#endif
    initialise_monitor_handles();
    exit(main());
}

size_t mcu_stack_peak(void)
{
    const uint32_t *p = &__stack_bottom;
    while (p < &__stack_top && *p == PAINT) p++;
    return (size_t)((const char *)&__stack_top - (const char *)p);
}

size_t mcu_stack_size(void) { return (size_t)((const char *)&__stack_top - (const char *)&__stack_bottom); }

static char *heap_break, *heap_peak; /* the break (end + what malloc holds) and its highest */

void *_sbrk(ptrdiff_t increment);

void *_sbrk(ptrdiff_t increment)
{
    if (!heap_break) heap_break = &end;
    if (increment > &__heap_limit - heap_break || increment < &end - heap_break) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *old = heap_break;
    heap_break += increment;
    if (heap_break > heap_peak) heap_peak = heap_break;
    return old;
}

size_t mcu_heap_peak(void) { return heap_peak ? (size_t)(heap_peak - &end) : 0; }

size_t mcu_heap_size(void) { return (size_t)(&__heap_limit - &end); }
