/*
 * test_inplace.c - in-place writes and what they must not break (issue 14, items 11 and 12):
 *   - version counters: a backward through a retained graph whose saved values were written in
 *     place since (an optimizer step, ag_tensor_copy_, a write through a detached alias) fails
 *     with AG_ERR_STATE naming the op, in every path (fused small same-shape rules, the
 *     tensor-op rules above the fusion limit, create_graph, ag_grad); a graph built after the
 *     write runs;
 *   - ag_tensor_copy_: what it writes (hand-computed values), broadcasting, aliases, and its
 *     documented errors;
 *   - gradients own their memory: .grad never shares values with the parameter, the seed or
 *     another leaf's gradient, so an optimizer step cannot change a gradient the caller kept.
 * Expected values are derived by hand in the comments.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

static ag_tensor vec(const double *v, int64_t n, ag_dtype dt, bool rg) {
    return make_at(v, make_shape(&n, 1), dt, rg, HERE);
}

static bool message_has(const char *needle) {
    const char *m = ag_last_error();
    bool ok = strstr(m, needle) != NULL;
    if (!ok) printf("  message was: %s\n", m);
    return ok;
}

/* The case: sum(x*x) built at x = 1,2,3, retained; an SGD step (lr 1: x - 1 * 2x = -x)
 * moves x to -1,-2,-3; the second backward must refuse (it used to give dx = -2,-4,-6, the
 * gradient at the new x, while the loss still read 14). For n above the fusion limit (4096)
 * the tensor-op rule runs instead of the fused one. */
static void stale_after_optimizer_step(int64_t n, ag_dtype dt) {
    set_ctx("n=%" PRId64 " dtype=%d", n, (int)dt);
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (double)(i % 3 + 1);
    ag_tensor x = vec(v, n, dt, true), y = 0, loss = 0, g = 0;
    ag_optimizer opt = 0;
    TRY(ag_mul(&y, x, x));
    TRY(ag_sum(&loss, y, NULL, 0, false));
    CHECK_OK(ag_backward(loss, 0, true, false));
    TRY(ag_tensor_grad(&g, x));
    double *first = malloc((size_t)n * sizeof *first), *now = malloc((size_t)n * sizeof *now);
    double *after = malloc((size_t)n * sizeof *after), *fresh = malloc((size_t)n * sizeof *fresh);
    TRY(ag_tensor_copy_data(first, n, AG_FLOAT64, g)); /* 2x = 2, 4, 6 */
    CHECK(first[0] == 2 && first[1] == 4 && first[2] == 6);
    TRY(ag_optimizer_sgd(&opt, &x, 1, 1.0, 0, false, 0));
    CHECK_OK(ag_optimizer_step(opt));
    TRY(ag_tensor_copy_data(now, n, AG_FLOAT64, x));
    CHECK(now[0] == -1 && now[1] == -2 && now[2] == -3);
    CHECK_ERR(ag_backward(loss, 0, true, false), AG_ERR_STATE);
    CHECK(message_has("'mul'"));
    CHECK(message_has("modified in place"));
    /* Nothing was accumulated by the refused pass: .grad is still 2, 4, 6. */
    ag_tensor g2 = 0;
    TRY(ag_tensor_grad(&g2, x));
    TRY(ag_tensor_copy_data(after, n, AG_FLOAT64, g2));
    CHECK(after[0] == 2 && after[1] == 4 && after[2] == 6);
    /* ag_grad and create_graph refuse as well. */
    ag_tensor dx = SENTINEL;
    CHECK_ERR(ag_grad(&dx, &loss, 1, NULL, &x, 1, true, false, false), AG_ERR_STATE);
    CHECK(dx == SENTINEL);
    CHECK_ERR(ag_backward(loss, 0, true, true), AG_ERR_STATE);
    /* A graph built after the step runs, at the new values: d/dx sum(x*x) = 2x = -2, -4, -6,
     * added to the 2, 4, 6 already there: 0, 0, 0. */
    ag_tensor y2 = 0, loss2 = 0, g3 = 0;
    TRY(ag_mul(&y2, x, x));
    TRY(ag_sum(&loss2, y2, NULL, 0, false));
    CHECK_OK(ag_backward(loss2, 0, false, false));
    TRY(ag_tensor_grad(&g3, x));
    TRY(ag_tensor_copy_data(fresh, n, AG_FLOAT64, g3));
    CHECK(fresh[0] == 0 && fresh[1] == 0 && fresh[2] == 0);
    FREE(x, y, loss, g, g2, y2, loss2, g3);
    TRY(ag_optimizer_free(opt));
    free(v);
    free(first);
    free(now);
    free(after);
    free(fresh);
    set_ctx("%s", "");
}

