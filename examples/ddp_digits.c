/*
 * ddp_digits.c - the digits MLP of digits.c, trained data-parallel on N MPI ranks with the
 * bindings/mpi layer (autograd_ddp.h).
 *
 * The data, the train/test split, the weight initialisation and the per-epoch batch order are
 * digits.c's (SplitMix64 seeds 2024 and 7, Kaiming-uniform seeds 1 and 2, zero biases); the
 * model is 64 -> 128 -> 10 with a ReLU, trained in float64 by Adam (lr 0.01, half-cosine decay
 * over the epochs). What changes is the batch: each step takes a GLOBAL batch of 64 samples (the
 * last incomplete batch of an epoch is dropped: 22 steps of 64 per epoch) and splits it into N
 * equal contiguous shards; rank r computes the mean cross-entropy over shard r (samples
 * r*64/N .. (r+1)*64/N - 1 of the batch), runs backward, and ag_ddp_finish_gradients averages the
 * gradients over the ranks; then every rank takes the same Adam step. The mean of N shard means
 * is the mean over the global batch, so with 1 rank (no communication) and with N ranks the
 * program trains the same model, up to the rounding of the sums (a few ulps per step).
 *
 * The order of the sums, and why the result is reproducible:
 *   - within a rank, libautograd's kernels (matrix products, reductions) add in a fixed order
 *     that does not depend on the thread count (see ag_set_num_threads in autograd.h);
 *   - across ranks, the gradients are summed by MPI_Iallreduce (whose order is Open MPI's: the
 *     same on every rank and every run, and for 2 ranks simply g_0 + g_1 == g_1 + g_0), or with
 *     --rank-order by every rank itself, element by element, ((g_0 + g_1) + g_2) + ...,
 *     independent of MPI's algorithms; then divided by N.
 * So every rank holds the same weights after every step (the program checks the final weights'
 * hash on all ranks), and a run repeated with the same N gives the same bits. With N = 1 and
 * N = 2 the sums are grouped differently (one mean over 64 against the mean of two means over
 * 32), so those runs agree to about 1e-15 after one step, not bit for bit: scripts/ddp-tests.sh
 * compares them with a tolerance of 1e-12.
 *
 * Usage: mpirun -np N ddp_digits [--epochs E] [--hidden H] [--batch B] [--no-overlap] [--rank-order]
 *                                [--bucket-kib K] [--weights FILE]
 *                                [--fail-rank R --fail-at STEP --fail-mode exit|crash|hang]
 *                                [path/to/digits.csv]
 *   N divides the global batch B. Defaults: 20 epochs, H = 128 hidden units, B = 64, overlap on,
 *   MPI's sum order, buckets of 8 KiB, examples/data/digits.csv. It also runs without mpirun (one
 *   rank). --hidden and --batch make the step bigger, for measuring (the README's larger model).
 *   --weights FILE     rank 0 writes the final w1, b1, w2, b2 as raw little-endian float64
 *   --fail-*           fault injection for scripts/ddp-tests.sh: at global step STEP (from 1),
 *                      rank R exits with status 3 without MPI_Finalize (exit), calls abort()
 *                      (crash), or sleeps for ever between its forward and backward passes (hang)
 *   Rank 0 prints one line per epoch, the timings (mean step time, time inside MPI, exposed
 *   wait, how much of the all-reduce overlapped backward) and the final test accuracy; exits with
 *   status 1 if that accuracy is below 96% (full runs only), or on any error.
 */
#define _POSIX_C_SOURCE 199309L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "autograd.h"
#include "autograd_ddp.h" /* bindings/mpi: compile with -I bindings/mpi */

enum {
    N_SAMPLES = 1797,
    N_PIXELS = 64,
    N_CLASSES = 10,
    N_TEST = 360,
    HIDDEN = 128,
    GLOBAL_BATCH = 64,
    EPOCHS = 20
};
static const double LEARNING_RATE = 0.01;
static const double TARGET_ACCURACY = 0.96;
static const double PI = 3.14159265358979323846;
static const uint64_t SPLIT_SEED = 2024;
static const uint64_t ORDER_SEED = 7;
static const uint64_t W1_SEED = 1;
static const uint64_t W2_SEED = 2;

static int my_rank = 0;

