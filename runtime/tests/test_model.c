/*
 * test_model.c -- the model-level runtime (bnn.h) of this build against the Python runtime's packed backend, on the
 * models runtime/tests/make_model.py exported (the file format is in its docstring).
 *
 *   test_model MODEL_DIR
 *
 * Per model: the blob in its own allocation of exactly its size (so AddressSanitizer sees any read past it);
 * bnn_arena_size; bnn_init refused with BNN_ERR_ARGUMENT in an arena one byte short, then run in arenas of exactly
 * that size at several alignments (0, 1, 8, 33, 63 bytes past a malloc'd pointer, prefilled with garbage). Then:
 *   - bnn_get_info's fields equal the model's (input, classes, layers, LR layer, the latent's shape and kind);
 *   - the latents of all images in one call equal the Python ones bit for bit (memcmp), and image by image too;
 *   - the logits lie within the head's bound of the Python ones (twice gamma_F * sum|feature * weight|);
 *   - bnn_predict is the first maximum of bnn_logits' own logits, and the Python argmax wherever the Python top
 *     two logits are further apart than twice the image's largest bound;
 *   - a second run gives the same bytes (nothing carries over in the arena); outputs and the arena are fenced by
 *     guard bytes (without ASan; with it, exact allocations), so a write past them fails; calls with a NULL pointer or no images are refused with a message.
 * Then the negative self-test: each comparison is run once on a deliberately corrupted expectation (one latent bit
 * or float flipped, a logit moved past its bound, a label changed), which it must reject. Prints a table; exit
 * status 0 only if everything passed.
 */
#include "bnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
static const size_t GUARD = 0; /* exact allocations: ASan itself reports a write past one */
#else
static const size_t GUARD = 64;
#endif

static int failures;
static int negatives, negatives_run; /* corrupted expectations rejected, and tried */

#define CHECK(cond, ...)                                            \
    do {                                                            \
        if (!(cond)) {                                              \
            printf("FAIL %s: ", name);                              \
            printf(__VA_ARGS__);                                    \
            printf("\n");                                           \
            failures++;                                             \
        }                                                           \
    } while (0)

/* ---- reading the files ------------------------------------------------------------------------------------- */

static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int host_is_little_endian(void)
{
    uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

#include "read_file.h"

enum { H_N, H_HEIGHT, H_WIDTH, H_CHANNELS, H_CLASSES, H_LAYERS, H_LR, H_BINARY, H_LH, H_LW, H_LC, H_LCOUNT, H_FIELDS };

typedef struct {
    uint32_t h[H_FIELDS];
    size_t image_bytes, latent_bytes; /* per image */
    const uint8_t *images;
    const void *latent;
    const float *logits;
    const double *bound;
    const int32_t *labels;
    unsigned char *file;
} expect_t;

static int load_expect(const char *path, expect_t *e)
{
    size_t size, at = 8 + 4 * H_FIELDS;
    memset(e, 0, sizeof *e);
    e->file = read_file(path, &size);
    if (!e->file || size < at || memcmp(e->file, "BNNMOD1", 8) != 0) return 0;
    for (int i = 0; i < H_FIELDS; i++) e->h[i] = le32(e->file + 8 + 4 * i);
    size_t n = e->h[H_N], classes = e->h[H_CLASSES];
    e->image_bytes = (size_t)e->h[H_HEIGHT] * e->h[H_WIDTH] * e->h[H_CHANNELS];
    e->latent_bytes = (size_t)e->h[H_LCOUNT] * (e->h[H_BINARY] ? 8 : 4);
    size_t want = at + n * (e->image_bytes + e->latent_bytes + classes * (4 + 8) + 4);
    if (n == 0 || size != want) return 0;
    /* The sections are read through memcpy'd copies where their offsets are not aligned: copy everything. */
    unsigned char *copy = malloc(size - at);
    if (!copy) return 0;
    memcpy(copy, e->file + at, size - at);
    free(e->file);
    e->file = copy;
    /* Order: latent, logits, bound need alignment; realign each into its own buffer. */
    unsigned char *p = copy;
    e->images = p;
    p += n * e->image_bytes;
    void *lat = malloc(n * e->latent_bytes), *lg = malloc(n * classes * 4), *bd = malloc(n * classes * 8),
         *lb = malloc(n * 4);
    if (!lat || !lg || !bd || !lb) return 0;
    memcpy(lat, p, n * e->latent_bytes), p += n * e->latent_bytes;
    memcpy(lg, p, n * classes * 4), p += n * classes * 4;
    memcpy(bd, p, n * classes * 8), p += n * classes * 8;
    memcpy(lb, p, n * 4);
    e->latent = lat, e->logits = lg, e->bound = bd, e->labels = lb;
    return 1;
}

static void free_expect(expect_t *e)
{
    free((void *)e->latent), free((void *)e->logits), free((void *)e->bound), free((void *)e->labels);
    free(e->file);
}

/* ---- fenced outputs ---------------------------------------------------------------------------------------- */

#include "fenced.h"

/* ---- the comparisons (each also run on a corrupted expectation) ---------------------------------------------- */

/* Bytes equal; else *first = the first differing element (of `item` bytes). */
static int latent_equal(const void *got, const void *want, size_t bytes, size_t item, size_t *first)
{
    if (memcmp(got, want, bytes) == 0) return 1;
    const unsigned char *a = got, *b = want;
    size_t i = 0;
    while (a[i] == b[i]) i++;
    *first = i / item;
    return 0;
}

/* Every |got - want| <= bound; returns the count outside it, *worst = the largest |got - want| / bound. */
static size_t logits_outside(const float *got, const float *want, const double *bound, size_t count, double *worst)
{
    size_t outside = 0;
    *worst = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= bound[i])) outside++; /* NaN counts as outside */
        double r = bound[i] > 0 ? d / bound[i] : (d > 0 ? INFINITY : 0);
        if (r > *worst || r != r) *worst = r;
    }
    return outside;
}

