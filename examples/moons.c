/*
 * moons.c - a micrograd-style example: a small neural network built from scalars.
 *
 * Every weight and bias is its own 0-d tensor, and a neuron is computed exactly as on paper,
 *     out = tanh(b + w_1 x_1 + w_2 x_2 + ... + w_n x_n),
 * one ag_mul and one ag_add per input. The network 2 -> 16 -> 16 -> 1 (tanh hidden layers, a
 * linear output neuron whose sign is the class) learns to separate the two interleaved half
 * circles of the "two moons" data set, generated here with seeded noise. The loss is the SVM
 * hinge loss mean(max(0, 1 - y * score)) over mini-batches, minimised by SGD with momentum and
 * weight decay through the optimizer API, with a learning rate lowered step by step.
 *
 * At the end the program evaluates the trained network on a grid covering the plane and writes a
 * picture of its decision boundary as an SVG file (the program writes the SVG text itself): the
 * background coloured by the network's score, the data points as circles on top.
 *
 * The grid evaluation runs the same scalar-network code: a 0-d weight times a 1-D tensor of
 * coordinates broadcasts, so feeding the neurons vectors of grid coordinates instead of one
 * point's coordinates scores the whole grid at once.
 *
 * Usage: moons [out.svg]   (default moons.svg in the current directory)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd.h"

/* ---- the experiment's constants ---- */
enum {
    N_POINTS = 100, /* 50 per moon */
    H1 = 16,
    H2 = 16,
    BATCH = 10,
    STEPS = 150,
    PRINT_EVERY = 15, /* a progress line every PRINT_EVERY steps */
    GRID = 100 /* the picture's resolution: GRID x GRID cells */
};
static const double NOISE = 0.1;          /* the standard deviation of the noise added to the points */
static const double LEARNING_RATE = 0.1;  /* the initial learning rate */
static const double MOMENTUM = 0.9;
static const double WEIGHT_DECAY = 1e-4;
static const uint64_t DATA_SEED = 42;
static const uint64_t BATCH_SEED = 3;
static const double PI = 3.14159265358979323846;
/* The plotted part of the plane. */
static const double X_MIN = -1.6, X_MAX = 2.6, Y_MIN = -1.1, Y_MAX = 1.6;

