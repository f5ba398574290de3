/*
 * learn_stream.c -- learn a continual-learning stream from files with the C learner (bnn_learner.h), no Python: a
 * Linux example (C11 + POSIX: open, pread, pwrite, fsync). The library itself allocates nothing and calls no OS; this
 * program is what a device's firmware does around it: read the model, give it an arena, keep its state in a file of
 * two slots (bnn_store.h) and feed it the experiences one by one.
 *
 *   learn_stream MODEL.bnn STATE EXP0-images.idx EXP0-labels.idx [EXPk-images.idx EXPk-labels.idx ...]
 *                [--test IMAGES.idx LABELS.idx] [--print-state FILE] [--verbose] [learning options]
 *
 * The experiences are learned in the order given; the state is saved after each one, so a run that is killed (or
 * loses power) resumes where it stopped: the experiences the saved state has consumed are skipped. One line per
 * experience: its index, patterns, steps, mean loss, the test accuracy (with --test) and the seconds it took.
 *
 * Files: the MNIST IDX format, big-endian: images 0x00000803 N x H x W (uint8, one channel) or 0x00000804
 * N x H x W x C; labels 0x00000801 N (uint8). Every file is checked before anything is learned or written (its magic,
 * its sizes, that it is complete, that the images are the model's input size, every label a class of the model):
 * a bad file is a one-line error naming it, status 2, and nothing is written. A library error: one line with the
 * file and the library's message, status 1.
 *
 * The state file: slot s at byte s * slot_bytes, slot_bytes = BNN_SLOT_HEADER_BYTES + bnn_learner_state_bytes(L),
 * which follows from the model and the options (so a state is resumed with the options it was saved with); bytes
 * never written read as zeros; the flush is fsync. No user bytes: bnncl.device.clearner writes the same layout with
 * 1 MiB of them (its log), so the two programs' state files are not each other's.
 *
 * --print-state FILE: after learning (if anything is left to learn), the newest complete state's payload
 * (bnn_state_load: the learner's state blob, docs/learner-state.md) written to FILE (atomically); status 3 and
 * nothing written when no state was saved yet. --verbose: a line before each learning and each save (the SIGKILL
 * test, tests/kill_learner.py, tells from them what a kill interrupted).
 *
 * Options (defaults: bnn_learn_defaults): --strategy cwr|ar1, --epochs N, --batch-size N, --replay-size N,
 * --replay-batch N, --replay-storage bits|float32, --replay-update balanced|ar1, --replay-mix fixed|proportional,
 * --q-f N, --q-b N, --rounding nearest|stochastic, --lr X, --seed N, --max-patterns N (default: the largest
 * experience given: it sizes the arena's index buffers, not the state).
 *
 * Status: 0 done (or nothing left to learn), 1 a library, storage or state error, 2 bad usage or a bad input file,
 * 3 (--print-state) no state saved yet.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64
#include "bnn_learner.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "learn_stream"
#define EXIT_LIBRARY 1
#define EXIT_INPUT 2
#define EXIT_NO_STATE 3

static void die(int status, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++) /* one line, whatever a path holds */
        if (*c == '\n' || *c == '\r') *c = ' ';
    fflush(stdout);
    fprintf(stderr, PROG ": %s\n", line);
    exit(status);
}

static void usage_error(const char *fmt, const char *what)
{
    char line[300];
    snprintf(line, sizeof line, fmt, what);
    die(EXIT_INPUT, "%s (usage: " PROG " MODEL.bnn STATE IMAGES.idx LABELS.idx [...] [--test IMAGES.idx LABELS.idx] "
                    "[options]; " PROG " --help)", line);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- files ------------------------------------------------------------------------------------------------- */

/* len bytes at offset; 0, or -1 with errno (a short file: errno 0). */
static int read_at(int fd, void *dst, size_t len, uint64_t offset)
{
    unsigned char *p = dst;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = 0;
            return -1;
        }
        p += n, len -= (size_t)n, offset += (uint64_t)n;
    }
    return 0;
}

static int write_all(int fd, const void *src, size_t len, uint64_t offset)
{
    const unsigned char *p = src;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n, len -= (size_t)n, offset += (uint64_t)n;
    }
    return 0;
}

