/*
 * char_transformer.c - a makemore-style character-level transformer trained from C.
 *
 * The data: the English word list of Debian's wamerican package (/usr/share/dict/american-english;
 * scripts/char-transformer.sh installs it), keeping only the words made of the lower-case letters
 * a-z (63,875 words in wamerican 2020.12.07). A Fisher-Yates shuffle by a SplitMix64 generator
 * seeded with SPLIT_SEED orders them; the first tenth are the validation words, the others the
 * training words. Each set becomes one stream of tokens, every word followed by the boundary
 * token '.', the stream starting with one: ".word.word.word." (27 tokens: '.' = 0, 'a'..'z' =
 * 1..26). A training example is a window of CONTEXT = 16 tokens of the training stream at a random
 * offset, and its targets are the same window shifted by one, so every target is a real character
 * (a letter, or the end of a word): the loss is in nats per character, with no padding to mask.
 *
 * The model (GPT-2 style, pre-norm, 2 blocks, width 64, 4 heads of 16, context 16, 104,603
 * parameters, float32):
 *     x = tok_emb[idx] + pos_emb[0..T-1]
 *     per block: x = x + proj(attention(layer_norm(x)))      (q, k, v by one linear to 3*64,
 *                                                              causal, ag_scaled_dot_product_attention)
 *                x = x + fc2(gelu(fc(layer_norm(x))))        (64 -> 256 -> 64)
 *     logits = head(layer_norm(x))                            (64 -> 27)
 * and the loss is ag_cross_entropy_labels on the (B*T, 27) logits. Weights start as N(0, 0.02)
 * (the residual projections proj and fc2: N(0, 0.02 / sqrt(2 * layers)), as GPT-2), biases 0,
 * layer-norm gains 1, all drawn in one fixed order from one ag_generator seeded with INIT_SEED.
 * No dropout (a PyTorch twin could not draw the same masks).
 *
 * Training: AdamW (betas 0.9, 0.99, eps 1e-8, weight decay 0.01 on every parameter, as
 * torch.optim.AdamW's default), learning rate by ag_lr_warmup_cosine (linear warm-up over the
 * first 5% of the steps to BASE_LR, then a cosine down to BASE_LR / 10), gradients clipped to norm
 * 1.0 by ag_clip_grad_norm, batches of 32 windows whose offsets are drawn by ag_randint from an
 * ag_generator seeded with BATCH_SEED. Before the first step, every 500 steps (--eval-every) and
 * at the end the validation loss is measured on the whole validation stream, cut into consecutive
 * windows of 16 (each character counted once; the last partial window left out). Then 20 new words are sampled, one token at a time from a '.' context (temperature
 * 1), with ag_multinomial from an ag_generator seeded with SAMPLE_SEED, and the loss curve is
 * written as SVG.
 *
 * examples/char_transformer_torch.py repeats the training in PyTorch (same words, split, initial
 * weights and batches, read from the files --dump-init and --dump-batches write; same schedule,
 * clipping and AdamW) and checks that its validation loss lands within 2% of this program's.
 *
 * Usage: char_transformer [--steps N] [--svg PATH] [--words PATH] [--threads N] [--replay]
 *                         [--eval-every N] [--print-every N] [--dump-init PATH] [--dump-batches PATH]
 *                         [--samples N] [--no-loss-check]
 *   --steps N        training steps (default 4000, the full run; the schedule scales with N)
 *   --svg PATH       where the loss curve goes (default char_transformer.svg)
 *   --words PATH     the word list (default /usr/share/dict/american-english)
 *   --threads N      ag_set_num_threads(N) before training
 *   --replay         capture the training step once (ag_capture) and replay it on every later batch
 *   --dump-init PATH write the initial parameters (float32, in the order of spec_of) to PATH
 *   --dump-batches PATH write every step's 32 window offsets (int64) into the training stream
 *   --eval-every N   measure the validation loss every N steps (default 500) and at the end
 *   --print-every N  a progress line every N steps (default 100): step, mean loss, lr, ms/step
 *   --samples N      how many words to sample at the end (default and at most 20)
 *   --no-loss-check  do not fail on the validation loss (for smoke runs of a few steps)
 * Exits 1 on any error, if a handle is left live, or if the final validation loss is not below
 * MAX_VAL_LOSS = 2.3 nats per character, or, for runs shorter than 1000 steps, below
 * MAX_VAL_LOSS_SHORT = 2.8 (log 27 - 0.5). For scale, on this split: the uniform guess gives
 * log 27 = 3.30, letter frequencies 2.94, a bigram table 2.48 and a trigram table 2.15 (counted on
 * the training stream, smoothed); the full run reaches 2.04, 500 steps 2.27.
 *
 * --replay gives the same numbers as the default eager steps, bit for bit (a replay runs the same
 * arithmetic in the same order); scripts/c-tests.sh checks it on a short run.
 */
#define _POSIX_C_SOURCE 199309L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd.h"

