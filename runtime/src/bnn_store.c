/* bnn_store.c -- the two-slot state storage of bnn_store.h. */
#include "bnn_store.h"

#include "bnn_internal.h"

static const unsigned char SLOT_MAGIC[8] = {'B', 'N', 'N', 'S', 'L', 'O', 'T', '1'};

typedef struct {
    int valid; /* the header's magic and CRC hold, and its size fits the slot */
    uint64_t sequence, size;
    uint32_t payload_crc;
} slot_header;

static int same_magic(const unsigned char *h)
{
    for (int i = 0; i < 8; i++)
        if (h[i] != SLOT_MAGIC[i]) return 0;
    return 1;
}

static int read_header(const bnn_storage *st, unsigned slot, slot_header *out)
{
    unsigned char h[BNN_SLOT_HEADER_BYTES];
    out->valid = 0;
    if (st->read(st->ctx, slot, 0, h, sizeof h)) return -1;
    if (!same_magic(h) || bnn_crc32(0, h, 28) != bnn_rd32(h + 28)) return 0;
    out->sequence = bnn_rd64(h + 8), out->size = bnn_rd64(h + 16), out->payload_crc = bnn_rd32(h + 24);
    out->valid = out->size <= st->slot_bytes - BNN_SLOT_HEADER_BYTES;
    return 0;
}

/* CRC-32 of the slot's first n payload bytes, read in pieces into buf (n <= the slot's payload capacity). */
static int payload_crc(const bnn_storage *st, unsigned slot, uint64_t n, unsigned char *buf, size_t cap, uint32_t *crc)
{
    uint32_t c = 0;
    for (uint64_t at = 0; at < n;) {
        size_t piece = n - at < cap ? (size_t)(n - at) : cap;
        if (st->read(st->ctx, slot, BNN_SLOT_HEADER_BYTES + (size_t)at, buf, piece)) return -1;
        c = bnn_crc32(c, buf, piece);
        at += piece;
    }
    *crc = c;
    return 0;
}

static int usable(const bnn_storage *st)
{
    return st && st->read && st->write && st->slot_bytes > BNN_SLOT_HEADER_BYTES;
}

/* The slots' headers, each valid only if its payload's CRC holds too (checked with buf as the reading buffer). */
static bnn_status scan(const bnn_storage *st, slot_header h[2], unsigned char *buf, size_t cap, bnn_error *err)
{
    for (unsigned s = 0; s < 2; s++) {
        uint32_t crc;
        if (read_header(st, s, &h[s])) return bnn_fail(err, BNN_ERR_STORAGE, "a slot's header could not be read");
        if (!h[s].valid) continue;
        if (payload_crc(st, s, h[s].size, buf, cap, &crc))
            return bnn_fail(err, BNN_ERR_STORAGE, "a slot's payload could not be read");
        h[s].valid = crc == h[s].payload_crc;
    }
    return BNN_OK;
}

bnn_status bnn_state_save(const bnn_storage *st, const void *payload, size_t size, uint64_t *sequence, bnn_error *err)
{
    if (!usable(st) || (!payload && size)) return bnn_fail(err, BNN_ERR_ARGUMENT, "no storage or no payload");
    if (size > st->slot_bytes - BNN_SLOT_HEADER_BYTES)
        return bnn_fail(err, BNN_ERR_ARGUMENT, "the state is larger than a storage slot");
    /* Which slot holds the newest complete state (header and payload CRCs): the other one is written. A slot whose
     * header claims a higher sequence but whose payload is torn counts as empty: it holds nothing to keep. */
    slot_header h[2];
    unsigned char buf[64];
    bnn_status s = scan(st, h, buf, sizeof buf, err);
    if (s) return s;
    unsigned newest = h[1].valid && (!h[0].valid || h[1].sequence > h[0].sequence) ? 1 : 0;
    uint64_t next = (h[newest].valid ? h[newest].sequence : 0) + 1;
    unsigned target = h[newest].valid ? newest ^ 1u : 0;
    unsigned char head[BNN_SLOT_HEADER_BYTES];
    for (int i = 0; i < 8; i++) head[i] = SLOT_MAGIC[i];
    bnn_wr64(head + 8, next);
    bnn_wr64(head + 16, size);
    bnn_wr32(head + 24, bnn_crc32(0, payload, size));
    bnn_wr32(head + 28, bnn_crc32(0, head, 28));
    if ((size && st->write(st->ctx, target, BNN_SLOT_HEADER_BYTES, payload, size))
        || (st->flush && st->flush(st->ctx, target)))
        return bnn_fail(err, BNN_ERR_STORAGE, "the state's payload could not be written");
    if (st->write(st->ctx, target, 0, head, sizeof head) || (st->flush && st->flush(st->ctx, target)))
        return bnn_fail(err, BNN_ERR_STORAGE, "the state's header could not be written");
    if (sequence) *sequence = next;
    return bnn_ok(err);
}

bnn_status bnn_state_load(const bnn_storage *st, void *payload, size_t capacity, size_t *size, uint64_t *sequence,
                          bnn_error *err)
{
    if (!usable(st) || (!payload && capacity)) return bnn_fail(err, BNN_ERR_ARGUMENT, "no storage or no buffer");
    slot_header h[2];
    unsigned char buf[64];
    bnn_status s = scan(st, h, buf, sizeof buf, err);
    if (s) return s;
    if (!h[0].valid && !h[1].valid) return bnn_fail(err, BNN_ERR_NO_STATE, "neither slot holds a complete state");
    unsigned newest = h[1].valid && (!h[0].valid || h[1].sequence > h[0].sequence) ? 1 : 0;
    if (h[newest].size > capacity) return bnn_fail(err, BNN_ERR_ARGUMENT, "the buffer is smaller than the state");
    if (h[newest].size && st->read(st->ctx, newest, BNN_SLOT_HEADER_BYTES, payload, (size_t)h[newest].size))
        return bnn_fail(err, BNN_ERR_STORAGE, "the state could not be read");
    /* read again after the check: the bytes handed over are the ones whose CRC holds */
    if (bnn_crc32(0, payload, (size_t)h[newest].size) != h[newest].payload_crc)
        return bnn_fail(err, BNN_ERR_STORAGE, "the state changed while it was read");
    if (size) *size = (size_t)h[newest].size;
    if (sequence) *sequence = h[newest].sequence;
    return bnn_ok(err);
}