static const char *why(int e) { return e ? strerror(e) : "the file is shorter than it was"; }

/* The model file in an 8-byte-aligned buffer (malloc's alignment is at least that). */
static unsigned char *read_model(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) die(EXIT_INPUT, "%s: cannot read the model file (%s)", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) die(EXIT_INPUT, "%s: not a regular file", path);
    *size = (size_t)sb.st_size;
    if ((uint64_t)sb.st_size != (uint64_t)*size) die(EXIT_INPUT, "%s: too large for this machine", path);
    unsigned char *blob = malloc(*size ? *size : 1);
    if (!blob) die(EXIT_LIBRARY, "%s: out of memory (%zu bytes)", path, *size);
    if (read_at(fd, blob, *size, 0) != 0) die(EXIT_INPUT, "%s: cannot read the model file (%s)", path, why(errno));
    close(fd);
    return blob;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

typedef struct {
    const char *images_path, *labels_path;
    size_t n;          /* images */
    uint64_t offset;   /* of the images' bytes in their file */
    int32_t *labels;   /* n, checked */
} idx_set;

/* Open an IDX file and check its header: the magic (`want` dimensions: 1 labels, 3 or 4 images), the sizes, that
 * the file holds exactly the data its header says. dims[] gets the sizes, *offset where the data starts. */
static int open_idx(const char *path, int images, uint32_t dims[4], unsigned *ndim, uint64_t *offset)
{
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) die(EXIT_INPUT, "%s: cannot read (%s)", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) die(EXIT_INPUT, "%s: not a regular file", path);
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char h[20];
    const char *kind = images ? "images (0x00000803: N x H x W uint8, or 0x00000804: N x H x W x C)"
                              : "labels (0x00000801: N uint8)";
    if (size < 4) die(EXIT_INPUT, "%s: not an IDX file of %s: only %" PRIu64 " bytes", path, kind, size);
    if (read_at(fd, h, 4, 0) != 0) die(EXIT_INPUT, "%s: cannot read (%s)", path, why(errno));
    uint32_t magic = be32(h);
    if (!(images ? magic == 0x803u || magic == 0x804u : magic == 0x801u))
        die(EXIT_INPUT, "%s: not an IDX file of %s: magic 0x%08" PRIx32, path, kind, magic);
    *ndim = magic & 0xffu;
    uint64_t header = 4 + 4 * (uint64_t)*ndim;
    if (size < header)
        die(EXIT_INPUT, "%s: truncated: %" PRIu64 " bytes, its %u-dimension IDX header alone is %" PRIu64, path, size,
            *ndim, header);
    if (read_at(fd, h + 4, (size_t)header - 4, 4) != 0) die(EXIT_INPUT, "%s: cannot read (%s)", path, why(errno));
    uint64_t data = 1;
    int overflow = 0;
    for (unsigned i = 0; i < *ndim; i++) {
        dims[i] = be32(h + 4 + 4 * i);
        if (dims[i] && data > UINT64_MAX / dims[i]) overflow = 1;
        data *= dims[i];
    }
    char shape[64];
    int at = snprintf(shape, sizeof shape, "%" PRIu32, dims[0]);
    for (unsigned i = 1; i < *ndim; i++) at += snprintf(shape + at, sizeof shape - (size_t)at, "x%" PRIu32, dims[i]);
    if (overflow)
        die(EXIT_INPUT, "%s: its header says %s: more bytes than any file holds", path, shape);
    if (data > size - header)
        die(EXIT_INPUT, "%s: truncated: its header says %s (%" PRIu64 " bytes of data), the file has %" PRIu64, path,
            shape, data, size - header);
    if (data < size - header)
        die(EXIT_INPUT, "%s: %" PRIu64 " unexpected bytes after its %s data", path, size - header - data, shape);
    *offset = header;
    return fd;
}