/* ---- the experiment's constants (examples/char_transformer_torch.py uses the same) ---- */
enum {
    VOCAB = 27,   /* '.' and a..z */
    CONTEXT = 16, /* tokens per window */
    WIDTH = 64,
    HEADS = 4,
    HEAD_DIM = WIDTH / HEADS,
    LAYERS = 2,
    HIDDEN = 4 * WIDTH, /* the MLP's hidden width */
    BATCH = 32,
    DEFAULT_STEPS = 4000,
    EVAL_CHUNK = 256, /* validation windows per forward pass */
    N_SAMPLES = 20,   /* words sampled at the end */
    MAX_SAMPLE = 24,  /* letters at most per sampled word */
    SHORT_RUN = 1000  /* runs shorter than this are checked against MAX_VAL_LOSS_SHORT */
};
static const double BASE_LR = 2e-3, MIN_LR = 2e-4;
static const double BETA1 = 0.9, BETA2 = 0.99, ADAM_EPS = 1e-8, WEIGHT_DECAY = 0.01;
static const double CLIP_NORM = 1.0, LN_EPS = 1e-5, INIT_STD = 0.02;
static const double MAX_VAL_LOSS = 2.3, MAX_VAL_LOSS_SHORT = 2.8;
static const uint64_t SPLIT_SEED = 2024, INIT_SEED = 1, BATCH_SEED = 7, SAMPLE_SEED = 42;

/* ---- error handling: every library call is checked ---- */

#define CHECK(call)                                                                                      \
    do {                                                                                                 \
        ag_status check_status_ = (call);                                                                \
        if (check_status_ != AG_OK) {                                                                    \
            fprintf(stderr, "char_transformer: %s failed: %s: %s\n", #call, ag_status_name(check_status_), \
                    ag_last_error());                                                                    \
            exit(1);                                                                                     \
        }                                                                                                \
    } while (0)

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes == 0 ? 1 : bytes);
    if (p == NULL) {
        fprintf(stderr, "char_transformer: out of memory\n");
        exit(1);
    }
    return p;
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- SplitMix64 (the library's generator) and the split's shuffle, as examples/digits.c ---- */

static uint64_t splitmix64_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Fisher-Yates: for i = n-1 .. 1, j = next mod (i + 1), swap a[i] and a[j]. */
static void shuffle(int64_t *a, int64_t n, uint64_t seed) {
    uint64_t state = seed;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64_next(&state) % (uint64_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- the data ---- */

typedef struct {
    char *text;      /* the kept words, each NUL-terminated, one after the other */
    int64_t *start;  /* word k begins at text + start[k] */
    int64_t count;
} word_list;

/* Reads the words of `path` made only of a..z (one per line), in file order. */
static word_list load_words(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr,
                "char_transformer: cannot open %s (install Debian's wamerican package: "
                "bash scripts/setup.sh, or pass a word list with --words)\n",
                path);
        exit(1);
    }
    size_t cap_text = 1 << 20, cap_words = 1 << 16, used = 0;
    word_list w = {xmalloc(cap_text), xmalloc(cap_words * sizeof(int64_t)), 0};
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        size_t n = strcspn(line, "\r\n");
        if (n == strlen(line) && !feof(f)) { /* a line longer than the buffer: skip the rest of it */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {}
            continue;
        }
        int keep = n > 0;
        for (size_t i = 0; i < n && keep; i++) keep = line[i] >= 'a' && line[i] <= 'z';
        if (!keep) continue;
        if (used + n + 1 > cap_text) {
            cap_text *= 2;
            w.text = realloc(w.text, cap_text);
        }
        if ((size_t)w.count == cap_words) {
            cap_words *= 2;
            w.start = realloc(w.start, cap_words * sizeof(int64_t));
        }
        if (w.text == NULL || w.start == NULL) {
            fprintf(stderr, "char_transformer: out of memory\n");
            exit(1);
        }
        memcpy(w.text + used, line, n);
        w.text[used + n] = '\0';
        w.start[w.count++] = (int64_t)used;
        used += n + 1;
    }
    fclose(f);
    if (w.count < 100) {
        fprintf(stderr, "char_transformer: %s holds only %lld lower-case words\n", path, (long long)w.count);
        exit(1);
    }
    return w;
}

/* One token stream: '.', then every word of `order[0..n-1]` followed by '.'. */
typedef struct {
    int64_t *tokens;
    int64_t length;
} stream;

static stream make_stream(const word_list *w, const int64_t *order, int64_t n) {
    int64_t length = 1;
    for (int64_t k = 0; k < n; k++) length += (int64_t)strlen(w->text + w->start[order[k]]) + 1;
    stream s = {xmalloc(sizeof(int64_t) * (size_t)length), length};
    int64_t at = 0;
    s.tokens[at++] = 0;
    for (int64_t k = 0; k < n; k++) {
        for (const char *c = w->text + w->start[order[k]]; *c; c++) s.tokens[at++] = *c - 'a' + 1;
        s.tokens[at++] = 0;
    }
    return s;
}

/* FNV-1a over a stream's tokens (one byte each), to check that the twin built the same one. */
static uint64_t stream_hash(const stream *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int64_t i = 0; i < s->length; i++) h = (h ^ (uint64_t)s->tokens[i]) * 0x100000001b3ULL;
    return h;
}

/* ---- the model ---- */

enum init_kind { INIT_ZERO, INIT_ONE, INIT_NORMAL, INIT_NORMAL_RESIDUAL };

typedef struct {
    const char *name;
    int64_t shape[2];
    int ndim;
    enum init_kind init;
} param_spec;

