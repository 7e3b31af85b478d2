/*
 * digits.c - train an MLP classifier on the UCI handwritten digits with libautograd.
 *
 * The data: 1797 grey-scale 8x8 images of the digits 0-9 (the set scikit-learn ships as
 * load_digits), exported once to examples/data/digits.csv by examples/data/export_digits.py.
 * Each CSV row holds 64 pixel values 0..16 and then the label; lines starting with '#' are
 * comments.
 *
 * The model: a multilayer perceptron 64 -> 128 -> 10 with a ReLU hidden layer,
 *     logits = relu(x W1^T + b1) W2^T + b2,
 * trained with the softmax cross-entropy loss by Adam (mini-batches of 32, learning rate 0.01
 * decayed along a half cosine over the epochs).
 *
 * Everything random is seeded, so every run on every machine prints the same numbers:
 *   - the train/test split: a Fisher-Yates shuffle of the 1797 samples by a SplitMix64
 *     generator seeded with SPLIT_SEED; the first 360 shuffled samples are the test set,
 *     the other 1437 the training set;
 *   - the weights: ag_tensor_init with Kaiming-uniform initialisation and fixed seeds; the
 *     biases start at zero;
 *   - the batch order: a SplitMix64 generator seeded with ORDER_SEED reshuffles the training
 *     set at the start of every epoch.
 * examples/digits_jax.py repeats exactly this training in JAX (same split, weights, batches and
 * schedule) as the side-by-side check.
 *
 * Usage: digits [--eager-step | --replay] [--stop-after EPOCH FILE | --resume FILE] [path/to/digits.csv]
 *        (default: examples/data/digits.csv,
 *        relative to the current directory). Prints one line per epoch and the final test
 *        accuracy; exits with status 1 if that accuracy is below 96%, or on any error.
 *
 * Training by replay (issue 16). The default run builds each step's graph as it goes, with
 * ag_cross_entropy (whose labels are a C array). The two other modes train with one step
 * function, train_step (forward, loss, zero_grad, backward, Adam step), whose labels are a
 * one-hot tensor so that they are an input like the pixels:
 *   --eager-step  calls train_step on every batch;
 *   --replay      captures train_step once per batch shape (ag_capture: that capture is the
 *                 step of the first such batch) and replays it on every later batch
 *                 (ag_function_call_into, the batch written into the same input tensors with
 *                 ag_tensor_set_data: no handle is made per step).
 * Every mode prints a hash of the final weights' bits ("final weights: fnv1a64 ..."): a replay
 * runs the same arithmetic in the same order as the eager step, so the two hashes are equal
 * (scripts/c-tests.sh checks it).
 *
 * Checkpoints (issue 19): --stop-after EPOCH FILE trains EPOCH epochs, saves a checkpoint
 * (ag_checkpoint_save: the weights, Adam's moments and step counts, the batch order so far as an
 * int64 tensor, the epoch and the order generator's state as metadata) and stops; --resume FILE
 * restores it (ag_checkpoint_load, ag_safetensors_metadata) and trains the remaining epochs. The
 * resumed run ends with the same weights, bit for bit, as a run that never stopped: the same
 * hash (scripts/c-tests.sh checks it). The file is a safetensors file any reader can open.
 */
#define _POSIX_C_SOURCE 199309L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd.h"

/* ---- the experiment's constants (examples/digits_jax.py uses the same) ---- */
enum {
    N_SAMPLES = 1797,
    N_PIXELS = 64,
    N_CLASSES = 10,
    N_TEST = 360,            /* the remaining 1437 samples train the model */
    HIDDEN = 128,
    BATCH = 32,
    EPOCHS = 20
};
static const double LEARNING_RATE = 0.01; /* the initial Adam learning rate */
static const double TARGET_ACCURACY = 0.96;
static const double PI = 3.14159265358979323846;
static const uint64_t SPLIT_SEED = 2024;  /* the train/test split */
static const uint64_t ORDER_SEED = 7;     /* the batch order */
static const uint64_t W1_SEED = 1;        /* ag_tensor_init seeds of the two weight matrices */
static const uint64_t W2_SEED = 2;

/* ---- error handling: every library call is checked ---- */

