/*
 * bench_learner.c -- the C learner (bnn_learner.h) on experiences in raw files: its arena, its peak RSS, the time of
 * its learning step by part, and a fixed workload for an instruction counter (benchmarks/clearner.py runs it on the
 * host, `make -C runtime icount-learner` under qemu-aarch64 and callgrind).
 *
 *   bench_learner MODEL.bnn [options] [--load STATE] [--learn IMAGES,LABELS[,N]]... [--steps IMAGES,LABELS,INDEX,K]
 *                 [--save STATE]
 *
 * An experience is two raw files: IMAGES, n x H x W x C uint8 (the model's input), and LABELS, n int32
 * little-endian. Its images are read through the experience's callback with pread(2), one image when the learner
 * asks for it (as a device reads its storage; no image array is held), the labels held in memory (4 bytes an image);
 * --in-memory reads the images into memory first.
 *
 *   --learn IMAGES,LABELS[,N]   bnn_learner_learn on the first N images (default all); in the order given
 *   --steps IMAGES,LABELS,INDEX,K   after the --learn ones: K learning steps of the experience, each on the next
 *       batch_size indices of INDEX (uint32 little-endian, a multiple of batch_size of them, used cyclically),
 *       exactly the inner loop of bnn_learner_learn (its images through the frozen part, the replayed patterns
 *       sampled and decoded, the head's integer step), timed by part; K "-": commands from stdin, one number of
 *       steps per line, each answered with one line of per-step times (benchmarks/clearner.py interleaves this
 *       process's steps with the Python learners' that way)
 *   --frozen-only   in --steps: the frozen part alone (the share of the steps' instructions that is inference)
 *   --load / --save STATE   bnn_learner_deserialize / bnn_learner_serialize a state blob (before / after the rest)
 *   --strategy ar1|cwr, --epochs N, --seed S, --replay-size N: the options (bnn_learn_defaults otherwise: the demo's)
 *   --quiet     one line at the end (the path, the state's CRC-32, an FNV-1a of the head's levels), nothing timed:
 *               what an instruction counter runs (its instructions then depend on the workload, not on the clock)
 *
 * The steps replicate bnn_learner_learn's loop with its own static functions: this file includes
 * ../src/bnn_learner.c (link it without that file). Before the first step the experience begins as in
 * bnn_learner_learn (the consolidated rows of its classes, stored at q_b), the generators are copies of the learner's
 * (nothing of its state changes: the steps train a head that is not consolidated).
 *
 * Output (without --quiet): one JSON object per line: "init" (the build path, the arena by buffer, RSS), one per
 * experience learned, one per steps command, and "end" (peak RSS: ru_maxrss and VmHWM, the state's CRC-32).
 */
#define _POSIX_C_SOURCE 200809L
#include "../src/bnn_learner.c"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../tests/read_file.h"
#include "parse_count.h"

#define MAX_LEARN 16

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_learner: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}


/* ---- an experience in raw files ------------------------------------------------------------------------------ */

typedef struct {
    int fd;
    uint8_t *images; /* --in-memory, else NULL */
    int32_t *labels;
    size_t n, image_bytes;
} source;

static int source_read(void *ctx, size_t index, uint8_t *image, uint32_t *label)
{
    const source *s = ctx;
    if (index >= s->n || s->labels[index] < 0) return 1;
    *label = (uint32_t)s->labels[index];
    if (!image) return 0;
    if (s->images) {
        memcpy(image, s->images + index * s->image_bytes, s->image_bytes);
        return 0;
    }
    off_t at = (off_t)(index * s->image_bytes);
    size_t got = 0;
    while (got < s->image_bytes) {
        ssize_t r = pread(s->fd, image + got, s->image_bytes - got, at + (off_t)got);
        if (r <= 0) return 1;
        got += (size_t)r;
    }
    return 0;
}

/* The first `limit` images of the files (0: all of them). */
static void open_source(source *s, const char *images, const char *labels, size_t image_bytes, size_t limit,
                        int in_memory)
{
    size_t lsize;
    unsigned char *lb = read_file(labels, &lsize);
    if (!lb || lsize % 4) die("cannot read the labels (n int32)", labels);
    s->n = lsize / 4, s->image_bytes = image_bytes;
    s->labels = malloc(s->n * sizeof(int32_t) + 1);
    for (size_t i = 0; i < s->n; i++) s->labels[i] = (int32_t)bnn_rd32(lb + 4 * i);
    free(lb);
    s->fd = open(images, O_RDONLY);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) != 0) die("cannot open the images", images);
    if ((size_t)st.st_size != s->n * image_bytes) die("the images file is not n x the model's image bytes", images);
    if (limit > s->n) die("more images asked for than the experience has", images);
    if (limit) s->n = limit;
    s->images = NULL;
    if (in_memory) {
        s->images = malloc(s->n * image_bytes + 1);
        source tmp = *s;
        tmp.images = NULL; /* read through pread */
        for (size_t i = 0; i < s->n; i++) {
            uint32_t label;
            if (!s->images || source_read(&tmp, i, s->images + i * image_bytes, &label)) die("cannot read", images);
        }
    }
}