/* The parameters of one block, in order (the twin lists the same). */
enum { LN1_W, LN1_B, ATTN_W, ATTN_B, PROJ_W, PROJ_B, LN2_W, LN2_B, FC_W, FC_B, FC2_W, FC2_B, PER_BLOCK };
enum { TOK_EMB, POS_EMB, FIRST_BLOCK };
#define N_PARAMS (FIRST_BLOCK + LAYERS * PER_BLOCK + 4)
enum { LNF_W = FIRST_BLOCK + LAYERS * PER_BLOCK, LNF_B, HEAD_W, HEAD_B };

static const param_spec block_specs[PER_BLOCK] = {
    {"ln1.weight", {WIDTH}, 1, INIT_ONE},           {"ln1.bias", {WIDTH}, 1, INIT_ZERO},
    {"attn.weight", {3 * WIDTH, WIDTH}, 2, INIT_NORMAL}, {"attn.bias", {3 * WIDTH}, 1, INIT_ZERO},
    {"proj.weight", {WIDTH, WIDTH}, 2, INIT_NORMAL_RESIDUAL}, {"proj.bias", {WIDTH}, 1, INIT_ZERO},
    {"ln2.weight", {WIDTH}, 1, INIT_ONE},           {"ln2.bias", {WIDTH}, 1, INIT_ZERO},
    {"fc.weight", {HIDDEN, WIDTH}, 2, INIT_NORMAL}, {"fc.bias", {HIDDEN}, 1, INIT_ZERO},
    {"fc2.weight", {WIDTH, HIDDEN}, 2, INIT_NORMAL_RESIDUAL}, {"fc2.bias", {WIDTH}, 1, INIT_ZERO},
};

static param_spec spec_of(int k) {
    static const param_spec head[FIRST_BLOCK] = {{"tok_emb", {VOCAB, WIDTH}, 2, INIT_NORMAL},
                                                 {"pos_emb", {CONTEXT, WIDTH}, 2, INIT_NORMAL}};
    static const param_spec tail[4] = {{"ln_f.weight", {WIDTH}, 1, INIT_ONE},
                                       {"ln_f.bias", {WIDTH}, 1, INIT_ZERO},
                                       {"head.weight", {VOCAB, WIDTH}, 2, INIT_NORMAL},
                                       {"head.bias", {VOCAB}, 1, INIT_ZERO}};
    if (k < FIRST_BLOCK) return head[k];
    if (k < LNF_W) return block_specs[(k - FIRST_BLOCK) % PER_BLOCK];
    return tail[k - LNF_W];
}

typedef struct {
    ag_tensor p[N_PARAMS];
} model;

/* Parameter `which` of block `b`. */
static ag_tensor bp(const model *m, int b, int which) { return m->p[FIRST_BLOCK + b * PER_BLOCK + which]; }

/* Every parameter, drawn in order from one generator (normal ones only draw). */
static model model_new(void) {
    model m;
    ag_generator g;
    CHECK(ag_generator_new(&g, INIT_SEED));
    for (int k = 0; k < N_PARAMS; k++) {
        param_spec s = spec_of(k);
        switch (s.init) {
        case INIT_ZERO: CHECK(ag_tensor_zeros(&m.p[k], s.shape, s.ndim, AG_FLOAT32)); break;
        case INIT_ONE: CHECK(ag_tensor_ones(&m.p[k], s.shape, s.ndim, AG_FLOAT32)); break;
        case INIT_NORMAL: CHECK(ag_random_normal(&m.p[k], s.shape, s.ndim, 0.0, INIT_STD, g, AG_FLOAT32)); break;
        case INIT_NORMAL_RESIDUAL:
            CHECK(ag_random_normal(&m.p[k], s.shape, s.ndim, 0.0, INIT_STD / sqrt(2.0 * LAYERS), g, AG_FLOAT32));
            break;
        }
        CHECK(ag_tensor_set_requires_grad(m.p[k], true));
    }
    CHECK(ag_generator_free(g));
    return m;
}

static void model_free(model *m) {
    for (int k = 0; k < N_PARAMS; k++) CHECK(ag_tensor_free(m->p[k]));
}

static int64_t parameter_count(const model *m) {
    int64_t total = 0;
    for (int k = 0; k < N_PARAMS; k++) {
        int64_t n;
        CHECK(ag_tensor_numel(&n, m->p[k]));
        total += n;
    }
    return total;
}

