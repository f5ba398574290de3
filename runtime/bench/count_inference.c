/*
 * count_inference.c -- N inferences of one fixed image through a model, for an instruction counter to difference:
 * the instructions of one inference are (count(N = 1 + K) - count(N = 1)) / K, free of the program's start-up, the
 * model's loading and bnn_init (bench/icount_aarch64.sh does this under qemu-aarch64; valgrind --tool=callgrind on
 * the host works the same way).
 *
 *   count_inference MODEL.bnn latent|predict N
 *
 * latent:  bnn_latent, the frozen part (the layers before the LR layer); predict: bnn_predict, the whole network.
 * The image is the same deterministic pixels every time ((37 i + 11) mod 256), one image per call. What runs besides
 * the N calls does not depend on N: N is parsed digit by digit with the same instructions for every digit (strtol's
 * work depends on the value), and the output (the path, the mode and a checksum of the last result) is the same for
 * every N, so runs with different N can also be compared by their output.
 */
#include "bnn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/read_file.h"
#include "parse_count.h"


int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[2], "latent") != 0 && strcmp(argv[2], "predict") != 0)) {
        fprintf(stderr, "usage: %s MODEL.bnn latent|predict N\n", argv[0]);
        return 2;
    }
    const int latent = strcmp(argv[2], "latent") == 0;
    const long count = parse_count(argv[3]);
    if (count < 0) {
        fprintf(stderr, "N must be a decimal number of at most 9 digits\n");
        return 2;
    }
    size_t blob_size;
    unsigned char *blob = read_file(argv[1], &blob_size);
    if (!blob) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 1;
    }
    bnn_error err;
    size_t arena_bytes;
    bnn_model *m;
    void *arena = NULL;
    if (bnn_arena_size(blob, blob_size, &arena_bytes, &err) != BNN_OK || !(arena = malloc(arena_bytes)) ||
        bnn_init(blob, blob_size, arena, arena_bytes, &m, &err) != BNN_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], arena ? err.message : "no memory for the arena");
        return 1;
    }
    bnn_info info;
    bnn_get_info(m, &info);

    size_t pixels = (size_t)info.height * info.width * info.channels;
    size_t words = (info.latent_channels + 63) / 64;
    size_t latent_px = (size_t)info.latent_height * info.latent_width;
    size_t n_bits = info.latent_binary ? latent_px * words : 0;
    size_t n_real = info.latent_binary ? 0 : latent_px * info.latent_channels;
    uint8_t *image = malloc(pixels);
    uint64_t *bits = malloc((n_bits ? n_bits : 1) * sizeof *bits);
    float *real = malloc((n_real ? n_real : 1) * sizeof *real);
    if (!image || !bits || !real) {
        fprintf(stderr, "no memory\n");
        return 1;
    }
    for (size_t i = 0; i < pixels; i++) image[i] = (uint8_t)((37 * i + 11) & 0xff);
    memset(bits, 0, (n_bits ? n_bits : 1) * sizeof *bits);
    memset(real, 0, (n_real ? n_real : 1) * sizeof *real);

    int32_t label = -1;
    for (long i = 0; i < count; i++) {
        bnn_status s = latent ? bnn_latent(m, image, 1, info.latent_binary ? NULL : real, bits, &err)
                              : bnn_predict(m, image, 1, &label, &err);
        if (s != BNN_OK) {
            fprintf(stderr, "inference: %s\n", err.message);
            return 1;
        }
    }

    /* the last result, the same for every N >= 1 (FNV-1a over the latent's bytes) */
    uint64_t h = 1469598103934665603u;
    const unsigned char *p = info.latent_binary ? (const unsigned char *)bits : (const unsigned char *)real;
    size_t nbytes = info.latent_binary ? n_bits * sizeof *bits : n_real * sizeof *real;
    for (size_t i = 0; i < nbytes; i++) h = (h ^ p[i]) * 1099511628211u;
    if (latent)
        printf("%s latent %ux%ux%u%s fnv1a %016llx\n", bnn_build_path(), info.latent_height, info.latent_width,
               info.latent_channels, info.latent_binary ? " bits" : " float", (unsigned long long)h);
    else
        printf("%s predict label %d\n", bnn_build_path(), (int)label);
    free(real);
    free(bits);
    free(image);
    free(arena);
    free(blob);
    return 0;
}