/* An experience's (or the test set's) two files checked: the images the model's input, the labels its classes. */
static void check_set(const char *images_path, const char *labels_path, const bnn_info *info, idx_set *set)
{
    uint32_t dims[4] = {0, 0, 0, 1}, ldims[4] = {0};
    unsigned ndim, lndim;
    uint64_t loffset;
    int fd = open_idx(images_path, 1, dims, &ndim, &set->offset);
    close(fd);
    if (dims[1] != info->height || dims[2] != info->width || dims[3] != info->channels)
        die(EXIT_INPUT, "%s: images of %" PRIu32 "x%" PRIu32 "x%" PRIu32 " (H x W x C); the model takes %ux%ux%u",
            images_path, dims[1], dims[2], dims[3], (unsigned)info->height, (unsigned)info->width,
            (unsigned)info->channels);
    if (dims[0] == 0) die(EXIT_INPUT, "%s: no images in it (nothing to learn or test on)", images_path);
    if ((uint64_t)dims[0] > SIZE_MAX / ((size_t)info->height * info->width * info->channels))
        die(EXIT_INPUT, "%s: too many images for this machine's memory", images_path);
    set->images_path = images_path, set->labels_path = labels_path, set->n = dims[0];
    fd = open_idx(labels_path, 0, ldims, &lndim, &loffset);
    if (ldims[0] != dims[0])
        die(EXIT_INPUT, "%s: %" PRIu32 " labels, but %s holds %" PRIu32 " images", labels_path, ldims[0], images_path,
            dims[0]);
    unsigned char *raw = malloc(set->n);
    set->labels = malloc(set->n * sizeof(int32_t));
    if (!raw || !set->labels) die(EXIT_LIBRARY, "%s: out of memory", labels_path);
    if (read_at(fd, raw, set->n, loffset) != 0) die(EXIT_INPUT, "%s: cannot read (%s)", labels_path, why(errno));
    close(fd);
    for (size_t i = 0; i < set->n; i++) {
        if (raw[i] >= info->classes)
            die(EXIT_INPUT, "%s: label %u at index %zu is not a class of the model (%u classes)", labels_path,
                (unsigned)raw[i], i, (unsigned)info->classes);
        set->labels[i] = raw[i];
    }
    free(raw);
}

static uint8_t *read_images(const idx_set *set, size_t image_bytes)
{
    size_t bytes = set->n * image_bytes;
    uint8_t *images = malloc(bytes ? bytes : 1);
    if (!images) die(EXIT_LIBRARY, "%s: out of memory (%zu bytes)", set->images_path, bytes);
    int fd = open(set->images_path, O_RDONLY);
    if (fd < 0 || read_at(fd, images, bytes, set->offset) != 0)
        die(EXIT_INPUT, "%s: cannot read (%s)", set->images_path, why(errno));
    close(fd);
    return images;
}

/* ---- the state's storage: two slots in one file (bnn_store.h) ------------------------------------------------ */

typedef struct {
    int fd;
    size_t slot_bytes;
    int error; /* the last failure's errno */
} file_storage;

static int file_read(void *ctx, unsigned slot, size_t offset, void *dst, size_t len)
{
    file_storage *f = ctx;
    unsigned char *p = dst;
    uint64_t at = (uint64_t)slot * f->slot_bytes + offset;
    while (len) {
        ssize_t n = pread(f->fd, p, len, (off_t)at);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            f->error = errno;
            return 1;
        }
        if (n == 0) { /* beyond the end: never written, reads as zeros (an erased flash) */
            memset(p, 0, len);
            break;
        }
        p += n, len -= (size_t)n, at += (uint64_t)n;
    }
    return 0;
}

static int file_write(void *ctx, unsigned slot, size_t offset, const void *src, size_t len)
{
    file_storage *f = ctx;
    if (write_all(f->fd, src, len, (uint64_t)slot * f->slot_bytes + offset) != 0) {
        f->error = errno;
        return 1;
    }
    return 0;
}

static int file_flush(void *ctx, unsigned slot)
{
    file_storage *f = ctx;
    (void)slot;
    if (fsync(f->fd) != 0) {
        f->error = errno;
        return 1;
    }
    return 0;
}

/* The storage failed: its errno, else the library's message. */
static void storage_error(const char *path, const file_storage *f, const bnn_error *err)
{
    if (err->code == BNN_ERR_STORAGE && f->error) die(EXIT_LIBRARY, "%s: %s (%s)", path, err->message, strerror(f->error));
    die(EXIT_LIBRARY, "%s: %s", path, err->message);
}

