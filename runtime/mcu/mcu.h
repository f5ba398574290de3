/* mcu.h -- what startup.c gives the firmware. */
#ifndef BNN_MCU_H
#define BNN_MCU_H

#include <stddef.h>

size_t mcu_stack_peak(void); /* the most stack used since reset (bytes), from the painted region */
size_t mcu_stack_size(void);
size_t mcu_heap_peak(void); /* the most heap malloc held since reset (bytes), from the break's highest */
size_t mcu_heap_size(void);

#endif