/* Stops the program with the library's message if a call fails. */
#define CHECK(call)                                                                          \
    do {                                                                                     \
        ag_status check_status_ = (call);                                                    \
        if (check_status_ != AG_OK) {                                                        \
            fprintf(stderr, "digits: %s failed: %s: %s\n", #call, ag_status_name(check_status_), \
                    ag_last_error());                                                        \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (p == NULL) {
        fprintf(stderr, "digits: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- SplitMix64: a tiny seeded generator (the same one the library uses) ---- */

typedef struct {
    uint64_t state;
} splitmix64;

static uint64_t splitmix64_next(splitmix64 *g) {
    uint64_t z = (g->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Shuffles a[0..n-1] in place (Fisher-Yates; j = next mod (i + 1), a negligible bias that keeps
 * the order easy to reproduce in any language). */
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
static void load_digits(const char *path, double *pixels, int64_t *labels) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr,
                "digits: cannot open %s (run from the repository root, pass the CSV's path as the first "
                "argument, or re-create it with: python3 examples/data/export_digits.py)\n",
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
            fprintf(stderr, "digits: %s:%ld: more than %d samples\n", path, lineno, N_SAMPLES);
            exit(1);
        }
        char *p = line;
        for (int k = 0; k <= N_PIXELS; k++) {
            char *end;
            long v = strtol(p, &end, 10);
            int last = k == N_PIXELS;
            if (end == p || (!last && *end != ',') || v < 0 || v > (last ? N_CLASSES - 1 : 16)) {
                fprintf(stderr, "digits: %s:%ld: expected %d pixel values 0..16 and a label 0..9\n", path,
                        lineno, N_PIXELS);
                exit(1);
            }
            if (last)
                labels[row] = v;
            else
                pixels[row * N_PIXELS + k] = (double)v / 16.0;
            p = end + 1;
        }
        row++;
    }
    fclose(f);
    if (row != N_SAMPLES) {
        fprintf(stderr, "digits: %s holds %lld samples, expected %d\n", path, (long long)row, N_SAMPLES);
        exit(1);
    }
}

/* Copies the rows idx[0..n-1] of pixels/labels into x (n x 64) and y (n). */
static void gather_rows(double *x, int64_t *y, const double *pixels, const int64_t *labels, const int64_t *idx,
                        int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        memcpy(x + i * N_PIXELS, pixels + idx[i] * N_PIXELS, N_PIXELS * sizeof(double));
        y[i] = labels[idx[i]];
    }
}

/* ---- the model ---- */

enum mode { MODE_DEFAULT, MODE_EAGER_STEP, MODE_REPLAY };

typedef struct {
    ag_tensor w1, b1, w2, b2; /* w1 (HIDDEN, 64), b1 (HIDDEN), w2 (10, HIDDEN), b2 (10) */
} mlp;

/* A trainable leaf: a weight from ag_tensor_init, or a zero bias. */
static ag_tensor parameter(const int64_t *shape, int64_t ndim, int is_weight, uint64_t seed) {
    ag_tensor t;
    if (is_weight)
        CHECK(ag_tensor_init(&t, shape, ndim, AG_INIT_KAIMING_UNIFORM, seed, AG_FLOAT64));
    else
        CHECK(ag_tensor_zeros(&t, shape, ndim, AG_FLOAT64));
    CHECK(ag_tensor_set_requires_grad(t, true));
    return t;
}

static mlp mlp_new(void) {
    const int64_t w1[2] = {HIDDEN, N_PIXELS}, b1[1] = {HIDDEN};
    const int64_t w2[2] = {N_CLASSES, HIDDEN}, b2[1] = {N_CLASSES};
    mlp m = {parameter(w1, 2, 1, W1_SEED), parameter(b1, 1, 0, 0), parameter(w2, 2, 1, W2_SEED),
             parameter(b2, 1, 0, 0)};
    return m;
}

/* The logits (n, 10) for the inputs x (n, 64). */
static ag_tensor mlp_forward(const mlp *m, ag_tensor x) {
    ag_tensor pre, hidden, logits;
    CHECK(ag_linear(&pre, x, m->w1, m->b1));
    CHECK(ag_relu(&hidden, pre));
    CHECK(ag_linear(&logits, hidden, m->w2, m->b2));
    /* The graph keeps what backward needs: the intermediate handles can go now. */
    CHECK(ag_tensor_free(pre));
    CHECK(ag_tensor_free(hidden));
    return logits;
}

static void mlp_free(mlp *m) {
    CHECK(ag_tensor_free(m->w1));
    CHECK(ag_tensor_free(m->b1));
    CHECK(ag_tensor_free(m->w2));
    CHECK(ag_tensor_free(m->b2));
}

/* The fraction of the n samples x (n x 64) with labels y that the model classifies correctly,
 * evaluated without recording a graph. */
static double accuracy(const mlp *m, const double *x, const int64_t *y, int64_t n) {
    bool previous;
    CHECK(ag_set_grad_enabled(&previous, false));
    const int64_t shape[2] = {n, N_PIXELS};
    ag_tensor input;
    CHECK(ag_tensor_from_data(&input, x, shape, 2, AG_FLOAT64));
    ag_tensor logits = mlp_forward(m, input);
    const double *z;
    CHECK(ag_tensor_data_ptr((const void **)&z, logits));
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < N_CLASSES; c++)
            if (z[i * N_CLASSES + c] > z[i * N_CLASSES + best]) best = c;
        correct += best == y[i];
    }
    CHECK(ag_tensor_free(logits));
    CHECK(ag_tensor_free(input));
    CHECK(ag_set_grad_enabled(NULL, previous));
    return (double)correct / (double)n;
}