/* Image i's Python top-two gap exceeds twice its largest bound: there the labels must agree. */
static int clear_image(const expect_t *e, size_t i)
{
    size_t classes = e->h[H_CLASSES];
    const float *z = e->logits + i * classes;
    double top = -INFINITY, second = -INFINITY, bmax = 0;
    for (size_t c = 0; c < classes; c++) {
        if (z[c] > top) second = top, top = z[c];
        else if (z[c] > second) second = z[c];
        if (e->bound[i * classes + c] > bmax) bmax = e->bound[i * classes + c];
    }
    return top - second > 2 * bmax;
}

/* The number of clear images whose label differs from Python's; *clear = how many images are clear. */
static size_t label_mismatches(const int32_t *got, const expect_t *e, size_t *clear)
{
    size_t bad = 0;
    *clear = 0;
    for (size_t i = 0; i < e->h[H_N]; i++)
        if (clear_image(e, i)) {
            (*clear)++;
            bad += got[i] != e->labels[i];
        }
    return bad;
}

/* An error must carry its code and a non-empty one-line message. */
static int good_error(const bnn_error *err, bnn_status s)
{
    const char *nul = memchr(err->message, '\0', sizeof err->message);
    return err->code == s && nul && nul > err->message && !strchr(err->message, '\n');
}

/* ---- one model --------------------------------------------------------------------------------------------- */

typedef struct {
    size_t arena;
    double worst;
    size_t clear, n;
    int latent_checked, latent_bad;
} row_t;

