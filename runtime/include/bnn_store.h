/*
 * bnn_store.h -- a state that survives a power cut at any byte: two slots written alternately, the newest complete one
 * loaded. C11, no allocation, no library call: the caller provides the storage (a file on Linux, a flash region on a
 * microcontroller) as three functions.
 *
 * A slot is a 32-byte header and the payload after it. The header (little-endian): "BNNSLOT1", a uint64 sequence
 * number, the payload's uint64 size, its CRC-32, and a CRC-32 of the header's first 28 bytes. A save goes to the
 * slot that does not hold the newest complete state, payload first, then the header: until the header's last byte
 * is written the slot is not complete (its old header's payload CRC, or the new header's own CRC, fails), so a cut
 * anywhere leaves the previous state loadable; flush() between the two, and after, makes the order hold on a
 * cached medium. A load checks both slots (both CRCs, the size) and takes the highest sequence.
 *
 *     bnn_storage st = {ctx, slot_bytes, my_read, my_write, my_flush};
 *     bnn_state_save(&st, blob, blob_size, &seq, &err);           // seq: the new state's sequence number
 *     bnn_state_load(&st, buf, sizeof buf, &size, &seq, &err);    // BNN_ERR_NO_STATE: nothing saved yet
 */
#ifndef BNN_STORE_H
#define BNN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "bnn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BNN_SLOT_HEADER_BYTES 32

/* Two slots of slot_bytes bytes each (header included). read and write return 0 on success, anything else on a
 * failure (the save or load then fails with BNN_ERR_STORAGE and leaves what was there); flush may be NULL. */
typedef struct {
    void *ctx;
    size_t slot_bytes;
    int (*read)(void *ctx, unsigned slot, size_t offset, void *dst, size_t len);
    int (*write)(void *ctx, unsigned slot, size_t offset, const void *src, size_t len);
    int (*flush)(void *ctx, unsigned slot);
} bnn_storage;

/* Save size bytes as the newest state; *sequence (may be NULL) gets its sequence number. A payload larger than a
 * slot holds is refused (BNN_ERR_ARGUMENT) before anything is written. */
bnn_status bnn_state_save(const bnn_storage *storage, const void *payload, size_t size, uint64_t *sequence,
                          bnn_error *err);

/* Load the newest complete state into payload (capacity bytes); *size and *sequence (may be NULL) get its size and
 * number. BNN_ERR_NO_STATE when neither slot holds a complete state; BNN_ERR_ARGUMENT when it does not fit. */
bnn_status bnn_state_load(const bnn_storage *storage, void *payload, size_t capacity, size_t *size,
                          uint64_t *sequence, bnn_error *err);

#ifdef __cplusplus
}
#endif

#endif /* BNN_STORE_H */