/* ---- options ----------------------------------------------------------------------------------------------- */

static uint32_t parse_u32(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || x > UINT32_MAX) usage_error("%s: a whole number from 0 to 4294967295", flag);
    return (uint32_t)x;
}

static uint32_t parse_choice(const char *flag, const char *v, const char *a, const char *b)
{
    if (strcmp(v, a) == 0) return 0;
    if (strcmp(v, b) == 0) return 1;
    char what[120];
    snprintf(what, sizeof what, "%s %s: give %s or %s", flag, v, a, b);
    usage_error("%s", what);
    return 0;
}

static void help(void)
{
    puts("usage: " PROG " MODEL.bnn STATE EXP0-images.idx EXP0-labels.idx [EXPk-images.idx EXPk-labels.idx ...]\n"
         "       [--test IMAGES.idx LABELS.idx] [--print-state FILE] [--verbose]\n"
         "       [--strategy cwr|ar1] [--epochs N] [--batch-size N] [--replay-size N] [--replay-batch N]\n"
         "       [--replay-storage bits|float32] [--replay-update balanced|ar1] [--replay-mix fixed|proportional]\n"
         "       [--q-f N] [--q-b N] [--rounding nearest|stochastic] [--lr X] [--seed N] [--max-patterns N]\n"
         "Learns the experiences in order with the C learner (bnn_learner.h), saving STATE (two power-cut-safe\n"
         "slots) after each; a rerun resumes after the last experience saved. Defaults: bnn_learn_defaults()\n"
         "(ar1, 4 epochs, batch 50 + 128 replayed, 1500 1-bit slots, balanced, q_f 8, q_b 16, lr 0.01, seed 0);\n"
         "--max-patterns: the largest experience given. The state is resumed with the options it was saved with.");
}