/* ---- the step function (--eager-step, --replay) ---- */

/* One training step on a batch x (n, 64) with one-hot labels t (n, 10): the mean cross-entropy
 * -sum(t * log_softmax(logits)) / n, zero_grad, backward, an Adam step. Returns the loss. */
static ag_tensor train_step(const mlp *m, ag_optimizer opt, ag_tensor x, ag_tensor t, int64_t n) {
    ag_tensor logits = mlp_forward(m, x), logp, picked, total, loss;
    CHECK(ag_log_softmax(&logp, logits, 1));
    CHECK(ag_mul(&picked, logp, t));
    CHECK(ag_sum(&total, picked, NULL, 0, false));
    CHECK(ag_mul_scalar(&loss, total, -1.0 / (double)n));
    CHECK(ag_optimizer_zero_grad(opt));
    CHECK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CHECK(ag_optimizer_step(opt));
    CHECK(ag_tensor_free(total));
    CHECK(ag_tensor_free(picked));
    CHECK(ag_tensor_free(logp));
    CHECK(ag_tensor_free(logits));
    return loss;
}

/* What the capture function needs, and the loss of the step it ran. */
typedef struct {
    const mlp *m;
    ag_optimizer opt;
    int64_t n;
    double loss;
} step_ctx;

/* The capture function: train_step on the placeholders (x, t); its one output is the loss. */
static int32_t capture_step(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                            void *user_data) {
    step_ctx *c = user_data;
    if (noutputs != 1 || ninputs != 2) return 1;
    outputs[0] = train_step(c->m, c->opt, inputs[0], inputs[1], c->n);
    return ag_tensor_item(&c->loss, outputs[0]) == AG_OK ? 0 : 1;
}

/* A captured step for one batch size: its input tensors (rewritten per batch), its loss tensor. */
typedef struct {
    int64_t n;
    ag_function f;
    ag_tensor x, t, loss;
} replay_slot;

/* One-hot rows of the labels y[0..n-1] into t (n x 10). */
static void one_hot(double *t, const int64_t *y, int64_t n) {
    memset(t, 0, sizeof(double) * (size_t)n * N_CLASSES);
    for (int64_t i = 0; i < n; i++) t[i * N_CLASSES + y[i]] = 1.0;
}

/* FNV-1a over the bytes of the model's parameters (float64, row-major, w1 b1 w2 b2). */
static uint64_t weights_hash(const mlp *m) {
    const ag_tensor ps[4] = {m->w1, m->b1, m->w2, m->b2};
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int k = 0; k < 4; k++) {
        int64_t n;
        const unsigned char *p;
        CHECK(ag_tensor_numel(&n, ps[k]));
        CHECK(ag_tensor_data_ptr((const void **)&p, ps[k]));
        for (int64_t i = 0; i < n * (int64_t)sizeof(double); i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return h;
}

static double seconds_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + 1e-9 * (double)(now.tv_nsec - start->tv_nsec);
}

/* ---- checkpoints (--stop-after, --resume) ---- */

/* The names the model's parameters have in a checkpoint, and the training position saved with
 * them: the batch order so far (an int64 tensor) and the order generator's state (metadata). */
static const char *const CHECKPOINT_NAMES[5] = {"w1", "b1", "w2", "b2", "digits.order"};

