/*
 * icount_cortex_m_check.S -- the counter's self-check on a Cortex-M (bench/icount_cortex_m.sh): a bare-metal
 * program without libc whose instruction count is known exactly, 1 + 3 LOOPS + 3 (the loop count's load, LOOPS times
 * adds/subs/bne, then movs/ldr/bkpt: semihosting's SYS_EXIT, ADP_Stopped_ApplicationExit). Its vector table (the
 * stack's top, the reset handler) at address 0, as QEMU's MPS2 boards boot; Thumb-2 instructions of ARMv7-M, for the
 * M4 and the M7 alike.
 *
 *   arm-none-eabi-gcc -mthumb -mcpu=cortex-m4 -nostdlib -Wl,-Ttext=0 -Wl,-e,reset -DLOOPS=1000 icount_cortex_m_check.S
 */
#ifndef LOOPS
#define LOOPS 1000
#endif
    .syntax unified
    .thumb
    .text
    .global reset
vectors:
    .word 0x20001000            @ the stack's top (unused)
    .word reset                 @ a Thumb function: the linker sets bit 0
    .type reset, %function
    .thumb_func
reset:
    ldr   r1, =LOOPS
1:  adds  r2, r2, #1
    subs  r1, r1, #1
    bne   1b
    movs  r0, #0x18             @ SYS_EXIT
    ldr   r1, =0x20026          @ ADP_Stopped_ApplicationExit: status 0
    bkpt  0xab
    .ltorg