/* "A,B[,C[,D]]" split in place; returns the number of fields. */
static int split(char *arg, char **f, int max)
{
    int k = 0;
    f[k++] = arg;
    for (char *p = arg; *p && k < max; p++)
        if (*p == ',') *p = '\0', f[k++] = p + 1;
    return k;
}

/* ---- memory ---------------------------------------------------------------------------------------------------- */

/* KiB of a /proc/self/status line (VmRSS, VmHWM); -1 where there is none. */
static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') v = strtol(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

static long maxrss_kib(void)
{
    struct rusage u;
    return getrusage(RUSAGE_SELF, &u) == 0 ? u.ru_maxrss : -1; /* Linux: KiB */
}

/* ---- the steps: bnn_learner_learn's loop, by part ---------------------------------------------------------------- */

typedef struct {
    struct bnn_learner *L;
    const bnn_experience *e;
    const uint32_t *index;
    size_t batches, done;
    uint32_t n_replay;
    draws d;
    bnn_pcg32 *quant;
    int frozen_only, timing;
} stepper;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* As bnn_learner_learn's start: cur, the replay mix, the head's rows of the experience's classes at q_b. */
static void begin_steps(stepper *st, struct bnn_learner *L, const bnn_experience *e, const source *src)
{
    const size_t C = L->classes, F = L->features, CF = C * F;
    uint32_t *cur = L->table + 7 * C;
    memset(cur, 0, C * sizeof(uint32_t));
    for (size_t i = 0; i < src->n; i++) {
        if (src->labels[i] < 0 || (size_t)src->labels[i] >= C) die("a label outside the model's classes", NULL);
        cur[src->labels[i]]++;
    }
    uint32_t m = L->mem_size, b = L->o.batch_size;
    st->n_replay = 0;
    if (L->o.strategy == BNN_STRATEGY_AR1 && m) {
        for (uint32_t i = 0; i < m; i++) cur[L->mem_labels[i]]++;
        if (L->o.replay_mix == BNN_MIX_PROPORTIONAL) {
            double r = rint((double)b * (double)m / ((double)src->n + (double)m));
            st->n_replay = r < (double)(b - 1) ? (uint32_t)r : b - 1;
        } else {
            st->n_replay = L->o.replay_batch;
        }
    }
    if (L->o.replay_mix == BNN_MIX_PROPORTIONAL) die("--steps runs the fixed replay mix (the demo's)", NULL);
    st->L = L, st->e = e, st->done = 0;
    st->d = (draws){L->shuffle, L->replay, L->quant};
    st->quant = L->o.rounding == BNN_ROUND_STOCHASTIC ? &st->d.quant : NULL;
    for (size_t c = 0; c < C; c++) {
        int keep = cur[c] > 0 && L->past[c] > 0;
        for (size_t k = 0; k < F; k++) L->wn[c * F + k] = keep ? L->cw[c * F + k] : 0.0f;
    }
    quantizer qb = {L->o.q_b, st->quant};
    if (quantize_f32(&qb, L->wn, CF, 0, L->w, &L->pw)) die("the head's rows are not finite", NULL);
}

/* One step; ns[0..3]: frozen part, replay sample, head step (the replayed patterns decoded in it), whole. */
static void one_step(stepper *st, uint64_t ns[4])
{
    struct bnn_learner *L = st->L;
    const size_t F = L->features, b = L->o.batch_size;
    const uint32_t *idx = st->index + (st->done % st->batches) * b;
    bnn_error err;
    uint64_t t0 = st->timing ? now_ns() : 0;
    for (size_t j = 0; j < b; j++) {
        if (read_image(L, st->e, idx[j], &L->y[j], &err)) die("step", err.message);
        memcpy(L->h + j * F, bnn_model_features(L->model, L->image), F * sizeof(float));
    }
    uint64_t t1 = st->timing ? now_ns() : 0;
    uint32_t m = L->mem_size, k = 0;
    if (st->n_replay && !st->frozen_only) { /* LatentMemory.sample: min(n_replay, size) distinct slots */
        k = st->n_replay < m ? st->n_replay : m;
        for (uint32_t i = 0; i < m; i++) L->pick[i] = i;
        bnn_pcg32_choice(&st->d.replay, L->pick, m, k);
        for (uint32_t j = 0; j < k; j++) L->y[b + j] = (uint32_t)L->mem_labels[L->pick[j]];
    }
    uint64_t t2 = st->timing ? now_ns() : 0;
    double loss = 0.0; /* the head step reads (decodes) the replayed patterns where it uses them */
    if (!st->frozen_only && head_step(L, b, k, st->quant, &loss, &err)) die("step", err.message);
    uint64_t t3 = st->timing ? now_ns() : 0;
    st->done++;
    ns[0] = t1 - t0, ns[1] = t2 - t1, ns[2] = t3 - t2, ns[3] = t3 - t0;
}