#define CHECK(call)                                                                          \
    do {                                                                                     \
        ag_status check_status_ = (call);                                                    \
        if (check_status_ != AG_OK) {                                                        \
            fprintf(stderr, "moons: %s failed: %s: %s\n", #call, ag_status_name(check_status_), \
                    ag_last_error());                                                        \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

/* ---- SplitMix64: a tiny seeded generator ---- */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double uniform(uint64_t *state) { return (double)(splitmix64(state) >> 11) * 0x1p-53; }

/* Standard normal (Box-Muller). */
static double normal(uint64_t *state) {
    double u1 = 1.0 - uniform(state), u2 = uniform(state);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

/* ---- the data: two interleaved half circles with noise, labels -1 and +1 ---- */

static void make_moons(double *xs, double *ys, double *labels) {
    uint64_t rng = DATA_SEED;
    for (int i = 0; i < N_POINTS; i++) {
        double t = PI * uniform(&rng);
        if (i % 2 == 0) { /* the upper moon, label -1 */
            xs[i] = cos(t);
            ys[i] = sin(t);
            labels[i] = -1;
        } else { /* the lower moon, shifted right and down, label +1 */
            xs[i] = 1.0 - cos(t);
            ys[i] = 0.5 - sin(t);
            labels[i] = 1;
        }
        xs[i] += NOISE * normal(&rng);
        ys[i] += NOISE * normal(&rng);
    }
}

/* ---- scalars ---- */

static ag_tensor scalar(double value) {
    ag_tensor t;
    CHECK(ag_tensor_full(&t, NULL, 0, value, AG_FLOAT64));
    return t;
}

/* Replaces *acc by *acc + w * x, releasing the intermediate handles. */
static void add_product(ag_tensor *acc, ag_tensor w, ag_tensor x) {
    ag_tensor product, sum;
    CHECK(ag_mul(&product, w, x));
    CHECK(ag_add(&sum, *acc, product));
    CHECK(ag_tensor_free(product));
    CHECK(ag_tensor_free(*acc));
    *acc = sum;
}

/* ---- the network: neurons, layers, a multilayer perceptron ---- */

typedef struct {
    int nin;
    ag_tensor *w; /* nin 0-d weights */
    ag_tensor b;  /* a 0-d bias */
    int nonlinear;
} neuron;

typedef struct {
    int nin, nout;
    neuron *neurons;
} layer;

typedef struct {
    int nlayers;
    layer layers[3];
    ag_tensor params[(2 * H1 + H1) + (H1 * H2 + H2) + (H2 + 1)]; /* every weight and bias */
    int nparams;
} mlp;

/* A neuron whose weights are drawn uniformly from [-1, 1) (as micrograd) and whose bias is 0. */
static neuron neuron_new(mlp *m, int nin, int nonlinear, uint64_t *rng) {
    neuron n = {nin, malloc(sizeof(ag_tensor) * (size_t)nin), 0, nonlinear};
    if (n.w == NULL) {
        fprintf(stderr, "moons: out of memory\n");
        exit(1);
    }
    for (int i = 0; i <= nin; i++) {
        ag_tensor p = scalar(i < nin ? 2.0 * uniform(rng) - 1.0 : 0.0);
        CHECK(ag_tensor_set_requires_grad(p, true));
        if (i < nin)
            n.w[i] = p;
        else
            n.b = p;
        m->params[m->nparams++] = p;
    }
    return n;
}

/* out = tanh(b + sum_i w_i x_i), or without tanh for the output neuron. */
static ag_tensor neuron_forward(const neuron *n, const ag_tensor *x) {
    ag_tensor acc;
    CHECK(ag_add_scalar(&acc, n->b, 0.0)); /* a new handle holding b, to accumulate into */
    for (int i = 0; i < n->nin; i++) add_product(&acc, n->w[i], x[i]);
    if (!n->nonlinear) return acc;
    ag_tensor out;
    CHECK(ag_tanh(&out, acc));
    CHECK(ag_tensor_free(acc));
    return out;
}

static mlp mlp_new(uint64_t seed) {
    static const int sizes[4] = {2, H1, H2, 1};
    mlp m = {0};
    uint64_t rng = seed;
    m.nlayers = 3;
    for (int l = 0; l < m.nlayers; l++) {
        layer *ly = &m.layers[l];
        ly->nin = sizes[l];
        ly->nout = sizes[l + 1];
        ly->neurons = malloc(sizeof(neuron) * (size_t)ly->nout);
        if (ly->neurons == NULL) {
            fprintf(stderr, "moons: out of memory\n");
            exit(1);
        }
        for (int j = 0; j < ly->nout; j++) ly->neurons[j] = neuron_new(&m, ly->nin, l < m.nlayers - 1, &rng);
    }
    return m;
}

/* The network's score for the inputs x[0], x[1] (0-d for one point, or 1-D for many). */
static ag_tensor mlp_forward(const mlp *m, ag_tensor x0, ag_tensor x1) {
    ag_tensor buf_a[H1 > H2 ? H1 : H2], buf_b[H1 > H2 ? H1 : H2];
    ag_tensor *in = buf_a, *out = buf_b;
    in[0] = x0;
    in[1] = x1;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *ly = &m->layers[l];
        for (int j = 0; j < ly->nout; j++) out[j] = neuron_forward(&ly->neurons[j], in);
        if (l > 0) /* the previous layer's outputs are recorded in the graph; release the handles */
            for (int i = 0; i < ly->nin; i++) CHECK(ag_tensor_free(in[i]));
        ag_tensor *t = in;
        in = out;
        out = t;
    }
    return in[0];
}

static void mlp_free(mlp *m) {
    for (int i = 0; i < m->nparams; i++) CHECK(ag_tensor_free(m->params[i]));
    for (int l = 0; l < m->nlayers; l++) {
        for (int j = 0; j < m->layers[l].nout; j++) free(m->layers[l].neurons[j].w);
        free(m->layers[l].neurons);
    }
}

/* ---- training ---- */

/* The mean hinge loss max(0, 1 - y * score) over the points idx[0..n-1]; *correct receives the
 * number of those points on the right side of the boundary. */
static ag_tensor batch_loss(const mlp *m, const double *xs, const double *ys, const double *labels,
                            const int *idx, int n, int *correct) {
    ag_tensor total = scalar(0.0);
    *correct = 0;
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        ag_tensor x0 = scalar(xs[i]), x1 = scalar(ys[i]);
        ag_tensor score = mlp_forward(m, x0, x1);
        double s;
        CHECK(ag_tensor_item(&s, score));
        *correct += (s > 0) == (labels[i] > 0);
        ag_tensor signed_score, margin, hinge, sum;
        CHECK(ag_mul_scalar(&signed_score, score, labels[i])); /* y * score */
        CHECK(ag_rsub_scalar(&margin, signed_score, 1.0));     /* 1 - y * score */
        CHECK(ag_relu(&hinge, margin));                        /* max(0, 1 - y * score) */
        CHECK(ag_add(&sum, total, hinge));
        ag_tensor handles[] = {x0, x1, score, signed_score, margin, hinge, total};
        for (size_t h = 0; h < sizeof handles / sizeof handles[0]; h++) CHECK(ag_tensor_free(handles[h]));
        total = sum;
    }
    ag_tensor mean;
    CHECK(ag_div_scalar(&mean, total, (double)n));
    CHECK(ag_tensor_free(total));
    return mean;
}

/* ---- the picture ---- */

/* The background colour for a score: blue for the -1 side, orange for +1, paler near 0. */
static void score_colour(char *out, size_t size, double score) {
    double c = fmin(fabs(score), 1.0);
    int level = (int)floor(c * 4.0 + 0.5); /* a few levels, so runs of equal colour merge */
    double a = 0.15 + 0.1 * level;          /* strength of the tint */
    int r, g, b;
    if (score < 0) {
        r = (int)lround(255 - a * (255 - 66)), g = (int)lround(255 - a * (255 - 133)), b = (int)lround(255 - a * (255 - 244));
    } else {
        r = (int)lround(255 - a * (255 - 245)), g = (int)lround(255 - a * (255 - 155)), b = (int)lround(255 - a * (255 - 66));
    }
    snprintf(out, size, "#%02x%02x%02x", r, g, b);
}

static int write_svg(const char *path, const mlp *m, const double *xs, const double *ys, const double *labels,
                     double accuracy) {
    enum { W = 600, H = 420, M = 30 }; /* picture size and margin, in pixels */
    const int PH = H - 2 * M - 20; /* the plot's height: the caption goes below it */
    const double cw = (double)(W - 2 * M) / GRID, ch = (double)PH / GRID;

    /* Score every grid cell centre in one pass: the neurons get 1-D tensors of coordinates. */
    static double gx[GRID * GRID], gy[GRID * GRID];
    for (int r = 0; r < GRID; r++)
        for (int c = 0; c < GRID; c++) {
            gx[r * GRID + c] = X_MIN + (X_MAX - X_MIN) * (c + 0.5) / GRID;
            gy[r * GRID + c] = Y_MAX - (Y_MAX - Y_MIN) * (r + 0.5) / GRID; /* row 0 at the top */
        }
    bool previous;
    CHECK(ag_set_grad_enabled(&previous, false));
    const int64_t n = GRID * GRID;
    ag_tensor tx, ty;
    CHECK(ag_tensor_from_data(&tx, gx, &n, 1, AG_FLOAT64));
    CHECK(ag_tensor_from_data(&ty, gy, &n, 1, AG_FLOAT64));
    ag_tensor scores = mlp_forward(m, tx, ty);
    CHECK(ag_set_grad_enabled(NULL, previous));
    static double score[GRID * GRID];
    CHECK(ag_tensor_copy_data(score, n, AG_FLOAT64, scores));
    CHECK(ag_tensor_free(scores));
    CHECK(ag_tensor_free(tx));
    CHECK(ag_tensor_free(ty));

    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "moons: cannot write %s\n", path);
        return 1;
    }
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", W,
            H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<g shape-rendering=\"crispEdges\">\n");
    /* One rectangle per run of equally coloured cells in a row. */
    for (int r = 0; r < GRID; r++) {
        int c = 0;
        while (c < GRID) {
            char colour[8], next[8];
            score_colour(colour, sizeof colour, score[r * GRID + c]);
            int end = c + 1;
            while (end < GRID) {
                score_colour(next, sizeof next, score[r * GRID + end]);
                if (next[1] != colour[1] || next[2] != colour[2] || next[3] != colour[3] || next[4] != colour[4] ||
                    next[5] != colour[5] || next[6] != colour[6])
                    break;
                end++;
            }
            fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n", M + c * cw,
                    M + r * ch, (end - c) * cw + 0.01, ch + 0.01, colour);
            c = end;
        }
    }
    fprintf(f, "</g>\n");
    /* The data points. */
    for (int i = 0; i < N_POINTS; i++) {
        double px = M + (xs[i] - X_MIN) / (X_MAX - X_MIN) * (W - 2 * M);
        double py = M + (Y_MAX - ys[i]) / (Y_MAX - Y_MIN) * PH;
        fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"5\" fill=\"%s\" stroke=\"black\" stroke-width=\"1\"/>\n", px,
                py, labels[i] < 0 ? "#1f5fd6" : "#e8740c");
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", M, M, W - 2 * M,
            PH);
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"14\" text-anchor=\"middle\">"
            "two moons: MLP 2-%d-%d-1 of 0-d tensors, training accuracy %.0f%%</text>\n",
            W / 2, H - M + 20, H1, H2, 100 * accuracy);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "moons: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "moons.svg";
    static double xs[N_POINTS], ys[N_POINTS], labels[N_POINTS];
    make_moons(xs, ys, labels);

    mlp model = mlp_new(1);
    ag_optimizer opt;
    CHECK(ag_optimizer_sgd(&opt, model.params, model.nparams, LEARNING_RATE, MOMENTUM, false, WEIGHT_DECAY));
    printf("moons: %d points, MLP 2-%d-%d-1 (tanh) of %d scalar parameters, hinge loss, SGD with momentum, "
           "batches of %d, %d steps\n",
           N_POINTS, H1, H2, model.nparams, BATCH, STEPS);

    int order[N_POINTS];
    for (int i = 0; i < N_POINTS; i++) order[i] = i;
    uint64_t batch_rng = BATCH_SEED;
    int pos = N_POINTS;
    double loss_sum = 0;
    int correct_sum = 0, seen = 0;
    for (int step = 1; step <= STEPS; step++) {
        /* Reshuffle the points each time they have all been used (Fisher-Yates). */
        if (pos + BATCH > N_POINTS) {
            for (int i = N_POINTS - 1; i > 0; i--) {
                int j = (int)(splitmix64(&batch_rng) % (uint64_t)(i + 1)), t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
            pos = 0;
        }
        /* The learning rate falls from LEARNING_RATE to a tenth of it in steps. */
        CHECK(ag_optimizer_set_lr(opt, LEARNING_RATE * (step <= STEPS / 2 ? 1.0 : step <= 3 * STEPS / 4 ? 0.3 : 0.1)));

        int correct;
        ag_tensor loss = batch_loss(&model, xs, ys, labels, order + pos, BATCH, &correct);
        pos += BATCH;
        CHECK(ag_optimizer_zero_grad(opt));
        CHECK(ag_backward(loss, AG_NULL_TENSOR, false, false));
        CHECK(ag_optimizer_step(opt));
        double value;
        CHECK(ag_tensor_item(&value, loss));
        CHECK(ag_tensor_free(loss));
        loss_sum += value;
        correct_sum += correct;
        seen += BATCH;
        if (step % PRINT_EVERY == 0) {
            double lr;
            CHECK(ag_optimizer_lr(&lr, opt));
            printf("step %3d  lr %.3f  loss %.4f  batch accuracy %5.1f%%\n", step, lr, loss_sum / PRINT_EVERY,
                   100.0 * correct_sum / seen);
            fflush(stdout);
            loss_sum = 0;
            correct_sum = seen = 0;
        }
    }

    /* The accuracy over all the points, without recording a graph. */
    int all[N_POINTS], correct;
    for (int i = 0; i < N_POINTS; i++) all[i] = i;
    bool previous;
    CHECK(ag_set_grad_enabled(&previous, false));
    ag_tensor loss = batch_loss(&model, xs, ys, labels, all, N_POINTS, &correct);
    CHECK(ag_set_grad_enabled(NULL, previous));
    double value;
    CHECK(ag_tensor_item(&value, loss));
    CHECK(ag_tensor_free(loss));
    double accuracy = (double)correct / N_POINTS;
    printf("final: loss %.4f, accuracy %.0f%% (%d of %d points)\n", value, 100 * accuracy, correct, N_POINTS);

    int status = write_svg(path, &model, xs, ys, labels, accuracy);
    if (status == 0) printf("decision boundary written to %s\n", path);

    CHECK(ag_optimizer_free(opt));
    mlp_free(&model);
    int64_t live;
    CHECK(ag_live_handle_count(&live));
    if (live != 0) {
        fprintf(stderr, "moons: %lld handles still live at the end\n", (long long)live);
        return 1;
    }
    return status;
}