static void stale_small_f64(void) { stale_after_optimizer_step(3, AG_FLOAT64); }
static void stale_small_f32(void) { stale_after_optimizer_step(3, AG_FLOAT32); }
static void stale_large_f64(void) { stale_after_optimizer_step(5000, AG_FLOAT64); }

/* Writes through ag_tensor_copy_ and through a detached alias of a saved result are caught too:
 * exp saves its output; writing the output's values through detach(out) makes exp's rule
 * stale. tanh saves its output as well; log saves its input (a leaf not requiring grad). */
static void stale_after_copy(void) {
    ag_tensor x = vec(D(0.5, 1.0), 2, AG_FLOAT64, true), e = 0, s = 0, alias = 0, zeros = 0;
    TRY(ag_exp(&e, x));
    TRY(ag_sum(&s, e, NULL, 0, false));
    TRY(ag_detach(&alias, e));
    TRY(ag_tensor_zeros(&zeros, I64(2), 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_copy_(alias, zeros)); /* the alias is a leaf not requiring grad */
    CHECK_ERR(ag_backward(s, 0, true, false), AG_ERR_STATE);
    CHECK(message_has("'exp'"));
    CHECK(message_has("its output"));
    FREE(x, e, s, alias, zeros);

    /* A constant input saved by mul, rewritten: a * c with c not requiring grad. */
    ag_tensor a = vec(D(1, 2), 2, AG_FLOAT64, true), c = vec(D(3, 4), 2, AG_FLOAT64, false);
    ag_tensor m = 0, ms = 0, twos = 0, ga = 0;
    TRY(ag_mul(&m, a, c));
    TRY(ag_sum(&ms, m, NULL, 0, false));
    TRY(ag_tensor_full(&twos, I64(2), 1, 2.0, AG_FLOAT64));
    CHECK_OK(ag_tensor_copy_(c, twos));
    CHECK_ERR(ag_backward(ms, 0, true, false), AG_ERR_STATE);
    CHECK(message_has("'mul'"));
    /* Without the write the same pass gives dc = c: check on a fresh graph at the new c (2, 2). */
    ag_tensor m2 = 0, ms2 = 0;
    TRY(ag_mul(&m2, a, c));
    TRY(ag_sum(&ms2, m2, NULL, 0, false));
    CHECK_OK(ag_backward(ms2, 0, false, false));
    TRY(ag_tensor_grad(&ga, a));
    EXPECT_VALUES(ga, D(2, 2), 2, "da = c after the write");
    FREE(a, c, m, ms, twos, ga, m2, ms2);
}

/* A write to values the graph did not save leaves it usable: add saves nothing. */
static void unsaved_write_is_fine(void) {
    ag_tensor a = vec(D(1, 2), 2, AG_FLOAT64, true), b = vec(D(5, 6), 2, AG_FLOAT64, false);
    ag_tensor s = 0, t = 0, ones = 0, ga = 0;
    TRY(ag_add(&s, a, b));
    TRY(ag_sum(&t, s, NULL, 0, false));
    TRY(ag_tensor_ones(&ones, I64(2), 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_copy_(b, ones));
    CHECK_OK(ag_backward(t, 0, false, false));
    TRY(ag_tensor_grad(&ga, a));
    EXPECT_VALUES(ga, D(1, 1), 2, "d/da sum(a + b) = 1");
    FREE(a, b, s, t, ones, ga);
}

static void copy_semantics(void) {
    /* Same shape: the values are replaced; a detached alias sees them. */
    ag_tensor d = vec(D(1, 2, 3), 3, AG_FLOAT64, false), src = vec(D(7, 8, 9), 3, AG_FLOAT64, false), alias = 0;
    TRY(ag_detach(&alias, d));
    CHECK_OK(ag_tensor_copy_(d, src));
    EXPECT_VALUES(d, D(7, 8, 9), 3, "copied");
    EXPECT_VALUES(alias, D(7, 8, 9), 3, "seen through the alias");
    /* Broadcast: a scalar and a row fill a matrix. */
    ag_tensor m = make_at(D(0, 0, 0, 0, 0, 0), SHAPE(2, 3), AG_FLOAT64, false, HERE);
    ag_tensor five = SCALAR(5), row = vec(D(1, 2, 3), 3, AG_FLOAT64, false);
    CHECK_OK(ag_tensor_copy_(m, five));
    EXPECT_VALUES(m, D(5, 5, 5, 5, 5, 5), 6, "scalar broadcast");
    CHECK_OK(ag_tensor_copy_(m, row));
    EXPECT_VALUES(m, D(1, 2, 3, 1, 2, 3), 6, "row broadcast");
    /* Source sharing the destination's values. */
    CHECK_OK(ag_tensor_copy_(d, alias));
    EXPECT_VALUES(d, D(7, 8, 9), 3, "self copy");
    /* Under no_grad, a leaf that requires grad may be written (the optimizer idiom). */
    ag_tensor w = vec(D(1, 1), 2, AG_FLOAT64, true), half = vec(D(0.5, 0.25), 2, AG_FLOAT64, false);
    bool prev = true;
    TRY(ag_set_grad_enabled(&prev, false));
    CHECK_OK(ag_tensor_copy_(w, half));
    TRY(ag_set_grad_enabled(NULL, prev));
    EXPECT_VALUES(w, D(0.5, 0.25), 2, "no_grad write into a parameter");
    bool rg = false;
    TRY(ag_tensor_requires_grad(&rg, w));
    CHECK(rg); /* still a leaf requiring grad */
    FREE(d, src, alias, m, five, row, w, half);
}

static void copy_errors(void) {
    ag_tensor w = vec(D(1, 2), 2, AG_FLOAT64, true), v = vec(D(3, 4), 2, AG_FLOAT64, false);
    ag_tensor f = vec(D(3, 4), 2, AG_FLOAT32, false), three = vec(D(1, 2, 3), 3, AG_FLOAT64, false);
    ag_tensor r = 0, dead = vec(D(0), 1, AG_FLOAT64, false);
    /* grad mode on, dst requires grad */
    CHECK_ERR(ag_tensor_copy_(w, v), AG_ERR_STATE);
    CHECK(message_has("grad mode"));
    EXPECT_VALUES(w, D(1, 2), 2, "nothing written");
    /* the result of a recorded op */
    TRY(ag_mul(&r, w, w));
    bool prev = true;
    TRY(ag_set_grad_enabled(&prev, false));
    CHECK_ERR(ag_tensor_copy_(r, v), AG_ERR_STATE);
    CHECK(message_has("'mul'"));
    TRY(ag_set_grad_enabled(NULL, prev));
    CHECK_ERR(ag_tensor_copy_(v, f), AG_ERR_DTYPE);
    CHECK_ERR(ag_tensor_copy_(v, three), AG_ERR_SHAPE);
    EXPECT_VALUES(v, D(3, 4), 2, "nothing written");
    /* a smaller dst than src cannot receive a broadcast */
    CHECK_ERR(ag_tensor_copy_(dead, v), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_copy_(0, v), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_copy_(v, 0), AG_ERR_INVALID_HANDLE);
    TRY(ag_tensor_free(dead));
    CHECK_ERR(ag_tensor_copy_(v, dead), AG_ERR_INVALID_HANDLE);
    FREE(w, v, f, three, r);
}

static const void *ptr_of(ag_tensor t) {
    const void *p = NULL;
    TRY(ag_tensor_data_ptr(&p, t));
    return p;
}

/* Item 11: the seed is the parameter itself; reshape passes the gradient through unchanged,
 * so .grad used to be the parameter's own memory. An SGD step (p -= 0.5 * g) then changed the
 * gradient the caller kept. Hand values: p = 2, 4; g = seed = p = 2, 4; after the step
 * p = 1, 2 and the kept gradient must still read 2, 4. */
static void grad_does_not_alias_seed(void) {
    ag_tensor p = vec(D(2, 4), 2, AG_FLOAT64, true), y = 0, g = 0, pd = 0;
    ag_optimizer opt = 0;
    TRY(ag_reshape(&y, p, I64(2), 1));
    CHECK_OK(ag_backward(y, p, false, false));
    TRY(ag_tensor_grad(&g, p));
    CHECK(ptr_of(g) != ptr_of(p));
    TRY(ag_optimizer_sgd(&opt, &p, 1, 0.5, 0, false, 0));
    CHECK_OK(ag_optimizer_step(opt));
    EXPECT_VALUES(p, D(1, 2), 2, "p - 0.5 * (2, 4)");
    EXPECT_VALUES(g, D(2, 4), 2, "the kept gradient is unchanged");
    /* A detached view of the parameter as the seed. */
    ag_tensor y2 = 0, g2 = 0;
    TRY(ag_detach(&pd, p));
    TRY(ag_tensor_zero_grad(p));
    TRY(ag_reshape(&y2, p, I64(2), 1));
    CHECK_OK(ag_backward(y2, pd, false, false));
    TRY(ag_tensor_grad(&g2, p));
    CHECK(ptr_of(g2) != ptr_of(p));
    CHECK_OK(ag_optimizer_step(opt));
    EXPECT_VALUES(p, D(0.5, 1), 2, "p - 0.5 * (1, 2)");
    EXPECT_VALUES(g2, D(1, 2), 2, "the kept gradient is unchanged");
    FREE(p, y, g, pd, y2, g2);
    TRY(ag_optimizer_free(opt));
}

/* a + b passes one gradient to both leaves: their .grad must not share memory with each other
 * or with the seed; ag_grad's results neither. */
static void grads_do_not_alias_each_other(void) {
    ag_tensor a = vec(D(1, 2), 2, AG_FLOAT64, true), b = vec(D(3, 4), 2, AG_FLOAT64, true);
    ag_tensor s = vec(D(10, 20), 2, AG_FLOAT64, false), y = 0, ga = 0, gb = 0;
    TRY(ag_add(&y, a, b));
    CHECK_OK(ag_backward(y, s, true, false));
    TRY(ag_tensor_grad(&ga, a));
    TRY(ag_tensor_grad(&gb, b));
    CHECK(ptr_of(ga) != ptr_of(gb));
    CHECK(ptr_of(ga) != ptr_of(s) && ptr_of(gb) != ptr_of(s));
    ag_tensor zero = vec(D(0, 0), 2, AG_FLOAT64, false);
    CHECK_OK(ag_tensor_copy_(s, zero)); /* rewriting the seed leaves the gradients alone */
    EXPECT_VALUES(ga, D(10, 20), 2, "da");
    EXPECT_VALUES(gb, D(10, 20), 2, "db");
    /* ag_grad of y with respect to itself returns the seed's values, in memory of its own. */
    ag_tensor s2 = vec(D(5, 6), 2, AG_FLOAT64, false), gy = 0;
    CHECK_OK(ag_grad(&gy, &y, 1, &s2, &y, 1, true, false, false));
    CHECK(ptr_of(gy) != ptr_of(s2));
    EXPECT_VALUES(gy, D(5, 6), 2, "dy/dy . seed");
    FREE(a, b, s, y, ga, gb, zero, s2, gy);
}

int main(void) {
    test_begin();
    run_group_checking_handles("stale backward after an optimizer step (fused, f64)", stale_small_f64);
    run_group_checking_handles("stale backward after an optimizer step (fused, f32)", stale_small_f32);
    run_group_checking_handles("stale backward after an optimizer step (tensor-op rule)", stale_large_f64);
    run_group_checking_handles("stale backward after ag_tensor_copy_ and through an alias", stale_after_copy);
    run_group_checking_handles("a write to values no node saved", unsaved_write_is_fine);
    run_group_checking_handles("ag_tensor_copy_ semantics", copy_semantics);
    run_group_checking_handles("ag_tensor_copy_ errors", copy_errors);
    run_group_checking_handles(".grad does not alias the seed or the parameter", grad_does_not_alias_seed);
    run_group_checking_handles("gradients do not alias each other", grads_do_not_alias_each_other);
    check_no_leaks();
    return test_summary();
}
