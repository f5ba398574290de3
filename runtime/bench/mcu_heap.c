/*
 * mcu_heap.c -- the heap the firmware (mcu/firmware.c) used, for `make mcu-memory`: linked beside it with
 * -Wl,--wrap=main, it runs the firmware's main() and prints the heap's high-water mark after it, newlib's break
 * (sbrk(0); newlib-nano's malloc never gives memory back) above the heap's start (the linker script's `end`), and the
 * heap reserved (to __heap_limit). The firmware's own code is unchanged; only this wrapper is added to the build
 * whose output the report reads the heap from (the stack's peak is read from the build without it).
 */
#include <stddef.h>
#include <stdio.h>

extern char end, __heap_limit;
void *sbrk(ptrdiff_t increment); /* newlib's (unistd.h declares it outside strict C11 only) */
int __real_main(void);
int __wrap_main(void);

int __wrap_main(void)
{
    int status = __real_main();
    printf("heap %lu of %lu B\n", (unsigned long)((char *)sbrk(0) - &end), (unsigned long)(&__heap_limit - &end));
    return status;
}