#define CHECK(call)                                                                                         \
    do {                                                                                                    \
        ag_status check_status_ = (call);                                                                   \
        if (check_status_ != AG_OK) {                                                                       \
            fprintf(stderr, "ddp_digits: rank %d: %s failed: %s: %s\n", my_rank, #call,                     \
                    ag_status_name(check_status_), ag_last_error());                                        \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                                   \
        }                                                                                                   \
    } while (0)

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (p == NULL) {
        fprintf(stderr, "ddp_digits: rank %d: out of memory\n", my_rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return p;
}

/* ---- SplitMix64 and the shuffle, as in digits.c ---- */

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

static void load_digits(const char *path, double *pixels, int64_t *labels) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "ddp_digits: rank %d: cannot open %s (run from the repository root, or pass the CSV's path)\n",
                my_rank, path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    char line[1024];
    int64_t row = 0;
    long lineno = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n' || line[0] == '\r') continue;
        char *p = line;
        int ok = row < N_SAMPLES;
        for (int k = 0; k <= N_PIXELS && ok; k++) {
            char *end;
            long v = strtol(p, &end, 10);
            int last = k == N_PIXELS;
            ok = end != p && (last || *end == ',') && v >= 0 && v <= (last ? N_CLASSES - 1 : 16);
            if (ok && last) labels[row] = v;
            if (ok && !last) pixels[row * N_PIXELS + k] = (double)v / 16.0;
            p = end + 1;
        }
        if (!ok) {
            fprintf(stderr, "ddp_digits: %s:%ld: expected %d pixel values 0..16 and a label 0..9 (at most %d rows)\n",
                    path, lineno, N_PIXELS, N_SAMPLES);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        row++;
    }
    fclose(f);
    if (row != N_SAMPLES) {
        fprintf(stderr, "ddp_digits: %s holds %lld samples, expected %d\n", path, (long long)row, N_SAMPLES);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

static void gather_rows(double *x, int64_t *y, const double *pixels, const int64_t *labels, const int64_t *idx,
                        int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        memcpy(x + i * N_PIXELS, pixels + idx[i] * N_PIXELS, N_PIXELS * sizeof(double));
        y[i] = labels[idx[i]];
    }
}

/* ---- the model ---- */

typedef struct {
    ag_tensor w1, b1, w2, b2;
} mlp;

static ag_tensor parameter(const int64_t *shape, int64_t ndim, int is_weight, uint64_t seed) {
    ag_tensor t;
    if (is_weight)
        CHECK(ag_tensor_init(&t, shape, ndim, AG_INIT_KAIMING_UNIFORM, seed, AG_FLOAT64));
    else
        CHECK(ag_tensor_zeros(&t, shape, ndim, AG_FLOAT64));
    CHECK(ag_tensor_set_requires_grad(t, true));
    return t;
}

static ag_tensor mlp_forward(const mlp *m, ag_tensor x) {
    ag_tensor pre, hidden, logits;
    CHECK(ag_linear(&pre, x, m->w1, m->b1));
    CHECK(ag_relu(&hidden, pre));
    CHECK(ag_linear(&logits, hidden, m->w2, m->b2));
    CHECK(ag_tensor_free(pre));
    CHECK(ag_tensor_free(hidden));
    return logits;
}

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

static uint64_t weights_hash(const ag_tensor *ps) {
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

static void write_weights(const char *file, const ag_tensor *ps) {
    FILE *f = fopen(file, "wb");
    if (f == NULL) {
        fprintf(stderr, "ddp_digits: cannot write %s\n", file);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (int k = 0; k < 4; k++) {
        int64_t n;
        const double *p;
        CHECK(ag_tensor_numel(&n, ps[k]));
        CHECK(ag_tensor_data_ptr((const void **)&p, ps[k]));
        /* raw float64 in the host's byte order: little-endian on the machines we run on */
        if (fwrite(p, sizeof(double), (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "ddp_digits: short write to %s\n", file);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "ddp_digits: cannot write %s\n", file);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum fail_mode { FAIL_NONE, FAIL_EXIT, FAIL_CRASH, FAIL_HANG };

/* Fault injection: what rank `fail_rank` does at global step `fail_at`. */
static void inject_fault(enum fail_mode mode, int64_t step, int where_hang) {
    if (mode == FAIL_EXIT && !where_hang) {
        fprintf(stderr, "ddp_digits: rank %d: injected fault: exit(3) at step %lld without MPI_Finalize\n", my_rank,
                (long long)step);
        fflush(stderr);
        exit(3);
    }
    if (mode == FAIL_CRASH && !where_hang) {
        fprintf(stderr, "ddp_digits: rank %d: injected fault: abort() at step %lld\n", my_rank, (long long)step);
        fflush(stderr);
        abort();
    }
    if (mode == FAIL_HANG && where_hang) {
        fprintf(stderr, "ddp_digits: rank %d: injected fault: hanging at step %lld, between forward and backward\n",
                my_rank, (long long)step);
        fflush(stderr);
        for (;;) pause();
    }
}

int main(int argc, char **argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int size;
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    int epochs = EPOCHS, bucket_kib = 8, fail_rank = -1;
    int64_t hidden = HIDDEN, global_batch = GLOBAL_BATCH;
    int64_t fail_at = 0;
    enum fail_mode fail_mode = FAIL_NONE;
    const char *weights_file = NULL;
    ag_ddp_options opts;
    memset(&opts, 0, sizeof opts);
    int arg = 1, usage_error = 0;
    for (; arg < argc && argv[arg][0] == '-' && !usage_error; arg++) {
        const char *a = argv[arg];
        int has_value = arg + 1 < argc;
        if (strcmp(a, "--no-overlap") == 0) {
            opts.no_overlap = 1;
        } else if (strcmp(a, "--rank-order") == 0) {
            opts.rank_order = 1;
        } else if (strcmp(a, "--epochs") == 0 && has_value) {
            epochs = atoi(argv[++arg]);
            usage_error = epochs < 1;
        } else if (strcmp(a, "--hidden") == 0 && has_value) {
            hidden = atoll(argv[++arg]);
            usage_error = hidden < 1 || hidden > 65536;
        } else if (strcmp(a, "--batch") == 0 && has_value) {
            global_batch = atoll(argv[++arg]);
            usage_error = global_batch < 1 || global_batch > N_SAMPLES - N_TEST;
        } else if (strcmp(a, "--bucket-kib") == 0 && has_value) {
            bucket_kib = atoi(argv[++arg]);
            usage_error = bucket_kib < 1;
        } else if (strcmp(a, "--weights") == 0 && has_value) {
            weights_file = argv[++arg];
        } else if (strcmp(a, "--fail-rank") == 0 && has_value) {
            fail_rank = atoi(argv[++arg]);
        } else if (strcmp(a, "--fail-at") == 0 && has_value) {
            fail_at = atoll(argv[++arg]);
        } else if (strcmp(a, "--fail-mode") == 0 && has_value) {
            const char *m = argv[++arg];
            fail_mode = strcmp(m, "exit") == 0 ? FAIL_EXIT : strcmp(m, "crash") == 0 ? FAIL_CRASH
                      : strcmp(m, "hang") == 0  ? FAIL_HANG : FAIL_NONE;
            usage_error = fail_mode == FAIL_NONE;
        } else {
            usage_error = 1;
        }
    }
    if (usage_error || global_batch % size != 0) {
        if (my_rank == 0)
            fprintf(stderr,
                    "usage: mpirun -np N ddp_digits [--epochs E] [--hidden H] [--batch B] [--no-overlap] [--rank-order]\n"
                    "                  [--bucket-kib K] [--weights FILE]\n"
                    "                  [--fail-rank R --fail-at STEP --fail-mode exit|crash|hang] [digits.csv]\n"
                    "       (N must divide the global batch, %lld; this run has N = %d)\n",
                    (long long)global_batch, size);
        MPI_Finalize();
        return 2;
    }
    const char *path = arg < argc ? argv[arg] : "examples/data/digits.csv";
    CHECK(ag_set_num_threads(1)); /* one core per rank */
    const int64_t shard = global_batch / size;
    double start = now_seconds();

    double *pixels = xmalloc(sizeof(double) * N_SAMPLES * N_PIXELS);
    int64_t *labels = xmalloc(sizeof(int64_t) * N_SAMPLES);
    load_digits(path, pixels, labels);
    int64_t perm[N_SAMPLES];
    for (int64_t i = 0; i < N_SAMPLES; i++) perm[i] = i;
    splitmix64 split_rng = {SPLIT_SEED};
    shuffle(perm, N_SAMPLES, &split_rng);
    const int64_t n_train = N_SAMPLES - N_TEST;
    double *x_train = xmalloc(sizeof(double) * (size_t)n_train * N_PIXELS);
    double *x_test = xmalloc(sizeof(double) * N_TEST * N_PIXELS);
    int64_t *y_train = xmalloc(sizeof(int64_t) * (size_t)n_train);
    int64_t *y_test = xmalloc(sizeof(int64_t) * N_TEST);
    gather_rows(x_train, y_train, pixels, labels, perm + N_TEST, n_train);
    gather_rows(x_test, y_test, pixels, labels, perm, N_TEST);
    free(pixels);
    free(labels);

    const int64_t w1s[2] = {hidden, N_PIXELS}, b1s[1] = {hidden}, w2s[2] = {N_CLASSES, hidden}, b2s[1] = {N_CLASSES};
    mlp model = {parameter(w1s, 2, 1, W1_SEED), parameter(b1s, 1, 0, 0), parameter(w2s, 2, 1, W2_SEED),
                 parameter(b2s, 1, 0, 0)};
    ag_tensor params[4] = {model.w1, model.b1, model.w2, model.b2};

    /* The data-parallel layer: rank 0's initial weights everywhere, hooks on the parameters. */
    ag_ddp *ddp;
    CHECK(ag_ddp_new(&ddp, MPI_COMM_WORLD, params, 4, (int64_t)bucket_kib * 1024, &opts));
    int64_t nbuckets;
    CHECK(ag_ddp_num_buckets(&nbuckets, ddp));
    ag_optimizer opt;
    CHECK(ag_optimizer_adam(&opt, params, 4, LEARNING_RATE, 0.9, 0.999, 1e-8, 0.0));

    const int64_t steps_per_epoch = n_train / global_batch;
    if (my_rank == 0) {
        printf("ddp_digits: %d rank%s, global batch %lld (%lld per rank), %lld steps per epoch, %d epochs; MLP 64-%lld-10, "
               "Adam, float64; %lld buckets of <= %d KiB, %s, %s\n",
               size, size == 1 ? "" : "s", (long long)global_batch, (long long)shard, (long long)steps_per_epoch, epochs,
               (long long)hidden,
               (long long)nbuckets, bucket_kib, opts.no_overlap ? "no overlap (all-reduce after backward)"
                                                                : "all-reduce overlapping backward",
               opts.rank_order ? "sums in rank order (all-gather)" : "sums by MPI_Iallreduce");
        fflush(stdout);
    }

    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)n_train);
    for (int64_t i = 0; i < n_train; i++) order[i] = i;
    splitmix64 order_rng = {ORDER_SEED};
    double *xb = xmalloc(sizeof(double) * (size_t)shard * N_PIXELS);
    int64_t *yb = xmalloc(sizeof(int64_t) * (size_t)shard);
    double test_acc = 0;
    int64_t step = 0;
    /* Timings, summed over every step but the first (warm-up). */
    double sum_step = 0, sum_backward = 0, sum_hook = 0, sum_mpi = 0, sum_wait = 0, sum_comm = 0, sum_overlap = 0;
    int64_t timed = 0, done_in_backward = 0;

    for (int epoch = 1; epoch <= epochs; epoch++) {
        double lr = LEARNING_RATE * 0.5 * (1.0 + cos(PI * (epoch - 1) / epochs));
        CHECK(ag_optimizer_set_lr(opt, lr));
        shuffle(order, n_train, &order_rng);
        double loss_sum = 0;
        for (int64_t s = 0; s < steps_per_epoch; s++) {
            step++;
            int failing = fail_mode != FAIL_NONE && my_rank == fail_rank && step == fail_at;
            if (failing) inject_fault(fail_mode, step, 0);
            double t0 = now_seconds();
            /* This rank's shard of the global batch. */
            gather_rows(xb, yb, x_train, y_train, order + s * global_batch + my_rank * shard, shard);
            const int64_t shape[2] = {shard, N_PIXELS};
            ag_tensor x, logits, loss;
            CHECK(ag_tensor_from_data(&x, xb, shape, 2, AG_FLOAT64));
            logits = mlp_forward(&model, x);
            CHECK(ag_cross_entropy(&loss, logits, yb, shard));
            if (failing) inject_fault(fail_mode, step, 1);
            CHECK(ag_optimizer_zero_grad(opt));
            double tb = now_seconds();
            CHECK(ag_backward(loss, AG_NULL_TENSOR, false, false));
            double te = now_seconds();
            CHECK(ag_ddp_finish_gradients(ddp));
            CHECK(ag_optimizer_step(opt));
            double t1 = now_seconds();
            double value;
            CHECK(ag_tensor_item(&value, loss));
            loss_sum += value;
            CHECK(ag_tensor_free(loss));
            CHECK(ag_tensor_free(logits));
            CHECK(ag_tensor_free(x));
            if (step > 1) {
                ag_ddp_step_stats st;
                CHECK(ag_ddp_last_step_stats(&st, ddp));
                timed++;
                sum_step += t1 - t0;
                sum_backward += te - tb;
                sum_hook += st.hook_seconds;
                sum_mpi += st.mpi_seconds;
                sum_wait += st.wait_seconds;
                sum_comm += st.comm_seconds;
                sum_overlap += st.overlapped_seconds;
                done_in_backward += st.buckets_done_in_backward;
            }
        }
        /* The epoch's loss: the mean over ranks and steps of the shard means. */
        double global_loss;
        MPI_Allreduce(&loss_sum, &global_loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        global_loss /= (double)size * (double)steps_per_epoch;
        if (my_rank == 0) {
            double train_acc = accuracy(&model, x_train, y_train, n_train);
            test_acc = accuracy(&model, x_test, y_test, N_TEST);
            printf("epoch %2d  lr %.5f  loss %.4f  train acc %6.2f%%  test acc %6.2f%%  %5.2f s\n", epoch, lr,
                   global_loss, 100 * train_acc, 100 * test_acc, now_seconds() - start);
            fflush(stdout);
        }
    }

    /* Every rank must hold the same weights: compare their hashes. */
    unsigned long long h = weights_hash(params), hmin, hmax;
    MPI_Allreduce(&h, &hmin, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hmax, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    ag_ddp_bucket_stats last[16];
    int64_t nb;
    CHECK(ag_ddp_last_bucket_stats(last, 16, &nb, ddp));
    if (my_rank == 0) {
        printf("final weights: fnv1a64 %016llx on rank 0; %s\n", h,
               hmin == hmax ? "identical on every rank" : "DIFFERENT on some rank");
        if (timed > 0) {
            double n = (double)timed;
            printf("timing (rank 0, %lld steps after the first): step %.3f ms, backward %.3f ms (hooks %.3f ms), "
                   "in MPI %.3f ms = %.1f%% of the step, exposed wait %.3f ms = %.1f%%\n",
                   (long long)timed, 1e3 * sum_step / n, 1e3 * sum_backward / n, 1e3 * sum_hook / n, 1e3 * sum_mpi / n,
                   100 * sum_mpi / sum_step, 1e3 * sum_wait / n, 100 * sum_wait / sum_step);
            printf("overlap: %.1f%% of the all-reduce time (start to observed completion, %.3f ms per step) lay "
                   "inside backward; %.2f of %lld buckets per step completed before backward ended\n",
                   sum_comm > 0 ? 100 * sum_overlap / sum_comm : 0.0, 1e3 * sum_comm / n, (double)done_in_backward / n,
                   (long long)nb);
            printf("last step's buckets (times relative to backward's end):");
            for (int64_t b = 0; b < nb && b < 16; b++)
                printf("%s bucket %lld (%lld params, %lld bytes) started %+.3f ms, done %+.3f ms", b ? ";" : "",
                       (long long)b, (long long)last[b].params, (long long)last[b].bytes, 1e3 * last[b].started_at,
                       1e3 * last[b].completed_at);
            printf("\n");
        }
        if (weights_file != NULL) {
            write_weights(weights_file, params);
            printf("final weights written to %s (w1 b1 w2 b2, raw float64)\n", weights_file);
        }
    }

    free(order);
    free(xb);
    free(yb);
    free(x_train);
    free(x_test);
    free(y_train);
    free(y_test);
    CHECK(ag_ddp_free(ddp));
    CHECK(ag_optimizer_free(opt));
    CHECK(ag_tensor_free(model.w1));
    CHECK(ag_tensor_free(model.b1));
    CHECK(ag_tensor_free(model.w2));
    CHECK(ag_tensor_free(model.b2));
    int64_t live;
    CHECK(ag_live_handle_count(&live));
    int status = 0;
    if (live != 0) {
        fprintf(stderr, "ddp_digits: rank %d: %lld handles still live at the end\n", my_rank, (long long)live);
        status = 1;
    }
    if (hmin != hmax) status = 1;
    if (my_rank == 0 && epochs == EPOCHS && hidden == HIDDEN && global_batch == GLOBAL_BATCH) {
        printf("final test accuracy: %.2f%% (%d of %d test digits) in %.2f s\n", 100 * test_acc,
               (int)lround(test_acc * N_TEST), N_TEST, now_seconds() - start);
        if (test_acc < TARGET_ACCURACY) {
            fprintf(stderr, "ddp_digits: FAILED: test accuracy %.2f%% is below %.0f%%\n", 100 * test_acc,
                    100 * TARGET_ACCURACY);
            status = 1;
        }
    }
    MPI_Finalize();
    return status;
}