/* FNV-1a over the bytes of every parameter (float32, in order): equal hashes, equal weights. */
static uint64_t weights_hash(const model *m) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int k = 0; k < N_PARAMS; k++) {
        int64_t n;
        const unsigned char *p;
        CHECK(ag_tensor_numel(&n, m->p[k]));
        CHECK(ag_tensor_data_ptr((const void **)&p, m->p[k]));
        for (int64_t i = 0; i < n * (int64_t)sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return h;
}

/* The intermediate handles of one forward pass, freed together at its end (the graph keeps what
 * the backward needs). */
typedef struct {
    ag_tensor h[128];
    int n;
} scratch;

static ag_tensor keep(scratch *s, ag_tensor t) {
    if (s->n == (int)(sizeof s->h / sizeof s->h[0])) {
        fprintf(stderr, "char_transformer: scratch full\n");
        exit(1);
    }
    s->h[s->n++] = t;
    return t;
}

static void scratch_free(scratch *s) {
    for (int i = 0; i < s->n; i++) CHECK(ag_tensor_free(s->h[i]));
    s->n = 0;
}

/* One of q, k, v (part 0, 1, 2) of qkv (B, T, 3*WIDTH) as (B, HEADS, T, HEAD_DIM). */
static ag_tensor head_split(scratch *s, ag_tensor qkv, int part, int64_t b, int64_t t) {
    ag_tensor x;
    CHECK(ag_slice(&x, qkv, 2, part * WIDTH, (part + 1) * WIDTH, 1));
    keep(s, x);
    CHECK(ag_reshape(&x, x, (int64_t[]){b, t, HEADS, HEAD_DIM}, 4));
    keep(s, x);
    CHECK(ag_transpose(&x, x, 1, 2));
    return keep(s, x);
}

/* The logits (B*T, VOCAB) for the token windows idx (B, T) int64, T <= CONTEXT. */
static ag_tensor forward(const model *m, ag_tensor idx, int64_t b, int64_t t) {
    scratch s = {.n = 0};
    ag_tensor tok, pos, x, h, y;
    CHECK(ag_embedding(&tok, idx, m->p[TOK_EMB]));
    keep(&s, tok);
    CHECK(ag_slice(&pos, m->p[POS_EMB], 0, 0, t, 1));
    keep(&s, pos);
    CHECK(ag_add(&x, tok, pos));
    keep(&s, x);
    for (int l = 0; l < LAYERS; l++) {
        /* x = x + proj(attention(layer_norm(x))) */
        CHECK(ag_layer_norm(&h, x, 1, bp(m, l, LN1_W), bp(m, l, LN1_B), LN_EPS));
        keep(&s, h);
        ag_tensor qkv;
        CHECK(ag_linear(&qkv, h, bp(m, l, ATTN_W), bp(m, l, ATTN_B)));
        keep(&s, qkv);
        ag_tensor q = head_split(&s, qkv, 0, b, t), k = head_split(&s, qkv, 1, b, t);
        ag_tensor v = head_split(&s, qkv, 2, b, t);
        CHECK(ag_scaled_dot_product_attention(&y, q, k, v, AG_NULL_TENSOR, true, 0.0));
        keep(&s, y);
        CHECK(ag_transpose(&y, y, 1, 2)); /* (B, T, HEADS, HEAD_DIM) */
        keep(&s, y);
        CHECK(ag_reshape(&y, y, (int64_t[]){b, t, WIDTH}, 3));
        keep(&s, y);
        CHECK(ag_linear(&y, y, bp(m, l, PROJ_W), bp(m, l, PROJ_B)));
        keep(&s, y);
        CHECK(ag_add(&x, x, y));
        keep(&s, x);
        /* x = x + fc2(gelu(fc(layer_norm(x)))) */
        CHECK(ag_layer_norm(&h, x, 1, bp(m, l, LN2_W), bp(m, l, LN2_B), LN_EPS));
        keep(&s, h);
        CHECK(ag_linear(&y, h, bp(m, l, FC_W), bp(m, l, FC_B)));
        keep(&s, y);
        CHECK(ag_gelu(&y, y));
        keep(&s, y);
        CHECK(ag_linear(&y, y, bp(m, l, FC2_W), bp(m, l, FC2_B)));
        keep(&s, y);
        CHECK(ag_add(&x, x, y));
        keep(&s, x);
    }
    CHECK(ag_layer_norm(&h, x, 1, m->p[LNF_W], m->p[LNF_B], LN_EPS));
    keep(&s, h);
    ag_tensor logits, flat;
    CHECK(ag_linear(&logits, h, m->p[HEAD_W], m->p[HEAD_B]));
    keep(&s, logits);
    CHECK(ag_reshape(&flat, logits, (int64_t[]){b * t, VOCAB}, 2));
    scratch_free(&s);
    return flat;
}

/* ---- training ---- */

typedef struct {
    const model *m;
    ag_optimizer opt;
    double grad_norm; /* the last step's gradient norm before clipping (eager steps only) */
    double loss;      /* the loss of the step ag_capture ran */
} trainer;

/* One step on the windows x (BATCH, CONTEXT) with targets y (BATCH * CONTEXT): forward, loss,
 * zero_grad, backward, clipping, an AdamW step (at the learning rate set before). Returns the loss. */
static ag_tensor train_step(trainer *tr, ag_tensor x, ag_tensor y) {
    ag_tensor logits = forward(tr->m, x, BATCH, CONTEXT), loss;
    CHECK(ag_cross_entropy_labels(&loss, logits, y));
    CHECK(ag_optimizer_zero_grad(tr->opt));
    CHECK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CHECK(ag_clip_grad_norm(&tr->grad_norm, tr->m->p, N_PARAMS, CLIP_NORM, 2.0));
    CHECK(ag_optimizer_step(tr->opt));
    CHECK(ag_tensor_free(logits));
    return loss;
}

/* ag_capture's function: train_step on the placeholders (x, y); its one output is the loss. */
static int32_t capture_step(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                            void *user_data) {
    trainer *tr = user_data;
    if (noutputs != 1 || ninputs != 2) return 1;
    outputs[0] = train_step(tr, inputs[0], inputs[1]);
    return ag_tensor_item(&tr->loss, outputs[0]) == AG_OK ? 0 : 1;
}

/* The windows at offsets off[0..n-1] of a stream: x[i] = s[o .. o+T-1], y[i] = s[o+1 .. o+T]. */
static void gather_windows(int64_t *x, int64_t *y, const stream *s, const int64_t *off, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        memcpy(x + i * CONTEXT, s->tokens + off[i], CONTEXT * sizeof(int64_t));
        memcpy(y + i * CONTEXT, s->tokens + off[i] + 1, CONTEXT * sizeof(int64_t));
    }
}