int main(int argc, char **argv)
{
    bnn_learn_options o;
    bnn_learn_defaults(&o);
    const char *pos[2] = {NULL, NULL}, *test_images = NULL, *test_labels = NULL, *print_state = NULL;
    const char **exp_files = calloc((size_t)argc, sizeof *exp_files);
    size_t n_files = 0;
    int verbose = 0, max_given = 0;
    if (!exp_files) die(EXIT_LIBRARY, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help();
            free(exp_files);
            return 0;
        }
        if (strcmp(a, "--verbose") == 0) {
            verbose = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (!pos[0]) pos[0] = a;
            else if (!pos[1]) pos[1] = a;
            else exp_files[n_files++] = a;
            continue;
        }
        int takes = strcmp(a, "--test") == 0 ? 2 : 1;
        if (i + takes >= argc) usage_error("%s: needs a value", a);
        const char *v = argv[i + 1];
        if (strcmp(a, "--test") == 0) test_images = v, test_labels = argv[i + 2];
        else if (strcmp(a, "--print-state") == 0) print_state = v;
        else if (strcmp(a, "--strategy") == 0) o.strategy = parse_choice(a, v, "cwr", "ar1");
        else if (strcmp(a, "--epochs") == 0) o.epochs = parse_u32(a, v);
        else if (strcmp(a, "--batch-size") == 0) o.batch_size = parse_u32(a, v);
        else if (strcmp(a, "--replay-size") == 0) o.replay_size = parse_u32(a, v);
        else if (strcmp(a, "--replay-batch") == 0) o.replay_batch = parse_u32(a, v);
        else if (strcmp(a, "--replay-storage") == 0) o.replay_storage = parse_choice(a, v, "bits", "float32");
        else if (strcmp(a, "--replay-update") == 0) o.replay_update = parse_choice(a, v, "balanced", "ar1");
        else if (strcmp(a, "--replay-mix") == 0) o.replay_mix = parse_choice(a, v, "fixed", "proportional");
        else if (strcmp(a, "--q-f") == 0) o.q_f = parse_u32(a, v);
        else if (strcmp(a, "--q-b") == 0) o.q_b = parse_u32(a, v);
        else if (strcmp(a, "--rounding") == 0) o.rounding = parse_choice(a, v, "nearest", "stochastic");
        else if (strcmp(a, "--max-patterns") == 0) o.max_patterns = parse_u32(a, v), max_given = 1;
        else if (strcmp(a, "--lr") == 0) {
            char *end;
            errno = 0;
            o.lr = strtod(v, &end);
            if (!*v || *end || errno || !(o.lr > 0.0) || !isfinite(o.lr)) usage_error("--lr %s: a positive number", v);
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            long long s = strtoll(v, &end, 10);
            if (!*v || *end || errno) usage_error("--seed %s: a whole number (64-bit)", v);
            o.seed = (int64_t)s;
        } else
            usage_error("unknown option %s", a);
        i += takes;
    }
    if (!pos[1]) usage_error("%s", "give a model file and a state file");
    if (n_files % 2) usage_error("%s: an images file without its labels file", exp_files[n_files - 1]);
    if (n_files == 0 && !print_state) usage_error("%s", "no experience to learn (give IMAGES.idx LABELS.idx pairs)");
    const char *model_path = pos[0], *state_path = pos[1];
    size_t n_exp = n_files / 2;

    /* the model: its input and classes (a model set up once in a scratch arena), then every input file checked */
    size_t blob_size, scratch_bytes;
    unsigned char *blob = read_model(model_path, &blob_size);
    bnn_error err;
    bnn_model *scratch_model;
    bnn_info info;
    if (bnn_arena_size(blob, blob_size, &scratch_bytes, &err) != BNN_OK) die(EXIT_LIBRARY, "%s: %s", model_path, err.message);
    void *scratch = malloc(scratch_bytes);
    if (!scratch) die(EXIT_LIBRARY, "%s: out of memory", model_path);
    if (bnn_init(blob, blob_size, scratch, scratch_bytes, &scratch_model, &err) != BNN_OK)
        die(EXIT_LIBRARY, "%s: %s", model_path, err.message);
    bnn_get_info(scratch_model, &info);
    free(scratch);
    const size_t image_bytes = (size_t)info.height * info.width * info.channels;
    idx_set *sets = calloc(n_exp + 1, sizeof *sets), test = {0};
    if (!sets) die(EXIT_LIBRARY, "out of memory");
    size_t largest = 0;
    for (size_t k = 0; k < n_exp; k++) {
        check_set(exp_files[2 * k], exp_files[2 * k + 1], &info, &sets[k]);
        if (sets[k].n > largest) largest = sets[k].n;
    }
    if (test_images) check_set(test_images, test_labels, &info, &test);
    if (!max_given && largest) {
        if (largest > UINT32_MAX) die(EXIT_INPUT, "%s: more than 2^32 images", sets[0].images_path);
        o.max_patterns = (uint32_t)largest;
    }
    for (size_t k = 0; k < n_exp; k++)
        if (sets[k].n > o.max_patterns)
            die(EXIT_INPUT, "%s: %zu images; --max-patterns %u", sets[k].images_path, sets[k].n, (unsigned)o.max_patterns);

    /* STATE (and --print-state's FILE) may not be an input: refused before anything is written */
    struct stat st_state, sb;
    int state_exists = stat(state_path, &st_state) == 0;
    const char *inputs[4] = {model_path, test_images, test_labels, NULL};
    for (size_t k = 0; k < 2 * n_exp + 3; k++) {
        const char *in = k < 3 ? inputs[k] : exp_files[k - 3];
        if (!in || stat(in, &sb) != 0) continue;
        if (state_exists && sb.st_dev == st_state.st_dev && sb.st_ino == st_state.st_ino)
            die(EXIT_INPUT, "%s: the state file is %s, an input (%s): give another STATE", state_path, in,
                k == 0 ? "the model file itself" : "a data file");
        struct stat sp;
        if (print_state && stat(print_state, &sp) == 0 && sb.st_dev == sp.st_dev && sb.st_ino == sp.st_ino)
            die(EXIT_INPUT, "%s: --print-state would overwrite an input (%s)", print_state, in);
    }
    if (print_state && state_exists && stat(print_state, &sb) == 0 && sb.st_dev == st_state.st_dev
        && sb.st_ino == st_state.st_ino)
        die(EXIT_INPUT, "%s: --print-state would overwrite the state file", print_state);
    if (state_exists && !S_ISREG(st_state.st_mode)) die(EXIT_INPUT, "%s: not a regular file", state_path);

    /* the learner in one arena */
    bnn_learner_memory mem;
    if (bnn_learner_arena_size(blob, blob_size, &o, &mem, &err) != BNN_OK) die(EXIT_LIBRARY, "%s: %s", model_path, err.message);
    void *arena = malloc(mem.total);
    bnn_learner *L;
    if (!arena) die(EXIT_LIBRARY, "out of memory (an arena of %zu bytes)", mem.total);
    if (bnn_learner_init(blob, blob_size, &o, arena, mem.total, &L, &err) != BNN_OK)
        die(EXIT_LIBRARY, "%s: %s", model_path, err.message);
    printf("model %s: %ux%ux%u images, %u classes; arena %zu B: model %zu, minibatch %zu, head step %zu, replay %zu, "
           "state %zu, indices %zu (+ alignment)\n",
           model_path, (unsigned)info.height, (unsigned)info.width, (unsigned)info.channels, (unsigned)info.classes,
           mem.total, mem.model, mem.minibatch, mem.head_step, mem.replay, mem.state, mem.indices);

    /* the saved state, if any */
    file_storage fs = {-1, BNN_SLOT_HEADER_BYTES + bnn_learner_state_bytes(L), 0};
    bnn_storage storage = {&fs, fs.slot_bytes, file_read, file_write, file_flush};
    if (state_exists) {
        fs.fd = open(state_path, O_RDONLY);
        if (fs.fd < 0) die(EXIT_LIBRARY, "%s: cannot read the state file (%s)", state_path, strerror(errno));
        bnn_status s = bnn_learner_load(L, &storage, NULL, 0, NULL, &err);
        if (s == BNN_ERR_NO_STATE) {
            /* nothing complete: a first save that never finished leaves both headers unwritten (zeros); anything
             * else is not this learner's state, or a damaged one, and is left as it is */
            unsigned char h[2][BNN_SLOT_HEADER_BYTES];
            if (file_read(&fs, 0, 0, h[0], sizeof h[0]) || file_read(&fs, 1, 0, h[1], sizeof h[1]))
                die(EXIT_LIBRARY, "%s: cannot read the state file (%s)", state_path, strerror(fs.error));
            for (size_t i = 0; i < sizeof h; i++)
                if (h[i / BNN_SLOT_HEADER_BYTES][i % BNN_SLOT_HEADER_BYTES])
                    die(EXIT_LIBRARY, "%s: no complete learner state of these settings in it (damaged, or another "
                                      "file); it is left as it is", state_path);
        } else if (s != BNN_OK) {
            if (s == BNN_ERR_STORAGE) storage_error(state_path, &fs, &err);
            die(EXIT_LIBRARY, "%s: %s (the file is left as it is)", state_path, err.message);
        }
        close(fs.fd);
        fs.fd = -1;
    }
    uint32_t done = bnn_learner_experiences(L);
    if (done > n_exp && n_exp > 0)
        die(EXIT_LIBRARY, "%s: the saved learner has consumed %u experiences, only %zu are given: give another STATE "
                          "to start afresh", state_path, (unsigned)done, n_exp);
    if (n_exp > 0) {
        if (done == n_exp) printf("%s: all %zu experiences learned already\n", state_path, n_exp);
        else if (done) printf("%s: resuming after experience %u\n", state_path, (unsigned)(done - 1));
        else printf("%s: no saved state, starting afresh\n", state_path);
        fflush(stdout);
    }

    /* the test set, in memory for every experience's accuracy */
    uint8_t *test_x = NULL;
    int32_t *pred = NULL;
    if (test_images && done < n_exp) {
        test_x = read_images(&test, image_bytes);
        pred = malloc(test.n * sizeof(int32_t));
        if (!pred) die(EXIT_LIBRARY, "out of memory");
    }

    for (size_t k = done; k < n_exp; k++) {
        idx_set *e = &sets[k];
        uint8_t *x = read_images(e, image_bytes);
        bnn_arrays arrays = {x, e->labels, image_bytes};
        bnn_experience exp = BNN_EXPERIENCE_OF_ARRAYS(&arrays, e->n);
        bnn_learn_report report;
        if (verbose) printf("experience %zu: learning\n", k), fflush(stdout);
        double t0 = now();
        if (bnn_learner_learn(L, &exp, &report, &err) != BNN_OK)
            die(EXIT_LIBRARY, "%s: experience %zu: %s", e->images_path, k, err.message);
        double seconds = now() - t0;
        if (verbose) printf("experience %zu: saving\n", k), fflush(stdout);
        if (fs.fd < 0) {
            fs.fd = open(state_path, O_RDWR | O_CREAT, 0644);
            if (fs.fd < 0) die(EXIT_LIBRARY, "%s: cannot write the state file (%s)", state_path, strerror(errno));
        }
        if (bnn_learner_save(L, &storage, NULL, 0, &err) != BNN_OK) storage_error(state_path, &fs, &err);
        if (verbose) printf("experience %zu: saved\n", k), fflush(stdout);
        printf("experience %u: %u patterns, %u replayed per step, %u steps, mean loss %.4f", (unsigned)report.experience,
               (unsigned)report.patterns, (unsigned)report.replayed_per_step, (unsigned)report.steps, report.mean_loss);
        if (test_x) {
            if (bnn_learner_predict(L, test_x, test.n, pred, &err) != BNN_OK)
                die(EXIT_LIBRARY, "%s: %s", test.images_path, err.message);
            size_t right = 0;
            for (size_t i = 0; i < test.n; i++) right += pred[i] == test.labels[i];
            printf(", test accuracy %.4f (%zu/%zu)", (double)right / (double)test.n, right, test.n);
        }
        printf(", %.3f s\n", seconds);
        fflush(stdout);
        free(x);
    }
    if (fs.fd >= 0) close(fs.fd);

    if (print_state) {
        /* the newest complete state's payload, as bnn_state_load reads it */
        size_t cap = bnn_learner_state_bytes(L), size = 0;
        uint64_t seq = 0;
        unsigned char *buf = malloc(cap);
        if (!buf) die(EXIT_LIBRARY, "out of memory");
        fs.fd = open(state_path, O_RDONLY);
        if (fs.fd < 0 && errno != ENOENT) die(EXIT_LIBRARY, "%s: cannot read (%s)", state_path, strerror(errno));
        bnn_status s = fs.fd < 0 ? BNN_ERR_NO_STATE : bnn_state_load(&storage, buf, cap, &size, &seq, &err);
        if (s == BNN_ERR_NO_STATE) {
            printf("%s: no state saved yet; %s not written\n", state_path, print_state);
            fflush(stdout);
            exit(EXIT_NO_STATE); /* as die(): what is allocated goes with the process */
        }
        if (s != BNN_OK) storage_error(state_path, &fs, &err);
        close(fs.fd);
        /* FILE atomically: a temporary file beside it, fsync'd, renamed over it */
        char tmp[4096];
        if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp%ld", print_state, (long)getpid()) >= sizeof tmp)
            die(EXIT_INPUT, "%s: path too long", print_state);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write_all(fd, buf, size, 0) != 0 || fsync(fd) != 0 || close(fd) != 0 || rename(tmp, print_state) != 0) {
            int e = errno;
            unlink(tmp);
            die(EXIT_LIBRARY, "%s: cannot write (%s)", print_state, strerror(e));
        }
        printf("%s: state %" PRIu64 " (%zu bytes, %u experiences) written to %s\n", state_path, seq, size,
               (unsigned)(size >= 48 ? (uint32_t)buf[44] | (uint32_t)buf[45] << 8 | (uint32_t)buf[46] << 16
                                           | (uint32_t)buf[47] << 24 : 0),
               print_state);
        free(buf);
    }
    for (size_t k = 0; k < n_exp; k++) free(sets[k].labels);
    free(sets);
    free(test.labels);
    free(test_x);
    free(pred);
    free(arena);
    free(blob);
    free(exp_files);
    return 0;
}
