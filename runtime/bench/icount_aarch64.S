/*
 * icount_aarch64.S -- the counter's self-check (bench/icount_aarch64.sh): a static program without libc whose
 * instruction count is known exactly, 1 + 3 LOOPS + 3 (the ldr, LOOPS times add/subs/b.ne, then mov/mov/svc exit).
 *
 *   aarch64-linux-gnu-gcc -nostdlib -static -DLOOPS=1000 icount_aarch64.S -o check
 */
#ifndef LOOPS
#define LOOPS 1000
#endif
    .global _start
    .text
_start:
    ldr  x1, =LOOPS
1:  add  x9, x9, #1
    subs x1, x1, #1
    b.ne 1b
    mov  x0, #0
    mov  x8, #93          // exit
    svc  #0
