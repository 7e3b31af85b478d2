/*
 * cnn_digits.c - train a small convolutional network on the UCI handwritten digits with libautograd.
 *
 * The data: examples/data/digits.csv (1797 grey-scale 8x8 images of the digits 0-9, pixel values
 * 0..16 then the label per row; see examples/digits.c), pixels scaled to [0, 1], in float32.
 *
 * The model (NCHW, float32), 6,106 parameters:
 *     x (N, 1, 8, 8)
 *     -> conv 1->16, 3x3, padding 1 -> relu -> max pool 2   (N, 16, 4, 4)
 *     -> conv 16->32, 3x3, padding 1 -> relu -> max pool 2  (N, 32, 2, 2)
 *     -> flatten (N, 128) -> linear 128->10                  logits (N, 10)
 * trained on the mean softmax cross-entropy (ag_cross_entropy_labels: the labels are an int64
 * tensor) by AdamW in batches of 64, its learning rate following linear warm-up then cosine decay
 * (ag_lr_warmup_cosine), set before every step.
 *
 * Everything random is seeded, so every run prints the same numbers, whatever the thread count
 * (another CPU may get other OpenBLAS kernels, whose roundings differ: with the Haswell, SkylakeX,
 * Sandybridge, Nehalem and Zen kernels the final weights differ, the accuracy stays 358 of 360):
 *   - the train/test split is examples/digits.c's (a SplitMix64 Fisher-Yates shuffle seeded with
 *     SPLIT_SEED; the first 360 shuffled samples test, the other 1437 train);
 *   - the weights: ag_tensor_init (Kaiming uniform, torch.nn.init's fans) with fixed seeds; the
 *     biases start at zero;
 *   - the batch order: an ag_generator seeded with ORDER_SEED draws a permutation of the training
 *     set each epoch (ag_randperm); an epoch is its first 22 full batches of 64 (1408 samples: the
 *     29 left over differ from epoch to epoch), so every step has the same shape.
 * examples/cnn_digits_torch.py repeats this training in PyTorch (same split, initial weights,
 * batch order and schedule) and checks that its test accuracy lands within 1 point.
 *
 * Usage: cnn_digits [--replay] [--threads N] [--steps N] [--svg PATH] [path/to/digits.csv]
 *   (default CSV examples/data/digits.csv relative to the current directory; default picture
 *   cnn_digits.svg in the current directory; --threads: ag_set_num_threads). Prints one line per
 *   epoch (mean training loss, train and test accuracy, ms per training step), the step's time (the
 *   median over epochs 2 on), the final accuracy, and the SVG's path; exits with status 1 if the
 *   test accuracy is below 98.5% (355 of 360), on a leaked handle, or on any error. --steps N
 *   (default 660: 30 epochs) shortens the run (the schedule is fitted to it; the last epoch may be
 *   partial) and skips the accuracy target: for the valgrind run of scripts/c-tests.sh.
 *
 * Training modes. The default calls the step function, train_step (forward, loss, zero_grad,
 * backward, AdamW step), eagerly on every batch. --replay captures train_step once (ag_capture:
 * that capture is the first step) and replays it on every later batch (ag_function_call_into,
 * the batch written into the same input tensors with ag_tensor_set_data: no handle is made per
 * step). Both print a hash of the final weights' bits ("final weights: fnv1a64 ..."): a replay
 * runs the same arithmetic in the same order as the eager step, so the hashes are equal
 * (scripts/c-tests.sh checks it).
 */
#define _POSIX_C_SOURCE 199309L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd.h"

/* ---- the experiment's constants (examples/cnn_digits_torch.py uses the same) ---- */
enum {
    N_SAMPLES = 1797,
    N_PIXELS = 64,         /* 8 x 8 */
    SIDE = 8,
    N_CLASSES = 10,
    N_TEST = 360,          /* the remaining 1437 samples train the model */
    C1 = 16,               /* channels after the first and second convolutions */
    C2 = 32,
    FLAT = C2 * 2 * 2,     /* 128 features after the second pool */
    BATCH = 64,
    EPOCHS = 30,
    WARMUP_STEPS = 22      /* one epoch */
};
static const double LEARNING_RATE = 0.01;    /* the AdamW peak learning rate */
static const double MIN_LEARNING_RATE = 0.0; /* where the cosine ends */
static const double WEIGHT_DECAY = 1e-4;
static const int TARGET_CORRECT = 355;       /* of 360: 98.6%, the 98.5% target rounded up */
static const uint64_t SPLIT_SEED = 2024;     /* the train/test split (digits.c's) */
static const uint64_t ORDER_SEED = 7;        /* the batch order (an ag_generator) */
static const uint64_t CONV1_SEED = 1;        /* ag_tensor_init seeds of the three weights */
static const uint64_t CONV2_SEED = 2;
static const uint64_t FC_SEED = 3;