/* The mean loss in nats per character over the validation stream cut into consecutive windows
 * of CONTEXT tokens (the last partial window left out), without recording a graph. */
static double validation_loss(const model *m, const stream *val, int64_t *windows_out) {
    bool previous;
    CHECK(ag_set_grad_enabled(&previous, false));
    const int64_t windows = (val->length - 1) / CONTEXT;
    int64_t *off = xmalloc(sizeof(int64_t) * EVAL_CHUNK);
    int64_t *x = xmalloc(sizeof(int64_t) * EVAL_CHUNK * CONTEXT), *y = xmalloc(sizeof(int64_t) * EVAL_CHUNK * CONTEXT);
    double total = 0;
    for (int64_t first = 0; first < windows; first += EVAL_CHUNK) {
        int64_t n = windows - first < EVAL_CHUNK ? windows - first : EVAL_CHUNK;
        for (int64_t i = 0; i < n; i++) off[i] = (first + i) * CONTEXT;
        gather_windows(x, y, val, off, n);
        ag_tensor xt, yt, loss;
        CHECK(ag_tensor_from_data(&xt, x, (int64_t[]){n, CONTEXT}, 2, AG_INT64));
        CHECK(ag_tensor_from_data(&yt, y, (int64_t[]){n * CONTEXT}, 1, AG_INT64));
        ag_tensor logits = forward(m, xt, n, CONTEXT);
        CHECK(ag_cross_entropy_labels(&loss, logits, yt));
        double value;
        CHECK(ag_tensor_item(&value, loss));
        total += value * (double)(n * CONTEXT);
        CHECK(ag_tensor_free(loss));
        CHECK(ag_tensor_free(logits));
        CHECK(ag_tensor_free(xt));
        CHECK(ag_tensor_free(yt));
    }
    free(off);
    free(x);
    free(y);
    CHECK(ag_set_grad_enabled(NULL, previous));
    if (windows_out) *windows_out = windows;
    return total / (double)(windows * CONTEXT);
}

/* ---- sampling ---- */

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Samples rows_wanted (at most N_SAMPLES) words at once: every row starts from '.', and each round
 * feeds the last (up to CONTEXT) tokens of every row through the model, takes the softmax of the
 * last position's logits (temperature 1) and draws the next token with ag_multinomial; a row ends
 * at its first '.', or is cut after MAX_SAMPLE letters. */
static void sample_words(const model *m, int rows_wanted, char words[N_SAMPLES][MAX_SAMPLE + 1],
                         int cut[N_SAMPLES]) {
    if (rows_wanted == 0) return;
    bool previous;
    CHECK(ag_set_grad_enabled(&previous, false));
    ag_generator g;
    CHECK(ag_generator_new(&g, SAMPLE_SEED));
    int64_t seq[N_SAMPLES][MAX_SAMPLE + 1];
    int done[N_SAMPLES] = {0};
    for (int r = 0; r < rows_wanted; r++) seq[r][0] = 0, words[r][0] = '\0', cut[r] = 1;
    for (int len = 1; len <= MAX_SAMPLE; len++) { /* len tokens so far per row */
        int64_t t = len < CONTEXT ? len : CONTEXT;
        int64_t ctx[N_SAMPLES * CONTEXT];
        for (int r = 0; r < rows_wanted; r++) memcpy(ctx + r * t, seq[r] + len - t, sizeof(int64_t) * (size_t)t);
        ag_tensor idx, logits, rows, sliced, last, probs, drawn;
        CHECK(ag_tensor_from_data(&idx, ctx, (int64_t[]){rows_wanted, t}, 2, AG_INT64));
        logits = forward(m, idx, rows_wanted, t); /* (rows_wanted * t, VOCAB) */
        CHECK(ag_reshape(&rows, logits, (int64_t[]){rows_wanted, t, VOCAB}, 3));
        CHECK(ag_slice(&sliced, rows, 1, t - 1, t, 1));
        CHECK(ag_reshape(&last, sliced, (int64_t[]){rows_wanted, VOCAB}, 2));
        CHECK(ag_softmax(&probs, last, 1));
        CHECK(ag_multinomial(&drawn, probs, 1, true, g)); /* (rows_wanted, 1) */
        const int64_t *next;
        CHECK(ag_tensor_data_ptr((const void **)&next, drawn));
        int all_done = 1;
        for (int r = 0; r < rows_wanted; r++) {
            seq[r][len] = next[r];
            if (done[r]) continue;
            if (next[r] == 0) {
                done[r] = 1, cut[r] = 0;
            } else {
                words[r][len - 1] = (char)('a' + next[r] - 1);
                words[r][len] = '\0';
            }
            all_done &= done[r];
        }
        ag_tensor all[] = {idx, logits, rows, sliced, last, probs, drawn};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) CHECK(ag_tensor_free(all[i]));
        if (all_done) break;
    }
    CHECK(ag_generator_free(g));
    CHECK(ag_set_grad_enabled(NULL, previous));
}

/* ---- the loss curve as SVG ---- */