/* Saves the model, Adam's state, the batch order and the epoch just finished to `file`. */
static void save_checkpoint(const char *file, const mlp *m, ag_optimizer opt, const int64_t *order, int64_t n_train,
                            const splitmix64 *order_rng, int epoch) {
    ag_tensor order_t;
    CHECK(ag_tensor_from_data(&order_t, order, (int64_t[]){n_train}, 1, AG_INT64));
    char epoch_text[32], rng_text[32];
    snprintf(epoch_text, sizeof epoch_text, "%d", epoch);
    snprintf(rng_text, sizeof rng_text, "%llu", (unsigned long long)order_rng->state);
    const char *keys[2] = {"digits.epoch", "digits.order_rng"}, *values[2] = {epoch_text, rng_text};
    ag_tensor tensors[5] = {m->w1, m->b1, m->w2, m->b2, order_t};
    CHECK(ag_checkpoint_save(file, CHECKPOINT_NAMES, tensors, 5, opt, keys, values, 2));
    CHECK(ag_tensor_free(order_t));
}

/* Restores what save_checkpoint saved; returns the epoch it was saved after. */
static int load_checkpoint(const char *file, const mlp *m, ag_optimizer opt, int64_t *order, int64_t n_train,
                           splitmix64 *order_rng) {
    ag_tensor order_t;
    CHECK(ag_tensor_zeros(&order_t, (int64_t[]){n_train}, 1, AG_INT64));
    ag_tensor tensors[5] = {m->w1, m->b1, m->w2, m->b2, order_t};
    CHECK(ag_checkpoint_load(file, CHECKPOINT_NAMES, tensors, 5, opt));
    CHECK(ag_tensor_copy_data(order, n_train, AG_INT64, order_t));
    CHECK(ag_tensor_free(order_t));
    ag_safetensors f;
    CHECK(ag_safetensors_open(&f, file));
    const char *epoch_text = NULL, *rng_text = NULL;
    CHECK(ag_safetensors_metadata(&epoch_text, f, "digits.epoch"));
    CHECK(ag_safetensors_metadata(&rng_text, f, "digits.order_rng"));
    if (epoch_text == NULL || rng_text == NULL) {
        fprintf(stderr, "digits: %s is not a digits checkpoint (no digits.epoch or digits.order_rng)\n", file);
        exit(1);
    }
    int epoch = atoi(epoch_text);
    order_rng->state = strtoull(rng_text, NULL, 10);
    CHECK(ag_safetensors_close(f));
    if (epoch < 1 || epoch >= EPOCHS) {
        fprintf(stderr, "digits: %s was saved after epoch %d; resuming needs 1 .. %d\n", file, epoch, EPOCHS - 1);
        exit(1);
    }
    return epoch;
}