/* ---- error handling: every library call is checked ---- */

/* Stops the program with the library's message if a call fails. */
#define CHECK(call)                                                                               \
    do {                                                                                          \
        ag_status check_status_ = (call);                                                         \
        if (check_status_ != AG_OK) {                                                             \
            fprintf(stderr, "cnn_digits: %s failed: %s: %s\n", #call, ag_status_name(check_status_), \
                    ag_last_error());                                                             \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (p == NULL) {
        fprintf(stderr, "cnn_digits: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- the split: digits.c's SplitMix64 and Fisher-Yates shuffle, for the same test set ---- */

typedef struct {
    uint64_t state;
} splitmix64;

static uint64_t splitmix64_next(splitmix64 *g) {
    uint64_t z = (g->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void shuffle(int64_t *a, int64_t n, splitmix64 *g) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64_next(g) % (uint64_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- the data ---- */

/* Reads N_SAMPLES rows of the CSV into pixels (scaled to [0, 1]) and labels. */
static void load_digits(const char *path, float *pixels, int64_t *labels) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr,
                "cnn_digits: cannot open %s (run from the repository root, or pass the CSV's path as the last "
                "argument)\n",
                path);
        exit(1);
    }
    char line[1024];
    int64_t row = 0;
    long lineno = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n' || line[0] == '\r') continue;
        if (row == N_SAMPLES) {
            fprintf(stderr, "cnn_digits: %s:%ld: more than %d samples\n", path, lineno, N_SAMPLES);
            exit(1);
        }
        char *p = line;
        for (int k = 0; k <= N_PIXELS; k++) {
            char *end;
            long v = strtol(p, &end, 10);
            int last = k == N_PIXELS;
            if (end == p || (!last && *end != ',') || v < 0 || v > (last ? N_CLASSES - 1 : 16)) {
                fprintf(stderr, "cnn_digits: %s:%ld: expected %d pixel values 0..16 and a label 0..9\n", path,
                        lineno, N_PIXELS);
                exit(1);
            }
            if (last)
                labels[row] = v;
            else
                pixels[row * N_PIXELS + k] = (float)v / 16.0f;
            p = end + 1;
        }
        row++;
    }
    fclose(f);
    if (row != N_SAMPLES) {
        fprintf(stderr, "cnn_digits: %s holds %lld samples, expected %d\n", path, (long long)row, N_SAMPLES);
        exit(1);
    }
}

/* Copies the rows idx[0..n-1] of pixels/labels into x (n x 64) and y (n). */
static void gather_rows(float *x, int64_t *y, const float *pixels, const int64_t *labels, const int64_t *idx,
                        int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        memcpy(x + i * N_PIXELS, pixels + idx[i] * N_PIXELS, N_PIXELS * sizeof(float));
        y[i] = labels[idx[i]];
    }
}

/* ---- the model ---- */

enum { N_PARAMS = 6 };

typedef struct {
    ag_tensor w1, b1; /* (16, 1, 3, 3), (16) */
    ag_tensor w2, b2; /* (32, 16, 3, 3), (32) */
    ag_tensor w3, b3; /* (10, 128), (10) */
} cnn;

/* A trainable float32 leaf: a Kaiming-uniform weight, or a zero bias (seed ignored). */
static ag_tensor parameter(const int64_t *shape, int64_t ndim, int is_weight, uint64_t seed) {
    ag_tensor t;
    if (is_weight)
        CHECK(ag_tensor_init(&t, shape, ndim, AG_INIT_KAIMING_UNIFORM, seed, AG_FLOAT32));
    else
        CHECK(ag_tensor_zeros(&t, shape, ndim, AG_FLOAT32));
    CHECK(ag_tensor_set_requires_grad(t, true));
    return t;
}

static cnn cnn_new(void) {
    const int64_t w1[4] = {C1, 1, 3, 3}, b1[1] = {C1};
    const int64_t w2[4] = {C2, C1, 3, 3}, b2[1] = {C2};
    const int64_t w3[2] = {N_CLASSES, FLAT}, b3[1] = {N_CLASSES};
    cnn m = {parameter(w1, 4, 1, CONV1_SEED), parameter(b1, 1, 0, 0), parameter(w2, 4, 1, CONV2_SEED),
             parameter(b2, 1, 0, 0),          parameter(w3, 2, 1, FC_SEED), parameter(b3, 1, 0, 0)};
    return m;
}

static void cnn_params(ag_tensor out[N_PARAMS], const cnn *m) {
    out[0] = m->w1, out[1] = m->b1, out[2] = m->w2, out[3] = m->b2, out[4] = m->w3, out[5] = m->b3;
}

/* conv 3x3 (stride 1, padding 1) -> relu -> max pool 2; frees its intermediates (the graph keeps
 * what backward needs). */
static ag_tensor conv_block(ag_tensor x, ag_tensor w, ag_tensor b) {
    ag_tensor conv, act, pooled;
    CHECK(ag_conv2d(&conv, x, w, b, 1, 1, 1, 1, 1, 1, 1));
    CHECK(ag_relu(&act, conv));
    CHECK(ag_max_pool2d(&pooled, act, 2, 2, 0, 0, 0, 0));
    CHECK(ag_tensor_free(conv));
    CHECK(ag_tensor_free(act));
    return pooled;
}

/* The logits (n, 10) for the images x (n, 1, 8, 8). */
static ag_tensor cnn_forward(const cnn *m, ag_tensor x) {
    ag_tensor h1 = conv_block(x, m->w1, m->b1);
    ag_tensor h2 = conv_block(h1, m->w2, m->b2);
    ag_tensor flat, logits;
    CHECK(ag_reshape(&flat, h2, (const int64_t[]){-1, FLAT}, 2));
    CHECK(ag_linear(&logits, flat, m->w3, m->b3));
    CHECK(ag_tensor_free(h1));
    CHECK(ag_tensor_free(h2));
    CHECK(ag_tensor_free(flat));
    return logits;
}

static void cnn_free(cnn *m) {
    ag_tensor ps[N_PARAMS];
    cnn_params(ps, m);
    for (int k = 0; k < N_PARAMS; k++) CHECK(ag_tensor_free(ps[k]));
}

/* How many of the images x (n, 1, 8, 8) the model classifies as their int64 labels y (n): argmax
 * of the logits, compared with the labels, counted by ag_sum (an int64 count), with no graph. */
static int64_t count_correct(const cnn *m, ag_tensor x, ag_tensor y) {
    bool previous;
    CHECK(ag_set_grad_enabled(&previous, false));
    ag_tensor logits = cnn_forward(m, x), predicted, hits, count;
    CHECK(ag_argmax(&predicted, logits, 1, false));
    CHECK(ag_eq(&hits, predicted, y));
    CHECK(ag_sum(&count, hits, NULL, 0, false));
    double correct;
    CHECK(ag_tensor_item(&correct, count));
    CHECK(ag_tensor_free(count));
    CHECK(ag_tensor_free(hits));
    CHECK(ag_tensor_free(predicted));
    CHECK(ag_tensor_free(logits));
    CHECK(ag_set_grad_enabled(NULL, previous));
    return (int64_t)correct;
}

/* ---- the training step ---- */

/* One training step on a batch x (n, 1, 8, 8) with int64 labels y (n): the mean cross-entropy,
 * zero_grad, backward, an AdamW step. Returns the loss (a 0-d float32 tensor). */
static ag_tensor train_step(const cnn *m, ag_optimizer opt, ag_tensor x, ag_tensor y) {
    ag_tensor logits = cnn_forward(m, x), loss;
    CHECK(ag_cross_entropy_labels(&loss, logits, y));
    CHECK(ag_optimizer_zero_grad(opt));
    CHECK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CHECK(ag_optimizer_step(opt));
    CHECK(ag_tensor_free(logits));
    return loss;
}

/* What the capture function needs, and the loss of the step it ran. */
typedef struct {
    const cnn *m;
    ag_optimizer opt;
    double loss;
} step_ctx;

/* The capture function: train_step on the placeholders (x, y); its one output is the loss. */
static int32_t capture_step(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                            void *user_data) {
    step_ctx *c = user_data;
    if (noutputs != 1 || ninputs != 2) return 1;
    outputs[0] = train_step(c->m, c->opt, inputs[0], inputs[1]);
    return ag_tensor_item(&c->loss, outputs[0]) == AG_OK ? 0 : 1;
}

/* FNV-1a over the bytes of the parameters (float32, row-major, in cnn_params' order). */
static uint64_t weights_hash(const cnn *m) {
    ag_tensor ps[N_PARAMS];
    cnn_params(ps, m);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int k = 0; k < N_PARAMS; k++) {
        int64_t n;
        const unsigned char *p;
        CHECK(ag_tensor_numel(&n, ps[k]));
        CHECK(ag_tensor_data_ptr((const void **)&p, ps[k]));
        for (int64_t i = 0; i < n * (int64_t)sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return h;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the picture ---- */

/* An SVG of the training loss per step (thin), its mean per epoch (thick), on a log scale at the
 * left, and the test accuracy per epoch at the right. Returns 0, or 1 if the file cannot be written. */
static int write_svg(const char *path, const double *step_loss, int n_steps, const double *epoch_loss,
                     const double *test_acc, int epochs, int steps_per_epoch) {
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    const double W = 760, H = 420, L = 64, R = 64, T = 64, B = 48;
    /* Loss axis: whole decades around the losses seen; accuracy axis: from a whole 5% below
     * the lowest test accuracy to 100%. */
    double lo = step_loss[0], hi = step_loss[0], acc_lo = 100;
    for (int i = 0; i < n_steps; i++) {
        if (step_loss[i] > 0 && step_loss[i] < lo) lo = step_loss[i];
        if (step_loss[i] > hi) hi = step_loss[i];
    }
    for (int e = 0; e < epochs; e++)
        if (100 * test_acc[e] < acc_lo) acc_lo = 100 * test_acc[e];
    int dec_lo = (int)floor(log10(lo)), dec_hi = (int)ceil(log10(hi));
    if (dec_hi <= dec_lo) dec_hi = dec_lo + 1;
    acc_lo = 5 * floor(acc_lo / 5);
    if (acc_lo > 95) acc_lo = 95;
    const double pw = W - L - R, ph = H - T - B;
#define XS(step) (L + (step) / (double)n_steps * pw)
#define XE(epoch) XS(fmin((epoch) * steps_per_epoch, n_steps)) /* the last epoch may be partial */
#define YL(v) (T + (dec_hi - log10(v)) / (double)(dec_hi - dec_lo) * ph)
#define YA(a) (T + (100 - (a)) / (100 - acc_lo) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%g\" y=\"22\" font-size=\"14\">cnn_digits: a CNN trained from C on the 8x8 digits; "
               "test accuracy %.2f%%</text>\n", L, 100 * test_acc[epochs - 1]);
    /* frame, grid and ticks */
    fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#888\"/>\n", L, T, pw, ph);
    for (int d = dec_lo; d <= dec_hi; d++) {
        double y = YL(pow(10, d));
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#eee\"/>", L, y, W - R, y);
        fprintf(f, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">1e%d</text>\n", L - 6, y + 4, d);
    }
    for (double a = acc_lo; a <= 100.001; a += 5)
        fprintf(f, "<text x=\"%g\" y=\"%.1f\" fill=\"#d62728\">%g%%</text>\n", W - R + 6, YA(a) + 4, a);
    for (int e = 0; e * steps_per_epoch <= n_steps; e += 5)
        fprintf(f, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%d</text>\n", XS(e * steps_per_epoch),
                H - B + 18, e);
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">epoch</text>\n", L + pw / 2, H - 8);
    /* the curves */
    fprintf(f, "<polyline fill=\"none\" stroke=\"#aec7e8\" points=\"");
    for (int i = 0; i < n_steps; i++)
        if (step_loss[i] > 0) fprintf(f, "%.1f,%.1f ", XS(i + 0.5), YL(step_loss[i]));
    fprintf(f, "\"/>\n<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
    for (int e = 0; e < epochs; e++)
        if (epoch_loss[e] > 0) fprintf(f, "%.1f,%.1f ", XE(e + 0.5), YL(epoch_loss[e]));
    fprintf(f, "\"/>\n<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
    for (int e = 0; e < epochs; e++) fprintf(f, "%.1f,%.1f ", XE(e + 1), YA(100 * test_acc[e]));
    fprintf(f, "\"/>\n");
    /* legend, in a row under the title */
    const double ly = 44;
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#aec7e8\"/><text x=\"%g\" y=\"%g\">"
               "training loss per step (log scale)</text>\n", L, ly - 4, L + 24, ly - 4, L + 30, ly);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
               "<text x=\"%g\" y=\"%g\">its mean per epoch</text>\n", L + 250, ly - 4, L + 274, ly - 4, L + 280, ly);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#d62728\" stroke-width=\"2\"/>"
               "<text x=\"%g\" y=\"%g\">test accuracy (right axis)</text>\n", L + 420, ly - 4, L + 444, ly - 4,
            L + 450, ly);
    fprintf(f, "</svg>\n");
#undef XS
#undef XE
#undef YL
#undef YA
    return fclose(f) == 0 ? 0 : 1;
}

/* ---- the program ---- */

static void usage(void) {
    fprintf(stderr, "usage: cnn_digits [--replay] [--threads N] [--steps N] [--svg PATH] [path/to/digits.csv]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int replay = 0;
    long threads = 0, steps = EPOCHS * ((N_SAMPLES - N_TEST) / BATCH);
    const char *svg_path = "cnn_digits.svg", *path = "examples/data/digits.csv";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--replay") == 0) {
            replay = 1;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            threads = strtol(argv[++i], &end, 10);
            if (*end != '\0' || threads < 1) usage();
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            char *end;
            steps = strtol(argv[++i], &end, 10);
            if (*end != '\0' || steps < 1 || steps > 100000) usage();
        } else if (strcmp(argv[i], "--svg") == 0 && i + 1 < argc) {
            svg_path = argv[++i];
        } else if (argv[i][0] == '-' || i != argc - 1) {
            usage();
        } else {
            path = argv[i];
        }
    }
    if (threads > 0) CHECK(ag_set_num_threads(threads));
    int64_t nthreads;
    CHECK(ag_num_threads(&nthreads));
    const double start = now_seconds();

    /* The data and digits.c's split. */
    float *pixels = xmalloc(sizeof(float) * N_SAMPLES * N_PIXELS);
    int64_t *labels = xmalloc(sizeof(int64_t) * N_SAMPLES);
    load_digits(path, pixels, labels);
    int64_t perm[N_SAMPLES];
    for (int64_t i = 0; i < N_SAMPLES; i++) perm[i] = i;
    splitmix64 split_rng = {SPLIT_SEED};
    shuffle(perm, N_SAMPLES, &split_rng);
    enum { N_TRAIN = N_SAMPLES - N_TEST, STEPS_PER_EPOCH = N_TRAIN / BATCH };
    const int64_t total_steps = steps;
    const long epochs = (steps + STEPS_PER_EPOCH - 1) / STEPS_PER_EPOCH, full_steps = EPOCHS * STEPS_PER_EPOCH;
    const int64_t warmup_steps = total_steps < WARMUP_STEPS ? total_steps : WARMUP_STEPS;
    float *x_train = xmalloc(sizeof(float) * N_TRAIN * N_PIXELS);
    float *x_test = xmalloc(sizeof(float) * N_TEST * N_PIXELS);
    int64_t *y_train = xmalloc(sizeof(int64_t) * N_TRAIN);
    int64_t *y_test = xmalloc(sizeof(int64_t) * N_TEST);
    gather_rows(x_test, y_test, pixels, labels, perm, N_TEST);
    gather_rows(x_train, y_train, pixels, labels, perm + N_TEST, N_TRAIN);
    free(pixels);
    free(labels);

    /* The whole sets as tensors, for the accuracies. */
    ag_tensor xt_train, yt_train, xt_test, yt_test;
    CHECK(ag_tensor_from_data(&xt_train, x_train, (const int64_t[]){N_TRAIN, 1, SIDE, SIDE}, 4, AG_FLOAT32));
    CHECK(ag_tensor_from_data(&yt_train, y_train, (const int64_t[]){N_TRAIN}, 1, AG_INT64));
    CHECK(ag_tensor_from_data(&xt_test, x_test, (const int64_t[]){N_TEST, 1, SIDE, SIDE}, 4, AG_FLOAT32));
    CHECK(ag_tensor_from_data(&yt_test, y_test, (const int64_t[]){N_TEST}, 1, AG_INT64));

    printf("cnn_digits: %d training and %d test samples from %s; CNN conv3x3(1->%d) relu pool2, conv3x3(%d->%d) "
           "relu pool2, linear %d->10 (float32); AdamW lr %g (warm-up %d steps, cosine), weight decay %g, "
           "batch %d, %lld steps (%d per epoch); %lld thread%s; %s\n",
           N_TRAIN, N_TEST, path, C1, C1, C2, FLAT, LEARNING_RATE, (int)warmup_steps, WEIGHT_DECAY, BATCH,
           (long long)total_steps, STEPS_PER_EPOCH, (long long)nthreads, nthreads == 1 ? "" : "s",
           replay ? "the step captured once and replayed" : "the step run eagerly");

    /* The model and its optimizer: AdamW with torch.optim's defaults but lr and weight decay. */
    cnn model = cnn_new();
    ag_tensor params[N_PARAMS];
    cnn_params(params, &model);
    ag_optimizer opt;
    CHECK(ag_optimizer_adamw(&opt, params, N_PARAMS, LEARNING_RATE, 0.9, 0.999, 1e-8, WEIGHT_DECAY));
    ag_generator order_rng;
    CHECK(ag_generator_new(&order_rng, ORDER_SEED));

    /* The batch buffers, and in replay mode the captured step's inputs and loss. */
    float xb[BATCH * N_PIXELS];
    int64_t yb[BATCH];
    const int64_t xshape[4] = {BATCH, 1, SIDE, SIDE}, yshape[1] = {BATCH};
    ag_function step_fn = AG_NULL_FUNCTION;
    ag_tensor rx = AG_NULL_TENSOR, ry = AG_NULL_TENSOR, rloss = AG_NULL_TENSOR;

    double *step_loss = xmalloc(sizeof(double) * (size_t)total_steps);
    double *epoch_loss = xmalloc(sizeof(double) * (size_t)epochs), *test_acc = xmalloc(sizeof(double) * (size_t)epochs);
    double *epoch_ms = xmalloc(sizeof(double) * (size_t)epochs); /* ms per step, per epoch */
    int64_t correct_test = 0, step = 0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        ag_tensor order_t;
        const int64_t *order;
        CHECK(ag_randperm(&order_t, N_TRAIN, order_rng));
        CHECK(ag_tensor_data_ptr((const void **)&order, order_t));

        double loss_sum = 0, seconds = 0;
        int64_t b = 0;
        for (; b < STEPS_PER_EPOCH && step < total_steps; b++, step++) {
            double lr;
            CHECK(ag_lr_warmup_cosine(&lr, step, warmup_steps, total_steps, LEARNING_RATE, MIN_LEARNING_RATE));
            CHECK(ag_optimizer_set_lr(opt, lr));
            const double t0 = now_seconds();
            gather_rows(xb, yb, x_train, y_train, order + b * BATCH, BATCH);
            double value;
            if (replay && step_fn == AG_NULL_FUNCTION) {
                /* The first step is captured (and runs: the capture is a training step). */
                CHECK(ag_tensor_from_data(&rx, xb, xshape, 4, AG_FLOAT32));
                CHECK(ag_tensor_from_data(&ry, yb, yshape, 1, AG_INT64));
                CHECK(ag_tensor_zeros(&rloss, NULL, 0, AG_FLOAT32));
                step_ctx c = {&model, opt, 0};
                CHECK(ag_capture(&step_fn, capture_step, (ag_tensor[]){rx, ry}, 2, 1, &c));
                value = c.loss;
            } else if (replay) {
                CHECK(ag_tensor_set_data(rx, xb, BATCH * N_PIXELS, AG_FLOAT32));
                CHECK(ag_tensor_set_data(ry, yb, BATCH, AG_INT64));
                CHECK(ag_function_call_into(&rloss, 1, step_fn, (ag_tensor[]){rx, ry}, 2));
                CHECK(ag_tensor_item(&value, rloss));
            } else {
                ag_tensor x, y;
                CHECK(ag_tensor_from_data(&x, xb, xshape, 4, AG_FLOAT32));
                CHECK(ag_tensor_from_data(&y, yb, yshape, 1, AG_INT64));
                ag_tensor loss = train_step(&model, opt, x, y);
                CHECK(ag_tensor_item(&value, loss));
                CHECK(ag_tensor_free(loss));
                CHECK(ag_tensor_free(y));
                CHECK(ag_tensor_free(x));
            }
            seconds += now_seconds() - t0;
            step_loss[step] = value;
            loss_sum += value;
        }
        CHECK(ag_tensor_free(order_t));
        epoch_ms[epoch - 1] = 1e3 * seconds / (double)b;

        /* A run shorter than an epoch (the valgrind smoke run) skips the training set's accuracy. */
        char train_acc[16] = "   -   ";
        if (total_steps >= STEPS_PER_EPOCH)
            snprintf(train_acc, sizeof train_acc, "%6.2f%%",
                     100.0 * (double)count_correct(&model, xt_train, yt_train) / N_TRAIN);
        correct_test = count_correct(&model, xt_test, yt_test);
        epoch_loss[epoch - 1] = loss_sum / (double)b;
        test_acc[epoch - 1] = (double)correct_test / N_TEST;
        printf("epoch %2d  loss %.4f  train acc %s  test acc %6.2f%% (%3lld/%d)  %.3f ms/step  %5.2f s\n", epoch,
               epoch_loss[epoch - 1], train_acc, 100 * test_acc[epoch - 1], (long long)correct_test, N_TEST,
               epoch_ms[epoch - 1], now_seconds() - start);
        fflush(stdout);
    }

    printf("final weights: fnv1a64 %016llx\n", (unsigned long long)weights_hash(&model));
    /* The step's time: the median (and least) of the epochs' means from epoch 2 on (epoch 1 warms
     * up and captures), robust to other processes sharing the machine. */
    if (epochs > 1) {
        qsort(epoch_ms + 1, (size_t)epochs - 1, sizeof(double), compare_doubles);
        const double *ms = epoch_ms + 1;
        const long n = epochs - 1;
        printf("training step (batch %d, %lld thread%s, %s): %.3f ms/step (median of epochs 2-%ld; least %.3f)\n",
               BATCH, (long long)nthreads, nthreads == 1 ? "" : "s", replay ? "replayed" : "eager",
               n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2, epochs, ms[0]);
    }
    if (replay) {
        int64_t info[AG_FUNCTION_INFO_COUNT];
        CHECK(ag_function_info(info, AG_FUNCTION_INFO_COUNT, step_fn));
        printf("replay: %lld steps replayed; the step: %lld ops recorded, %lld live, %lld fused groups, "
               "arena %lld bytes\n",
               (long long)(total_steps - 1), (long long)info[0], (long long)info[1], (long long)info[3],
               (long long)info[6]);
    }
    int svg_failed =
        write_svg(svg_path, step_loss, (int)total_steps, epoch_loss, test_acc, (int)epochs, STEPS_PER_EPOCH);
    if (!svg_failed) printf("wrote %s\n", svg_path);

    /* Release everything, then check that no handle is left behind. */
    CHECK(ag_function_free(step_fn));
    CHECK(ag_tensor_free(rx));
    CHECK(ag_tensor_free(ry));
    CHECK(ag_tensor_free(rloss));
    CHECK(ag_generator_free(order_rng));
    CHECK(ag_optimizer_free(opt));
    cnn_free(&model);
    CHECK(ag_tensor_free(xt_train));
    CHECK(ag_tensor_free(yt_train));
    CHECK(ag_tensor_free(xt_test));
    CHECK(ag_tensor_free(yt_test));
    int64_t live;
    CHECK(ag_live_handle_count(&live));
    free(step_loss);
    free(epoch_loss);
    free(test_acc);
    free(epoch_ms);
    free(x_train);
    free(x_test);
    free(y_train);
    free(y_test);
    if (live != 0) {
        fprintf(stderr, "cnn_digits: %lld handles still live at the end\n", (long long)live);
        return 1;
    }

    printf("final test accuracy: %.2f%% (%lld of %d test digits) in %.2f s\n", 100.0 * (double)correct_test / N_TEST,
           (long long)correct_test, N_TEST, now_seconds() - start);
    if (total_steps != full_steps) {
        printf("cnn_digits: a shortened run (%lld steps of %ld): the accuracy target is not checked\n",
               (long long)total_steps, full_steps);
    } else if (correct_test < TARGET_CORRECT) {
        fprintf(stderr, "cnn_digits: FAILED: %lld of %d test digits right, below the 98.5%% target (%d)\n",
                (long long)correct_test, N_TEST, TARGET_CORRECT);
        return 1;
    }
    return svg_failed;
}