static void test_model(const char *dir, const char *name, row_t *row)
{
    char path[1024];
    expect_t e;
    size_t blob_size, need = 0;
    bnn_error err;
    bnn_status s;
    memset(row, 0, sizeof *row);
    snprintf(path, sizeof path, "%s/%s.expect", dir, name);
    if (!load_expect(path, &e)) {
        printf("FAIL %s: cannot read %s\n", name, path);
        failures++;
        free_expect(&e);
        return;
    }
    snprintf(path, sizeof path, "%s/%s.bnn", dir, name);
    unsigned char *blob = read_file(path, &blob_size);
    if (!blob) {
        printf("FAIL %s: cannot read %s\n", name, path);
        failures++;
        free_expect(&e);
        return;
    }
    const size_t n = e.h[H_N], classes = e.h[H_CLASSES];
    row->n = n;

    s = bnn_arena_size(blob, blob_size, &need, &err);
    CHECK(s == BNN_OK && err.code == BNN_OK, "bnn_arena_size: %d (%s)", (int)s, err.message);
    if (s != BNN_OK) goto done;
    row->arena = need;

    /* one byte short: refused, with a message, and *model set to NULL */
    {
        unsigned char *small = malloc(need - 1);
        bnn_model *m = (bnn_model *)(void *)small;
        memset(&err, 0x55, sizeof err);
        s = bnn_init(blob, blob_size, small, need - 1, &m, &err);
        CHECK(s == BNN_ERR_ARGUMENT && good_error(&err, s) && m == NULL,
              "bnn_init in need - 1 bytes: status %d, message '%.120s'", (int)s, err.message);
        free(small);
    }
    /* a misaligned blob: refused */
    {
        unsigned char *odd = malloc(blob_size + 1);
        memcpy(odd + 1, blob, blob_size);
        size_t n2 = 0;
        s = bnn_arena_size(odd + 1, blob_size, &n2, &err);
        CHECK(s == BNN_ERR_ARGUMENT && good_error(&err, s), "a misaligned blob: status %d", (int)s);
        free(odd);
    }

    int latent_ok = 1;
    bnn_info info0;
    const size_t offsets[] = {0, 1, 8, 33, 63};
    for (size_t k = 0; k < sizeof offsets / sizeof *offsets; k++) {
        size_t off = offsets[k];
        unsigned char *block = malloc(off + need + GUARD);
        memset(block, 0xa5, off + need + GUARD);
        bnn_model *m = NULL;
        s = bnn_init(blob, blob_size, block + off, need, &m, &err);
        CHECK(s == BNN_OK && m != NULL && err.code == BNN_OK, "bnn_init at offset %zu: %d (%s)", off, (int)s,
              err.message);
        if (s != BNN_OK) {
            free(block);
            continue;
        }
        CHECK((unsigned char *)m >= block + off && (unsigned char *)m < block + off + need,
              "the model is not in the arena");

        bnn_info info;
        const int info_before = failures;
        memset(&info, 0xee, sizeof info);
        CHECK(bnn_get_info(m, &info) == BNN_OK, "bnn_get_info");
        if (k == 0) { /* the same model at every offset: its fields checked once */
            CHECK(info.height == e.h[H_HEIGHT] && info.width == e.h[H_WIDTH] && info.channels == e.h[H_CHANNELS],
                  "info: input %ux%ux%u, the model's %ux%ux%u", info.height, info.width, info.channels, e.h[H_HEIGHT],
                  e.h[H_WIDTH], e.h[H_CHANNELS]);
            CHECK(info.classes == classes, "info: %u classes, the model's %zu", info.classes, classes);
            CHECK(info.layers == e.h[H_LAYERS], "info: %u layers, the model's %u", info.layers, e.h[H_LAYERS]);
            CHECK(info.lr_layer == e.h[H_LR], "info: LR layer %u, the model's %u", info.lr_layer, e.h[H_LR]);
            CHECK(info.latent_binary == e.h[H_BINARY] && info.latent_height == e.h[H_LH]
                      && info.latent_width == e.h[H_LW] && info.latent_channels == e.h[H_LC],
                  "info: latent %s %ux%ux%u, the model's %s %ux%ux%u", info.latent_binary ? "binary" : "real",
                  info.latent_height, info.latent_width, info.latent_channels, e.h[H_BINARY] ? "binary" : "real",
                  e.h[H_LH], e.h[H_LW], e.h[H_LC]);
            CHECK(info.arena_bytes == need, "info: arena_bytes %zu, bnn_arena_size %zu", info.arena_bytes, need);
            size_t lcount = (size_t)info.latent_height * info.latent_width
                            * (info.latent_binary ? (info.latent_channels + 63) / 64 : info.latent_channels);
            CHECK(lcount == e.h[H_LCOUNT], "a latent of %zu elements, the model's %u", lcount, e.h[H_LCOUNT]);
            latent_ok = failures == info_before; /* else the latent's kind or shape is wrong: not compared */
            info0 = info;
        } else {
            CHECK(memcmp(&info, &info0, sizeof info) == 0, "bnn_get_info differs at arena offset %zu", off);
        }

        /* the latents: all images at once (into 0x00 and 0xff prefilled outputs), then one by one */
        size_t lbytes = n * e.latent_bytes, item = e.h[H_BINARY] ? 8 : 4, first = 0;
        for (int fill = 0; latent_ok && fill < 2; fill++) {
            output_t lat = output_new(lbytes, fill ? 0xff : 0x00);
            float *real = e.h[H_BINARY] ? NULL : lat.data;
            uint64_t *bits = e.h[H_BINARY] ? lat.data : NULL;
            s = bnn_latent(m, e.images, n, real, bits, &err);
            CHECK(s == BNN_OK, "bnn_latent: %d (%s)", (int)s, err.message);
            int same = latent_equal(lat.data, e.latent, lbytes, item, &first);
            row->latent_checked = 1;
            row->latent_bad += !same;
            CHECK(same, "latent (arena offset %zu) differs at element %zu (image %zu)", off, first,
                  first * item / e.latent_bytes);
            CHECK(guards_intact(&lat), "bnn_latent wrote outside its output");
            free(lat.block);
        }
        for (size_t i = 0; latent_ok && i < n; i++) {
            output_t lat = output_new(e.latent_bytes, 0x33);
            s = bnn_latent(m, e.images + i * e.image_bytes, 1, e.h[H_BINARY] ? NULL : lat.data,
                           e.h[H_BINARY] ? lat.data : NULL, &err);
            CHECK(s == BNN_OK && latent_equal(lat.data, (const unsigned char *)e.latent + i * e.latent_bytes,
                                              e.latent_bytes, item, &first),
                  "the latent of image %zu alone differs (element %zu)", i, first);
            free(lat.block);
        }

        /* the logits, twice (the same bytes) */
        output_t lg = output_new(n * classes * 4, 0xff), lg2 = output_new(n * classes * 4, 0x00);
        s = bnn_logits(m, e.images, n, lg.data, &err);
        CHECK(s == BNN_OK, "bnn_logits: %d (%s)", (int)s, err.message);
        double worst;
        size_t outside = logits_outside(lg.data, e.logits, e.bound, n * classes, &worst);
        CHECK(outside == 0, "%zu of %zu logits outside the head's bound (worst %.3g x the bound)", outside,
              n * classes, worst);
        if (worst > row->worst) row->worst = worst;
        s = bnn_logits(m, e.images, n, lg2.data, &err);
        CHECK(s == BNN_OK && memcmp(lg.data, lg2.data, n * classes * 4) == 0, "a second bnn_logits differs");
        CHECK(guards_intact(&lg) && guards_intact(&lg2), "bnn_logits wrote outside its output");

        /* the predictions: C's own argmax, and Python's where it is clear */
        output_t lb = output_new(n * 4, 0x77);
        s = bnn_predict(m, e.images, n, lb.data, &err);
        CHECK(s == BNN_OK, "bnn_predict: %d (%s)", (int)s, err.message);
        const int32_t *labels = lb.data;
        const float *z = lg.data;
        for (size_t i = 0; i < n; i++) {
            size_t best = 0;
            for (size_t c = 1; c < classes; c++)
                if (z[i * classes + c] > z[i * classes + best]) best = c;
            CHECK(labels[i] == (int32_t)best, "image %zu: bnn_predict %d, the first maximum of bnn_logits %zu", i,
                  labels[i], best);
        }
        size_t bad = label_mismatches(labels, &e, &row->clear);
        CHECK(bad == 0, "%zu of %zu clear predictions differ from Python's", bad, row->clear);
        CHECK(guards_intact(&lb), "bnn_predict wrote outside its output");

        /* the latent after the logits: the same (nothing carries over) */
        output_t lat = output_new(lbytes, 0x11);
        if (latent_ok) {
            s = bnn_latent(m, e.images, n, e.h[H_BINARY] ? NULL : lat.data, e.h[H_BINARY] ? lat.data : NULL, &err);
            CHECK(s == BNN_OK && latent_equal(lat.data, e.latent, lbytes, item, &first),
                  "the latent after bnn_logits differs");
        }

        /* refused calls */
        float dummy[1];
        bnn_status r[6] = {
            bnn_logits(m, e.images, 0, lg.data, &err), bnn_logits(m, NULL, n, lg.data, &err),
            bnn_predict(m, e.images, n, NULL, &err),   bnn_predict(NULL, e.images, n, lb.data, &err),
            bnn_latent(m, e.images, n, info.latent_binary ? dummy : NULL, info.latent_binary ? NULL : (uint64_t *)lat.data,
                       &err), /* only the output of the other kind */
            bnn_get_info(NULL, NULL)};
        for (int k2 = 0; k2 < 6; k2++) CHECK(r[k2] == BNN_ERR_ARGUMENT, "refused call %d: status %d", k2, (int)r[k2]);
        memset(&err, 0x55, sizeof err);
        s = bnn_logits(m, NULL, n, lg.data, &err);
        CHECK(good_error(&err, s), "a refused call's message is not one non-empty line");

        /* the negative self-test, once per model: corrupted expectations must be rejected */
        if (k == 0) {
            int caught;
            negatives_run += 2;
            if (latent_ok) {
                negatives_run++;
                unsigned char *bad_lat = malloc(lbytes);
                memcpy(bad_lat, e.latent, lbytes);
                bad_lat[lbytes / 2] ^= 0x01; /* one bit, mid-way (a float's lowest mantissa bit, or one channel) */
                caught = !latent_equal(lat.data, bad_lat, lbytes, item, &first);
                CHECK(caught, "negative test: a latent with one bit flipped passed");
                negatives += caught;
                free(bad_lat);
            }

            float *bad_lg = malloc(n * classes * 4);
            memcpy(bad_lg, e.logits, n * classes * 4);
            size_t j = (n * classes) / 3;
            bad_lg[j] = (float)((double)bad_lg[j] + 2.5 * e.bound[j] + 1e-30);
            caught = logits_outside(lg.data, bad_lg, e.bound, n * classes, &worst) > 0;
            CHECK(caught, "negative test: a logit moved past its bound passed");
            negatives += caught;
            free(bad_lg);

            int32_t *bad_lb = malloc(n * 4);
            memcpy(bad_lb, labels, n * 4);
            size_t clear = 0, which = 0;
            while (which < n && !clear_image(&e, which)) which++;
            if (which < n) {
                bad_lb[which] = (bad_lb[which] + 1) % (int32_t)classes;
                caught = label_mismatches(bad_lb, &e, &clear) > 0;
                CHECK(caught, "negative test: a changed clear label passed");
                negatives += caught;
            } else {
                CHECK(0, "no clear prediction among %zu images: the label check checks nothing", n);
            }
            free(bad_lb);
        }
        free(lat.block), free(lg.block), free(lg2.block), free(lb.block);
        for (size_t i = 0; i < GUARD; i++)
            if (block[off + need + i] != 0xa5) {
                CHECK(0, "a write past the arena's %zu bytes (offset %zu)", need, off);
                break;
            }
        free(block);
    }
done:
    free(blob);
    free_expect(&e);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    if (!host_is_little_endian()) {
        fprintf(stderr, "the test files are little-endian; this host is not\n");
        return 2;
    }
    char path[1024], line[256];
    snprintf(path, sizeof path, "%s/MANIFEST", argv[1]);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s (make_model.py writes it)\n", path);
        return 2;
    }
    printf("bnn runtime, %s inner loop, models from %s\n", bnn_build_path(), argv[1]);
    printf("  %-18s %9s %6s %10s %15s %11s\n", "model", "arena B", "images", "latent", "logit err/bound",
           "clear preds");
    int models = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!*line) continue;
        int before = failures;
        row_t row;
        test_model(argv[1], line, &row);
        printf("  %-18s %9zu %6zu %10s %15.3f %8zu/%zu  %s\n", line, row.arena, row.n,
               !row.latent_checked ? "-" : row.latent_bad ? "DIFFERENT" : "bit-equal", row.worst, row.clear, row.n,
               failures == before ? "ok" : "FAIL");
        models++;
    }
    fclose(f);
    if (models == 0) {
        printf("FAIL: no models in %s\n", path);
        failures++;
    }
    if (negatives != negatives_run) {
        printf("FAIL: only %d of %d negative checks rejected their corrupted expectation\n", negatives, negatives_run);
        failures++;
    }
    printf("%d models, %d negative checks rejected as they must be, %d failures\n", models, negatives, failures);
    return failures ? 1 : 0;
}