int main(int argc, char **argv) {
    enum mode mode = MODE_DEFAULT;
    const char *stop_file = NULL, *resume_file = NULL;
    int stop_after = 0;
    int arg = 1;
    bool usage_error = false;
    for (; arg < argc && argv[arg][0] == '-' && !usage_error; arg++) {
        if (strcmp(argv[arg], "--eager-step") == 0) {
            mode = MODE_EAGER_STEP;
        } else if (strcmp(argv[arg], "--replay") == 0) {
            mode = MODE_REPLAY;
        } else if (strcmp(argv[arg], "--stop-after") == 0 && arg + 2 < argc) {
            stop_after = atoi(argv[arg + 1]);
            stop_file = argv[arg + 2];
            arg += 2;
            usage_error = stop_after < 1 || stop_after >= EPOCHS;
        } else if (strcmp(argv[arg], "--resume") == 0 && arg + 1 < argc) {
            resume_file = argv[++arg];
        } else {
            usage_error = true;
        }
    }
    if (usage_error) {
        fprintf(stderr, "usage: digits [--eager-step | --replay] [--stop-after EPOCH CHECKPOINT] [--resume CHECKPOINT] "
                        "[path/to/digits.csv]\n       (EPOCH in 1 .. %d)\n", EPOCHS - 1);
        return 2;
    }
    const char *path = arg < argc ? argv[arg] : "examples/data/digits.csv";
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);

    /* Load the data and split it: a seeded permutation, the first N_TEST samples for testing. */
    double *pixels = xmalloc(sizeof(double) * N_SAMPLES * N_PIXELS);
    int64_t *labels = xmalloc(sizeof(int64_t) * N_SAMPLES);
    load_digits(path, pixels, labels);

    int64_t perm[N_SAMPLES];
    for (int64_t i = 0; i < N_SAMPLES; i++) perm[i] = i;
    splitmix64 split_rng = {SPLIT_SEED};
    shuffle(perm, N_SAMPLES, &split_rng);
    const int64_t n_train = N_SAMPLES - N_TEST;
    const int64_t *test_idx = perm, *train_idx = perm + N_TEST;

    double *x_train = xmalloc(sizeof(double) * (size_t)n_train * N_PIXELS);
    double *x_test = xmalloc(sizeof(double) * N_TEST * N_PIXELS);
    int64_t *y_train = xmalloc(sizeof(int64_t) * (size_t)n_train);
    int64_t *y_test = xmalloc(sizeof(int64_t) * N_TEST);
    gather_rows(x_train, y_train, pixels, labels, train_idx, n_train);
    gather_rows(x_test, y_test, pixels, labels, test_idx, N_TEST);

    printf("digits: %lld training and %d test samples from %s; MLP 64-%d-10 (ReLU), Adam, lr %g (cosine), "
           "batch %d, %d epochs%s\n",
           (long long)n_train, N_TEST, path, HIDDEN, LEARNING_RATE, BATCH, EPOCHS,
           mode == MODE_EAGER_STEP ? "; one step function, eagerly"
           : mode == MODE_REPLAY   ? "; one step function, captured and replayed"
                                   : "");

    /* The model and its optimizer: Adam with torch.optim's defaults but for the learning rate. */
    mlp model = mlp_new();
    ag_tensor params[4] = {model.w1, model.b1, model.w2, model.b2};
    ag_optimizer opt;
    CHECK(ag_optimizer_adam(&opt, params, 4, LEARNING_RATE, 0.9, 0.999, 1e-8, 0.0));

    /* Training. `order` lists the training samples (positions in x_train) in batch order. */
    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)n_train);
    for (int64_t i = 0; i < n_train; i++) order[i] = i;
    splitmix64 order_rng = {ORDER_SEED};
    double *xb = xmalloc(sizeof(double) * BATCH * N_PIXELS);
    double *tb = xmalloc(sizeof(double) * BATCH * N_CLASSES);
    int64_t yb[BATCH];
    double test_acc = 0;
    replay_slot slots[2] = {{0, AG_NULL_FUNCTION, 0, 0, 0}, {0, AG_NULL_FUNCTION, 0, 0, 0}}; /* full, last batch */
    int64_t replays = 0;

    int first_epoch = 1;
    if (resume_file != NULL) {
        first_epoch = load_checkpoint(resume_file, &model, opt, order, n_train, &order_rng) + 1;
        printf("checkpoint: resumed from %s after epoch %d\n", resume_file, first_epoch - 1);
    }

    for (int epoch = first_epoch; epoch <= EPOCHS; epoch++) {
        /* Half-cosine decay from LEARNING_RATE (epoch 1) towards 0, changed between steps. */
        double lr = LEARNING_RATE * 0.5 * (1.0 + cos(PI * (epoch - 1) / EPOCHS));
        CHECK(ag_optimizer_set_lr(opt, lr));
        shuffle(order, n_train, &order_rng);

        double loss_sum = 0;
        for (int64_t first = 0; first < n_train; first += BATCH) {
            int64_t n = n_train - first < BATCH ? n_train - first : BATCH;
            gather_rows(xb, yb, x_train, y_train, order + first, n);
            const int64_t shape[2] = {n, N_PIXELS}, tshape[2] = {n, N_CLASSES};
            double value;
            if (mode == MODE_REPLAY) {
                /* The batch goes into the slot's tensors; the first batch of a size is captured. */
                one_hot(tb, yb, n);
                replay_slot *s = &slots[n == BATCH ? 0 : 1];
                if (s->f == AG_NULL_FUNCTION) {
                    s->n = n;
                    CHECK(ag_tensor_from_data(&s->x, xb, shape, 2, AG_FLOAT64));
                    CHECK(ag_tensor_from_data(&s->t, tb, tshape, 2, AG_FLOAT64));
                    CHECK(ag_tensor_zeros(&s->loss, NULL, 0, AG_FLOAT64));
                    step_ctx c = {&model, opt, n, 0};
                    CHECK(ag_capture(&s->f, capture_step, (ag_tensor[]){s->x, s->t}, 2, 1, &c));
                    value = c.loss;
                } else {
                    CHECK(ag_tensor_set_data(s->x, xb, n * N_PIXELS, AG_FLOAT64));
                    CHECK(ag_tensor_set_data(s->t, tb, n * N_CLASSES, AG_FLOAT64));
                    CHECK(ag_function_call_into(&s->loss, 1, s->f, (ag_tensor[]){s->x, s->t}, 2));
                    CHECK(ag_tensor_item(&value, s->loss));
                    replays++;
                }
            } else if (mode == MODE_EAGER_STEP) {
                one_hot(tb, yb, n);
                ag_tensor x, t;
                CHECK(ag_tensor_from_data(&x, xb, shape, 2, AG_FLOAT64));
                CHECK(ag_tensor_from_data(&t, tb, tshape, 2, AG_FLOAT64));
                ag_tensor loss = train_step(&model, opt, x, t, n);
                CHECK(ag_tensor_item(&value, loss));
                CHECK(ag_tensor_free(loss));
                CHECK(ag_tensor_free(t));
                CHECK(ag_tensor_free(x));
            } else {
                ag_tensor x, logits, loss;
                CHECK(ag_tensor_from_data(&x, xb, shape, 2, AG_FLOAT64));
                logits = mlp_forward(&model, x);
                CHECK(ag_cross_entropy(&loss, logits, yb, n));

                CHECK(ag_optimizer_zero_grad(opt));
                CHECK(ag_backward(loss, AG_NULL_TENSOR, false, false));
                CHECK(ag_optimizer_step(opt));

                CHECK(ag_tensor_item(&value, loss));
                CHECK(ag_tensor_free(loss));
                CHECK(ag_tensor_free(logits));
                CHECK(ag_tensor_free(x));
            }
            loss_sum += value * (double)n;
        }

        double train_acc = accuracy(&model, x_train, y_train, n_train);
        test_acc = accuracy(&model, x_test, y_test, N_TEST);
        printf("epoch %2d  lr %.5f  loss %.4f  train acc %6.2f%%  test acc %6.2f%%  %5.2f s\n", epoch, lr,
               loss_sum / (double)n_train, 100 * train_acc, 100 * test_acc, seconds_since(&start));
        fflush(stdout);
        if (epoch == stop_after) {
            save_checkpoint(stop_file, &model, opt, order, n_train, &order_rng, epoch);
            printf("checkpoint: saved after epoch %d to %s; stopping (continue with --resume %s)\n", epoch, stop_file,
                   stop_file);
            break;
        }
    }

    printf("final weights: fnv1a64 %016llx\n", (unsigned long long)weights_hash(&model));
    if (mode == MODE_REPLAY) {
        int64_t info[AG_FUNCTION_INFO_COUNT];
        CHECK(ag_function_info(info, AG_FUNCTION_INFO_COUNT, slots[0].f));
        printf("replay: %lld steps replayed; the step of %d: %lld ops recorded, %lld live, %lld fused groups, "
               "arena %lld bytes\n",
               (long long)replays, BATCH, (long long)info[0], (long long)info[1], (long long)info[3],
               (long long)info[6]);
    }

    /* Release everything, then check that no handle is left behind. */
    for (int k = 0; k < 2; k++) {
        if (slots[k].f == AG_NULL_FUNCTION) continue;
        CHECK(ag_function_free(slots[k].f));
        CHECK(ag_tensor_free(slots[k].x));
        CHECK(ag_tensor_free(slots[k].t));
        CHECK(ag_tensor_free(slots[k].loss));
    }
    free(tb);
    CHECK(ag_optimizer_free(opt));
    mlp_free(&model);
    int64_t live;
    CHECK(ag_live_handle_count(&live));
    free(order);
    free(xb);
    free(x_train);
    free(x_test);
    free(y_train);
    free(y_test);
    free(pixels);
    free(labels);
    if (live != 0) {
        fprintf(stderr, "digits: %lld handles still live at the end\n", (long long)live);
        return 1;
    }

    if (stop_after > 0) return 0; /* stopped early: the accuracy target is for a whole run */
    printf("final test accuracy: %.2f%% (%d of %d test digits) in %.2f s\n", 100 * test_acc,
           (int)lround(test_acc * N_TEST), N_TEST, seconds_since(&start));
    if (test_acc < TARGET_ACCURACY) {
        fprintf(stderr, "digits: FAILED: test accuracy %.2f%% is below %.0f%%\n", 100 * test_acc,
                100 * TARGET_ACCURACY);
        return 1;
    }
    return 0;
}