static int write_svg(const char *path, const double *train, int64_t steps, const int64_t *val_step,
                     const double *val, int64_t n_val) {
    FILE *f = fopen(path, "w");
    if (f == NULL) return 1;
    const double W = 640, H = 400, L = 60, R = 20, T = 30, B = 50;
    const double y_lo = 1.5, y_hi = 3.5;
#define X(step) (L + (W - L - R) * (double)(step) / (double)steps)
#define Y(v) (T + (H - T - B) * (y_hi - fmin(fmax((v), y_lo), y_hi)) / (y_hi - y_lo))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    fprintf(f, "<text x=\"%g\" y=\"18\" font-size=\"14\">char_transformer: loss (nats per character) by step</text>\n",
            L);
    for (double v = y_lo; v <= y_hi + 1e-9; v += 0.25) { /* horizontal grid and labels */
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#eee\"/>"
                   "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                L, Y(v), W - R, Y(v), L - 6, Y(v) + 4, v);
    }
    for (int k = 0; k <= 4; k++) {
        int64_t s = steps * k / 4;
        fprintf(f, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%lld</text>\n", X(s), H - B + 18,
                (long long)s);
    }
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 12);
    fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#888\"/>\n", L, T,
            W - L - R, H - T - B);
    /* log(27): the uniform guess */
    fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"5,4\"/>"
               "<text x=\"%g\" y=\"%.1f\" fill=\"#777\">uniform, log 27</text>\n",
            L, Y(log(27.0)), W - R, Y(log(27.0)), W - R - 100, Y(log(27.0)) - 4);
    /* the training loss, averaged over bins of steps (at most 300 points) */
    int64_t bin = steps / 300 + 1;
    fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (int64_t first = 0; first < steps; first += bin) {
        int64_t n = steps - first < bin ? steps - first : bin;
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += train[first + i];
        fprintf(f, "%.1f,%.1f ", X(first + n / 2.0), Y(sum / (double)n));
    }
    fprintf(f, "\"/>\n");
    /* the validation loss */
    fprintf(f, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
    for (int64_t i = 0; i < n_val; i++) fprintf(f, "%.1f,%.1f ", X(val_step[i]), Y(val[i]));
    fprintf(f, "\"/>\n");
    for (int64_t i = 0; i < n_val; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", X(val_step[i]), Y(val[i]));
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
               "<text x=\"%g\" y=\"%g\">training (mean of %lld steps)</text>\n",
            L + 20, H - B - 50, L + 44, H - B - 50, L + 50, H - B - 46, (long long)bin);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#d62728\" stroke-width=\"2\"/>"
               "<text x=\"%g\" y=\"%g\">validation</text>\n",
            L + 20, H - B - 30, L + 44, H - B - 30, L + 50, H - B - 26);
    if (n_val > 0)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#d62728\">%.3f</text>\n",
                X(val_step[n_val - 1]) - 6, Y(val[n_val - 1]) - 8, val[n_val - 1]);
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    return fclose(f) == 0 ? 0 : 1;
}

/* ---- the program ---- */

static void usage(void) {
    fprintf(stderr, "usage: char_transformer [--steps N] [--svg PATH] [--words PATH] [--threads N] [--replay]\n"
                    "                        [--eval-every N] [--print-every N] [--dump-init PATH] "
                    "[--dump-batches PATH] [--samples N] [--no-loss-check]\n");
    exit(2);
}

static int64_t parse_count(const char *s, int64_t min) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v < min) usage();
    return (int64_t)v;
}