static void run_steps(stepper *st, long k, int quiet)
{
    uint64_t ns[4];
    if (!quiet) printf("{\"event\": \"steps\", \"steps\": %ld, \"ns\": [", k);
    for (long i = 0; i < k; i++) {
        one_step(st, ns);
        if (!quiet)
            printf("%s[%llu, %llu, %llu, %llu]", i ? ", " : "", (unsigned long long)ns[0], (unsigned long long)ns[1],
                   (unsigned long long)ns[2], (unsigned long long)ns[3]);
    }
    if (!quiet) printf("]}\n");
    fflush(stdout);
}

/* ---- main ------------------------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.bnn [--strategy ar1|cwr] [--epochs N] [--seed S] [--replay-size N] "
                        "[--in-memory] [--quiet] [--load STATE] [--learn IMAGES,LABELS[,N]]... "
                        "[--steps IMAGES,LABELS,INDEX,K|-] [--frozen-only] [--save STATE]\n", argv[0]);
        return 2;
    }
    bnn_learn_options o;
    bnn_learn_defaults(&o);
    char *learn[MAX_LEARN], *steps = NULL;
    const char *load = NULL, *save = NULL;
    int n_learn = 0, in_memory = 0, quiet = 0, frozen_only = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--in-memory")) in_memory = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--frozen-only")) frozen_only = 1;
        else if (!strcmp(a, "--strategy") && more) {
            a = argv[++i];
            if (!strcmp(a, "ar1")) o.strategy = BNN_STRATEGY_AR1;
            else if (!strcmp(a, "cwr")) o.strategy = BNN_STRATEGY_CWR;
            else die("--strategy: ar1 or cwr", a);
        } else if ((!strcmp(a, "--epochs") || !strcmp(a, "--replay-size") || !strcmp(a, "--seed")) && more) {
            long v = parse_count(argv[++i]);
            if (v < 0) die("not a number", argv[i]);
            if (!strcmp(a, "--epochs")) o.epochs = (uint32_t)v;
            else if (!strcmp(a, "--replay-size")) o.replay_size = (uint32_t)v;
            else o.seed = (int64_t)v;
        }
        else if (!strcmp(a, "--load") && more) load = argv[++i];
        else if (!strcmp(a, "--save") && more) save = argv[++i];
        else if (!strcmp(a, "--learn") && more && n_learn < MAX_LEARN) learn[n_learn++] = argv[++i];
        else if (!strcmp(a, "--steps") && more) steps = argv[++i];
        else die("unknown or incomplete option", a);
    }

    size_t blob_size;
    unsigned char *blob = read_file(argv[1], &blob_size);
    if (!blob) die("cannot read the model", argv[1]);
    long rss_before = quiet ? 0 : status_kib("VmRSS");
    bnn_error err;
    bnn_learner_memory mem;
    if (bnn_learner_arena_size(blob, blob_size, &o, &mem, &err)) die(argv[1], err.message);
    void *arena = malloc(mem.total);
    bnn_learner *L;
    if (!arena) die("no memory for the arena", NULL);
    if (bnn_learner_init(blob, blob_size, &o, arena, mem.total, &L, &err)) die(argv[1], err.message);
    if (load) {
        size_t size;
        unsigned char *state = read_file(load, &size);
        if (!state) die("cannot read the state", load);
        if (bnn_learner_deserialize(L, state, size, NULL, 0, NULL, &err)) die(load, err.message);
        free(state);
    }
    if (!quiet) {
        printf("{\"event\": \"init\", \"path\": \"%s\", \"model_bytes\": %zu, \"arena\": {\"model\": %zu, "
               "\"minibatch\": %zu, \"head_step\": %zu, \"replay\": %zu, \"state\": %zu, \"indices\": %zu, "
               "\"total\": %zu}, \"rss_before_init_kib\": %ld, \"rss_after_init_kib\": %ld, "
               "\"maxrss_after_init_kib\": %ld}\n",
               bnn_build_path(), blob_size, mem.model, mem.minibatch, mem.head_step, mem.replay, mem.state,
               mem.indices, mem.total, rss_before, status_kib("VmRSS"), maxrss_kib());
        fflush(stdout);
    }

    for (int i = 0; i < n_learn; i++) {
        char *f[3];
        int k = split(learn[i], f, 3);
        if (k < 2) die("--learn IMAGES,LABELS[,N]", learn[i]);
        long n = k == 3 ? parse_count(f[2]) : 0;
        if (n < 0 || (k == 3 && n == 0)) die("--learn: N must be 1 .. the experience's images", f[2]);
        source src;
        open_source(&src, f[0], f[1], L->image_bytes, (size_t)n, in_memory);
        bnn_experience e = {&src, src.n, source_read};
        bnn_learn_report r;
        uint64_t t0 = quiet ? 0 : now_ns();
        if (bnn_learner_learn(L, &e, &r, &err)) die("bnn_learner_learn", err.message);
        uint64_t t1 = quiet ? 0 : now_ns();
        if (!quiet) {
            printf("{\"event\": \"learn\", \"experience\": %u, \"patterns\": %u, \"replayed_per_step\": %u, "
                   "\"steps\": %u, \"mean_loss\": %.9g, \"seconds\": %.9f, \"memory\": %u, \"maxrss_kib\": %ld}\n",
                   r.experience, r.patterns, r.replayed_per_step, r.steps, r.mean_loss, (double)(t1 - t0) * 1e-9,
                   L->mem_size, maxrss_kib());
            fflush(stdout);
        }
        close(src.fd);
        free(src.images);
        free(src.labels);
    }

    if (steps) {
        char *f[4];
        if (split(steps, f, 4) != 4) die("--steps IMAGES,LABELS,INDEX,K", steps);
        source src;
        open_source(&src, f[0], f[1], L->image_bytes, 0, in_memory);
        size_t isize;
        unsigned char *ib = read_file(f[2], &isize);
        size_t b = L->o.batch_size;
        if (!ib || isize % (4 * b) || isize == 0) die("the index file is not a multiple of batch_size uint32", f[2]);
        uint32_t *index = malloc(isize);
        for (size_t i = 0; i < isize / 4; i++) {
            index[i] = bnn_rd32(ib + 4 * i);
            if (index[i] >= src.n) die("an index outside the experience", f[2]);
        }
        free(ib);
        bnn_experience e = {&src, src.n, source_read};
        stepper st;
        begin_steps(&st, L, &e, &src);
        st.index = index, st.batches = isize / 4 / b, st.frozen_only = frozen_only, st.timing = !quiet;
        if (!quiet) {
            printf("{\"event\": \"steps_begin\", \"new_per_step\": %zu, \"replayed_per_step\": %u, \"memory\": %u, "
                   "\"batches\": %zu, \"frozen_only\": %d}\n", b, frozen_only ? 0 : st.n_replay, L->mem_size,
                   st.batches, frozen_only);
            fflush(stdout);
        }
        if (strcmp(f[3], "-") == 0) {
            char line[64];
            while (fgets(line, sizeof line, stdin)) {
                line[strcspn(line, "\r\n")] = '\0';
                long k = parse_count(line);
                if (k < 0) die("stdin: a number of steps per line", line);
                run_steps(&st, k, quiet);
            }
        } else {
            long k = parse_count(f[3]);
            if (k < 0) die("--steps: K must be a number or -", f[3]);
            run_steps(&st, k, quiet);
        }
        close(src.fd);
        free(src.images);
        free(src.labels);
        free(index);
    }

    size_t cap = bnn_learner_state_bytes(L), size = 0;
    unsigned char *blobout = malloc(cap);
    if (!blobout || bnn_learner_serialize(L, NULL, 0, blobout, cap, &size, &err)) die("serialize", err.message);
    if (save) {
        FILE *fo = fopen(save, "wb");
        if (!fo || fwrite(blobout, 1, size, fo) != size || fclose(fo) != 0) die("cannot write the state", save);
    }
    uint64_t h = 1469598103934665603u; /* FNV-1a of the head's stored levels (what --steps trained) */
    const unsigned char *w = (const unsigned char *)L->w;
    for (size_t i = 0; i < L->classes * L->features * sizeof(uint16_t); i++) h = (h ^ w[i]) * 1099511628211u;
    uint32_t crc = bnn_rd32(blobout + size - 4);
    if (quiet)
        printf("%s experiences %u state crc32 %08x head fnv1a %016llx\n", bnn_build_path(), L->experiences,
               (unsigned)crc, (unsigned long long)h);
    else
        printf("{\"event\": \"end\", \"experiences\": %u, \"state_bytes\": %zu, \"state_crc32\": \"%08x\", "
               "\"head_fnv1a\": \"%016llx\", \"maxrss_kib\": %ld, \"vmhwm_kib\": %ld, \"vmrss_kib\": %ld}\n",
               L->experiences, size, (unsigned)crc, (unsigned long long)h, maxrss_kib(), status_kib("VmHWM"),
               status_kib("VmRSS"));
    free(blobout);
    free(arena);
    free(blob);
    return 0;
}
