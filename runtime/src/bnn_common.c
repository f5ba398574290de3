/* bnn_common.c -- what the runtime's parts share: the status messages, the error helper, CRC-32. */
#include "bnn.h"
#include "bnn_internal.h"

const char *bnn_status_message(bnn_status code)
{
    switch (code) {
    case BNN_OK: return "ok";
    case BNN_ERR_ARGUMENT: return "invalid argument";
    case BNN_ERR_FORMAT: return "not a readable bnncl model file";
    case BNN_ERR_VERSION: return "model file written by a newer bnncl: upgrade the runtime";
    case BNN_ERR_CHECKSUM: return "checksum mismatch: the model file was damaged or altered";
    case BNN_ERR_MODEL: return "not a network this runtime can run";
    case BNN_ERR_STORAGE: return "the storage failed to read or write";
    case BNN_ERR_NO_STATE: return "no complete saved state";
    case BNN_ERR_STATE: return "not a state of this learner";
    case BNN_ERR_NUMERIC: return "NaN or inf reached a quantizer (the learning diverged)";
    }
    return "unknown status";
}

/* dst (NUL-terminated, cap bytes) + src, cut to fit. */
static void append(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    while (n + 1 < cap && dst[n]) n++;
    while (*src && n + 1 < cap) dst[n++] = *src++;
    dst[n] = '\0';
}

bnn_status bnn_fail(bnn_error *err, bnn_status code, const char *what)
{
    if (err) {
        err->code = code;
        err->message[0] = '\0';
        append(err->message, sizeof err->message, bnn_status_message(code));
        append(err->message, sizeof err->message, ": ");
        append(err->message, sizeof err->message, what);
    }
    return code;
}

bnn_status bnn_ok(bnn_error *err)
{
    if (err) {
        err->code = BNN_OK;
        err->message[0] = '\0';
    }
    return BNN_OK;
}

/* CRC-32 (zlib's), four bits at a time: a 64-byte table, small enough for a microcontroller. */
uint32_t bnn_crc32(uint32_t crc, const void *p, size_t n)
{
    static const uint32_t t[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
        0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    const unsigned char *b = p;
    uint32_t c = crc ^ 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= b[i];
        c = (c >> 4) ^ t[c & 15];
        c = (c >> 4) ^ t[c & 15];
    }
    return c ^ 0xFFFFFFFFu;
}