int main(int argc, char **argv) {
    int64_t steps = DEFAULT_STEPS, threads = 0, eval_every = 500, print_every = 100, n_samples = N_SAMPLES;
    const char *svg_path = "char_transformer.svg", *words_path = "/usr/share/dict/american-english";
    const char *dump_init = NULL, *dump_batches = NULL;
    int replay = 0, loss_check = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--replay") == 0) {
            replay = 1;
            continue;
        }
        if (strcmp(a, "--no-loss-check") == 0) {
            loss_check = 0;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(a, "--steps") == 0) steps = parse_count(v, 1);
        else if (strcmp(a, "--threads") == 0) threads = parse_count(v, 1);
        else if (strcmp(a, "--eval-every") == 0) eval_every = parse_count(v, 1);
        else if (strcmp(a, "--print-every") == 0) print_every = parse_count(v, 1);
        else if (strcmp(a, "--samples") == 0) n_samples = parse_count(v, 0);
        else if (strcmp(a, "--svg") == 0) svg_path = v;
        else if (strcmp(a, "--words") == 0) words_path = v;
        else if (strcmp(a, "--dump-init") == 0) dump_init = v;
        else if (strcmp(a, "--dump-batches") == 0) dump_batches = v;
        else usage();
    }
    if (n_samples > N_SAMPLES) usage();
    if (threads > 0) CHECK(ag_set_num_threads(threads));
    CHECK(ag_num_threads(&threads));

    /* The data: the kept words, shuffled; the first tenth validate, the rest train. */
    word_list words = load_words(words_path);
    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)words.count);
    for (int64_t i = 0; i < words.count; i++) order[i] = i;
    shuffle(order, words.count, SPLIT_SEED);
    const int64_t n_val = words.count / 10, n_train = words.count - n_val;
    stream val = make_stream(&words, order, n_val);
    stream train = make_stream(&words, order + n_val, n_train);
    printf("data: %lld words of a-z from %s: %lld train (%lld tokens, fnv1a64 %016llx), %lld validation "
           "(%lld tokens, fnv1a64 %016llx)\n",
           (long long)words.count, words_path, (long long)n_train, (long long)train.length,
           (unsigned long long)stream_hash(&train), (long long)n_val, (long long)val.length,
           (unsigned long long)stream_hash(&val));

    /* The model and its optimizer. */
    model m = model_new();
    const int64_t warmup = steps / 20;
    printf("model: %d layers, %d heads, width %d, context %d, %lld parameters (float32); AdamW lr %g "
           "(warm-up %lld steps, cosine to %g), weight decay %g, clip %g, batch %d, %lld steps, %lld thread%s%s\n",
           LAYERS, HEADS, WIDTH, CONTEXT, (long long)parameter_count(&m), BASE_LR, (long long)warmup, MIN_LR,
           WEIGHT_DECAY, CLIP_NORM, BATCH, (long long)steps, (long long)threads, threads == 1 ? "" : "s",
           replay ? "; the step captured once and replayed" : "");
    fflush(stdout);
    if (dump_init != NULL) {
        FILE *f = fopen(dump_init, "wb");
        if (f == NULL) {
            fprintf(stderr, "char_transformer: cannot write %s\n", dump_init);
            return 1;
        }
        for (int k = 0; k < N_PARAMS; k++) {
            int64_t n;
            const float *values;
            CHECK(ag_tensor_numel(&n, m.p[k]));
            CHECK(ag_tensor_data_ptr((const void **)&values, m.p[k]));
            if (fwrite(values, sizeof(float), (size_t)n, f) != (size_t)n) return 1;
        }
        if (fclose(f) != 0) return 1;
    }
    FILE *batches_file = NULL;
    if (dump_batches != NULL && (batches_file = fopen(dump_batches, "wb")) == NULL) {
        fprintf(stderr, "char_transformer: cannot write %s\n", dump_batches);
        return 1;
    }
    ag_optimizer opt;
    CHECK(ag_optimizer_adamw(&opt, m.p, N_PARAMS, BASE_LR, BETA1, BETA2, ADAM_EPS, WEIGHT_DECAY));
    ag_generator batch_gen;
    CHECK(ag_generator_new(&batch_gen, BATCH_SEED));
    trainer tr = {&m, opt, 0, 0};

    /* The batch tensors, rewritten in place every step. */
    int64_t *xb = xmalloc(sizeof(int64_t) * BATCH * CONTEXT), *yb = xmalloc(sizeof(int64_t) * BATCH * CONTEXT);
    memset(xb, 0, sizeof(int64_t) * BATCH * CONTEXT);
    memset(yb, 0, sizeof(int64_t) * BATCH * CONTEXT);
    ag_tensor x, y, loss_out = AG_NULL_TENSOR;
    CHECK(ag_tensor_from_data(&x, xb, (int64_t[]){BATCH, CONTEXT}, 2, AG_INT64));
    CHECK(ag_tensor_from_data(&y, yb, (int64_t[]){BATCH * CONTEXT}, 1, AG_INT64));
    ag_function step_fn = AG_NULL_FUNCTION;

    double *train_loss = xmalloc(sizeof(double) * (size_t)steps);
    int64_t max_evals = steps / eval_every + 3, n_evals = 0;
    int64_t *eval_step = xmalloc(sizeof(int64_t) * (size_t)max_evals);
    double *eval_loss = xmalloc(sizeof(double) * (size_t)max_evals);
    double train_seconds = 0, window_seconds = 0, window_loss = 0;
    int64_t window_steps = 0;
    const double start = now_seconds();
    eval_step[0] = 0, eval_loss[0] = validation_loss(&m, &val, NULL), n_evals = 1;
    printf("step %5d  validation loss %.4f nats/char\n", 0, eval_loss[0]);
    for (int64_t step = 0; step < steps; step++) {
        const double t0 = now_seconds();
        double lr;
        CHECK(ag_lr_warmup_cosine(&lr, step, warmup, steps, BASE_LR, MIN_LR));
        CHECK(ag_optimizer_set_lr(opt, lr));
        ag_tensor off_t;
        CHECK(ag_randint(&off_t, (int64_t[]){BATCH}, 1, 0, train.length - CONTEXT, batch_gen));
        const int64_t *off;
        CHECK(ag_tensor_data_ptr((const void **)&off, off_t));
        gather_windows(xb, yb, &train, off, BATCH);
        if (batches_file != NULL && fwrite(off, sizeof(int64_t), BATCH, batches_file) != BATCH) return 1;
        CHECK(ag_tensor_free(off_t));
        CHECK(ag_tensor_set_data(x, xb, BATCH * CONTEXT, AG_INT64));
        CHECK(ag_tensor_set_data(y, yb, BATCH * CONTEXT, AG_INT64));
        double value;
        if (replay && step_fn == AG_NULL_FUNCTION) {
            CHECK(ag_capture(&step_fn, capture_step, (ag_tensor[]){x, y}, 2, 1, &tr));
            CHECK(ag_tensor_zeros(&loss_out, NULL, 0, AG_FLOAT32));
            value = tr.loss; /* the capture ran this first step */
        } else if (replay) {
            CHECK(ag_function_call_into(&loss_out, 1, step_fn, (ag_tensor[]){x, y}, 2));
            CHECK(ag_tensor_item(&value, loss_out));
        } else {
            ag_tensor loss = train_step(&tr, x, y);
            CHECK(ag_tensor_item(&value, loss));
            CHECK(ag_tensor_free(loss));
        }
        const double dt = now_seconds() - t0;
        train_seconds += dt, window_seconds += dt;
        train_loss[step] = value;
        window_loss += value, window_steps++;
        if ((step + 1) % print_every == 0 || step + 1 == steps) {
            printf("step %5lld/%lld  loss %.4f  lr %.6f  %6.2f ms/step\n", (long long)(step + 1), (long long)steps,
                   window_loss / (double)window_steps, lr, 1e3 * window_seconds / (double)window_steps);
            fflush(stdout);
            window_seconds = 0, window_loss = 0, window_steps = 0;
        }
        if ((step + 1) % eval_every == 0 || step + 1 == steps) {
            double v = validation_loss(&m, &val, NULL);
            eval_step[n_evals] = step + 1, eval_loss[n_evals++] = v;
            printf("step %5lld  validation loss %.4f nats/char  (%.1f s)\n", (long long)(step + 1), v,
                   now_seconds() - start);
            fflush(stdout);
        }
    }
    if (batches_file != NULL && fclose(batches_file) != 0) return 1;
    int64_t windows;
    const double final_val = validation_loss(&m, &val, &windows);
    printf("training: %lld steps of batch %d in %.2f s: %.2f ms/step (%lld thread%s%s)\n", (long long)steps, BATCH,
           train_seconds, 1e3 * train_seconds / (double)steps, (long long)threads, threads == 1 ? "" : "s",
           replay ? ", replayed" : "");
    printf("validation loss: %.6f nats per character (%lld windows of %d, %lld characters; uniform log 27 = %.4f)\n",
           final_val, (long long)windows, CONTEXT, (long long)(windows * CONTEXT), log(27.0));

    printf("final weights: fnv1a64 %016llx\n", (unsigned long long)weights_hash(&m));
    if (replay) {
        int64_t info[AG_FUNCTION_INFO_COUNT];
        CHECK(ag_function_info(info, AG_FUNCTION_INFO_COUNT, step_fn));
        printf("replay: the captured step: %lld steps recorded, %lld live, %lld instructions, %lld fused groups "
               "(%lld steps), %lld rerun by their op, arena %lld bytes, scratch %lld bytes\n",
               (long long)info[0], (long long)info[1], (long long)info[2], (long long)info[3], (long long)info[4],
               (long long)info[5], (long long)info[6], (long long)info[7]);
    }

    /* Samples. */
    char samples[N_SAMPLES][MAX_SAMPLE + 1];
    int cut[N_SAMPLES];
    sample_words(&m, (int)n_samples, samples, cut);
    const char **sorted = xmalloc(sizeof(char *) * (size_t)words.count);
    for (int64_t i = 0; i < words.count; i++) sorted[i] = words.text + words.start[i];
    qsort(sorted, (size_t)words.count, sizeof(char *), compare_strings);
    int fresh = 0;
    printf("samples (temperature 1; * = not in the word list):");
    for (int r = 0; r < n_samples; r++) {
        const char *key = samples[r];
        int known = bsearch(&key, sorted, (size_t)words.count, sizeof(char *), compare_strings) != NULL;
        fresh += !known;
        printf(" %s%s%s", samples[r], cut[r] ? "..." : "", known ? "" : "*");
    }
    printf("\n%d of %lld samples are new words\n", fresh, (long long)n_samples);

    int svg_failed = write_svg(svg_path, train_loss, steps, eval_step, eval_loss, n_evals);
    if (svg_failed)
        fprintf(stderr, "char_transformer: cannot write %s\n", svg_path);
    else
        printf("wrote %s\n", svg_path);

    /* Release everything, then check that no handle is left behind. */
    CHECK(ag_function_free(step_fn));
    CHECK(ag_tensor_free(loss_out));
    CHECK(ag_tensor_free(x));
    CHECK(ag_tensor_free(y));
    CHECK(ag_generator_free(batch_gen));
    CHECK(ag_optimizer_free(opt));
    model_free(&m);
    int64_t live;
    CHECK(ag_live_handle_count(&live));
    free(sorted);
    free(train_loss);
    free(eval_step);
    free(eval_loss);
    free(xb);
    free(yb);
    free(order);
    free(train.tokens);
    free(val.tokens);
    free(words.text);
    free(words.start);
    if (live != 0) {
        fprintf(stderr, "char_transformer: %lld handles still live at the end\n", (long long)live);
        return 1;
    }
    const double limit = steps < SHORT_RUN ? MAX_VAL_LOSS_SHORT : MAX_VAL_LOSS;
    if ((loss_check && !(final_val < limit)) || svg_failed) {
        fprintf(stderr, "char_transformer: FAILED: validation loss %.4f is not below %.2f nats per character%s\n",
                final_val, limit, svg_failed ? ", or the SVG was not written" : "");
        return 1;
    }
    if (loss_check)
        printf("char_transformer: OK (validation loss %.4f < %.2f) in %.1f s\n", final_val, limit,
               now_seconds() - start);
    else
        printf("char_transformer: OK (validation loss %.4f, not checked) in %.1f s\n", final_val, now_seconds() - start);
    return 0;
}
