/*
 * ode_fit.c - a user-defined op wrapping a numeric routine Autograd does not know: an ODE
 * integrator, with its adjoint written by hand, and a parameter fitted through it.
 *
 * The system is a damped pendulum, nonlinear in the angle:
 *     theta' = omega,    omega' = -K sin(theta) - c omega       (K = g / L, fixed)
 * The custom op "pendulum_rk4" takes the initial state y0 = (theta0, omega0) and the damping c
 * (a 0-d tensor) and returns the whole trajectory, N classical Runge-Kutta (RK4) steps of size
 * DT, as an [N + 1, 2] tensor. Its forward is plain C on raw arrays (read with
 * ag_tensor_copy_data, written with ag_tensor_from_data); so is its backward: the discrete
 * adjoint of RK4 (the vector-Jacobian product of each step with respect to the state and to c,
 * taken stage by stage in reverse, from the Jacobians of the right-hand side), run backwards over
 * the steps. It saves c and its own output (the states it needs) for the backward, and asks
 * ag_custom_ctx_needs_input_grad whether the initial state needs a gradient at all.
 *
 * The program
 *   1. checks the hand-written adjoint with ag_gradcheck (float64 finite differences) on a short
 *      trajectory, with respect to both y0 and c, and prints the result;
 *   2. makes synthetic observations: the angle every OBS_EVERY steps of a reference solution
 *      (RK4 with a step REF_REFINE times smaller, in plain C) for the true damping, plus seeded
 *      Gaussian noise;
 *   3. fits c by Adam on the mean squared error between the op's trajectory and the observations
 *      (ag_index_select and ag_slice pick the observed angles), printing a line every PRINT_EVERY
 *      iterations;
 *   4. prints the recovered against the true damping, writes the observations and the initial and
 *      fitted trajectories as an SVG picture, and exits with status 1 unless the gradient check
 *      passed and |c_fit - c_true| <= TOLERANCE.
 *
 * Usage: ode_fit [out.svg]   (default ode_fit.svg in the current directory)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"

/* ---- the experiment ---- */
enum {
    N_STEPS = 300,   /* RK4 steps of the fitted trajectory: 6 s */
    OBS_EVERY = 10,  /* an observation of theta every 10 steps (0.2 s) */
    REF_REFINE = 10, /* the reference solution's step is DT / REF_REFINE */
    ITERATIONS = 300,
    PRINT_EVERY = 25
};
static const double DT = 0.02;          /* s */
static const double K = 9.81;           /* g / L, 1/s^2: a 1 m pendulum */
static const double THETA0 = 1.2;       /* rad: large enough for sin(theta) != theta */
static const double OMEGA0 = 0.0;       /* rad/s */
static const double C_TRUE = 0.35;      /* 1/s: the damping to recover */
static const double C_INIT = 0.05;      /* the fit's starting guess */
static const double NOISE = 0.02;       /* rad: the observations' standard deviation */
static const double LEARNING_RATE = 0.02;
static const double TOLERANCE = 0.01;   /* on |c_fit - c_true| */

/* Stops the program with the library's message when a call fails. */
#define TRY(call)                                                                              \
    do {                                                                                       \
        ag_status st_ = (call);                                                                \
        if (st_ != AG_OK) {                                                                    \
            fprintf(stderr, "ode_fit: %s failed: %s: %s\n", #call, ag_status_name(st_), ag_last_error()); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* ========================================================================================== */
/* The numeric routine, on raw arrays                                                         */
/* ========================================================================================== */

/* The right-hand side f(s; c) of the pendulum at state s = (theta, omega). */
static void rhs(double out[2], const double s[2], double c) {
    out[0] = s[1];
    out[1] = -K * sin(s[0]) - c * s[1];
}

/* One RK4 step of size h from s to out. */
static void rk4_step(double out[2], const double s[2], double c, double h) {
    double k1[2], k2[2], k3[2], k4[2], u[2];
    rhs(k1, s, c);
    for (int i = 0; i < 2; i++) u[i] = s[i] + 0.5 * h * k1[i];
    rhs(k2, u, c);
    for (int i = 0; i < 2; i++) u[i] = s[i] + 0.5 * h * k2[i];
    rhs(k3, u, c);
    for (int i = 0; i < 2; i++) u[i] = s[i] + h * k3[i];
    rhs(k4, u, c);
    for (int i = 0; i < 2; i++) out[i] = s[i] + h / 6.0 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);
}

/* The transposed Jacobians of f at s applied to v: js = (df/ds)^T v, and adds (df/dc)^T v to *jc.
 * df/ds = [[0, 1], [-K cos(theta), -c]], df/dc = (0, -omega). */
static void rhs_vjp(double js[2], double *jc, const double s[2], double c, const double v[2]) {
    js[0] = -K * cos(s[0]) * v[1];
    js[1] = v[0] - c * v[1];
    *jc += -s[1] * v[1];
}

/* The adjoint of one RK4 step from s: given a = dL/d(out), writes as = dL/ds through this step
 * and adds dL/dc through it to *ac. The stages are recomputed, then differentiated in reverse. */
static void rk4_step_vjp(double as[2], double *ac, const double s[2], double c, double h, const double a[2]) {
    double k1[2], k2[2], k3[2], u2[2], u3[2], u4[2];
    rhs(k1, s, c);
    for (int i = 0; i < 2; i++) u2[i] = s[i] + 0.5 * h * k1[i];
    rhs(k2, u2, c);
    for (int i = 0; i < 2; i++) u3[i] = s[i] + 0.5 * h * k2[i];
    rhs(k3, u3, c);
    for (int i = 0; i < 2; i++) u4[i] = s[i] + h * k3[i];
    /* out = s + h/6 (k1 + 2 k2 + 2 k3 + k4) */
    double b1[2], b2[2], b3[2], b4[2], j[2];
    for (int i = 0; i < 2; i++) {
        as[i] = a[i];
        b1[i] = h / 6.0 * a[i];
        b2[i] = h / 3.0 * a[i];
        b3[i] = h / 3.0 * a[i];
        b4[i] = h / 6.0 * a[i];
    }
    /* k4 = f(u4), u4 = s + h k3 */
    rhs_vjp(j, ac, u4, c, b4);
    for (int i = 0; i < 2; i++) as[i] += j[i], b3[i] += h * j[i];
    /* k3 = f(u3), u3 = s + h/2 k2 */
    rhs_vjp(j, ac, u3, c, b3);
    for (int i = 0; i < 2; i++) as[i] += j[i], b2[i] += 0.5 * h * j[i];
    /* k2 = f(u2), u2 = s + h/2 k1 */
    rhs_vjp(j, ac, u2, c, b2);
    for (int i = 0; i < 2; i++) as[i] += j[i], b1[i] += 0.5 * h * j[i];
    /* k1 = f(s) */
    rhs_vjp(j, ac, s, c, b1);
    for (int i = 0; i < 2; i++) as[i] += j[i];
}

/* ========================================================================================== */
/* The custom op                                                                              */
/* ========================================================================================== */

/* The op's payload: how far and how finely it integrates. */
typedef struct {
    int64_t steps;
    double dt;
} integrator;

/* Reads t's float64 values into out (n of them); a message for the caller on failure. */
static ag_status read_f64(double *out, int64_t n, ag_tensor t) {
    ag_dtype dt = 0;
    int64_t numel = -1;
    ag_status st = ag_tensor_dtype(&dt, t);
    if (st == AG_OK) st = ag_tensor_numel(&numel, t);
    if (st != AG_OK) return st;
    if (dt != AG_FLOAT64 || numel != n) {
        ag_set_error("pendulum_rk4: expects float64 tensors: y0 of 2 elements, c of 1");
        return AG_ERR_ARGUMENT;
    }
    return ag_tensor_copy_data(out, n, AG_FLOAT64, t);
}

/* inputs: y0 [2], c (one element); output: the trajectory [steps + 1, 2]. */
static int32_t rk4_forward(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                           ag_custom_ctx ctx, void *payload) {
    (void)noutputs, (void)ninputs;
    const integrator *p = payload;
    double y0[2], c;
    ag_status st = read_f64(y0, 2, inputs[0]);
    if (st == AG_OK) st = read_f64(&c, 1, inputs[1]);
    if (st != AG_OK) return st;
    double *traj = malloc((size_t)(p->steps + 1) * 2 * sizeof *traj);
    if (!traj) {
        ag_set_error("pendulum_rk4: out of memory");
        return AG_ERR_OUT_OF_MEMORY;
    }
    traj[0] = y0[0], traj[1] = y0[1];
    for (int64_t n = 0; n < p->steps; n++) rk4_step(traj + 2 * (n + 1), traj + 2 * n, c, p->dt);
    int64_t shape[2] = {p->steps + 1, 2};
    st = ag_tensor_from_data(&outputs[0], traj, shape, 2, AG_FLOAT64);
    free(traj);
    /* The backward needs c and the states: the op's own output holds them. */
    if (st == AG_OK) st = ag_custom_ctx_save(ctx, (ag_tensor[]){inputs[1], outputs[0]}, 2);
    return st;
}

/* The discrete adjoint: from G = dL/d(trajectory), a = dL/d(state n) runs back from n = steps
 * to 0 (a_n = G[n] + step_vjp(a_{n+1})), accumulating dL/dc on the way; dL/dy0 = a_0. */
static int32_t rk4_backward(ag_tensor *input_grads, int64_t ninputs, const ag_tensor *output_grads,
                            int64_t noutputs, ag_custom_ctx ctx, void *payload) {
    (void)ninputs, (void)noutputs;
    const integrator *p = payload;
    int64_t m = (p->steps + 1) * 2;
    ag_tensor saved_c = AG_NULL_TENSOR, saved_traj = AG_NULL_TENSOR;
    double c = 0;
    double *traj = malloc((size_t)m * sizeof *traj), *G = malloc((size_t)m * sizeof *G);
    ag_status st = traj && G ? AG_OK : AG_ERR_OUT_OF_MEMORY;
    if (st == AG_OK) st = ag_custom_ctx_saved(&saved_c, ctx, 0);
    if (st == AG_OK) st = ag_custom_ctx_saved(&saved_traj, ctx, 1);
    if (st == AG_OK) st = read_f64(&c, 1, saved_c);
    if (st == AG_OK) st = ag_tensor_copy_data(traj, m, AG_FLOAT64, saved_traj);
    if (st == AG_OK) st = ag_tensor_copy_data(G, m, AG_FLOAT64, output_grads[0]);
    if (st == AG_OK) {
        double a[2] = {G[m - 2], G[m - 1]}, ac = 0, as[2];
        for (int64_t n = p->steps - 1; n >= 0; n--) {
            rk4_step_vjp(as, &ac, traj + 2 * n, c, p->dt, a);
            a[0] = as[0] + G[2 * n];
            a[1] = as[1] + G[2 * n + 1];
        }
        bool need_y0 = false, need_c = false;
        st = ag_custom_ctx_needs_input_grad(&need_y0, ctx, 0);
        if (st == AG_OK) st = ag_custom_ctx_needs_input_grad(&need_c, ctx, 1);
        /* AG_NULL_TENSOR (left as it is) where no gradient is wanted. */
        if (st == AG_OK && need_y0) st = ag_tensor_from_data(&input_grads[0], a, (int64_t[]){2}, 1, AG_FLOAT64);
        if (st == AG_OK && need_c) {
            /* In c's own shape (0-d here, or [1]). */
            int64_t shape[AG_MAX_NDIM], ndim = 0;
            st = ag_tensor_ndim(&ndim, saved_c);
            if (st == AG_OK) st = ag_tensor_shape(shape, AG_MAX_NDIM, saved_c);
            if (st == AG_OK) st = ag_tensor_from_data(&input_grads[1], &ac, shape, ndim, AG_FLOAT64);
        }
    }
    ag_tensor_free(saved_c);
    ag_tensor_free(saved_traj);
    free(traj);
    free(G);
    return st;
}

/* ========================================================================================== */
/* Gradient check, data, fit                                                                  */
/* ========================================================================================== */

/* For ag_gradcheck: the op's whole trajectory from (y0, c). */
static int32_t build_trajectory(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    return ag_custom_op_apply(out, 1, *(const ag_custom_op *)user_data, inputs, 2);
}

/* A seeded standard normal (xorshift64* and Box-Muller), for the observation noise. */
static double normal(uint64_t *state) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        *state ^= *state >> 12, *state ^= *state << 25, *state ^= *state >> 27;
        u[i] = ((double)((*state * 0x2545F4914F6CDD1DULL) >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* theta at every step of the op's trajectory for damping c, by the op itself (no gradient). */
static void trajectory_theta(double *theta, ag_custom_op op, ag_tensor y0, double c) {
    ag_tensor ct = AG_NULL_TENSOR, traj = AG_NULL_TENSOR;
    TRY(ag_tensor_from_data(&ct, &c, NULL, 0, AG_FLOAT64));
    TRY(ag_custom_op_apply(&traj, 1, op, (ag_tensor[]){y0, ct}, 2));
    double *all = malloc((N_STEPS + 1) * 2 * sizeof *all);
    TRY(ag_tensor_copy_data(all, (N_STEPS + 1) * 2, AG_FLOAT64, traj));
    for (int n = 0; n <= N_STEPS; n++) theta[n] = all[2 * n];
    free(all);
    TRY(ag_tensor_free(traj));
    TRY(ag_tensor_free(ct));
}

/* The picture: observations (dots), the initial guess's trajectory (dashed), the fitted one. */
static int write_svg(const char *path, const double *obs_t, const double *obs, int n_obs, const double *initial,
                     const double *fitted, double c_fit) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    const double W = 720, H = 380, L = 60, R = 20, T = 60, B = 50;
    const double t_max = N_STEPS * DT, y_max = 1.4;
#define X(t) (L + (t) / t_max * (W - L - R))
#define Y(v) (T + (y_max - (v)) / (2 * y_max) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%g\" y=\"22\" font-size=\"14\">Damped pendulum: angle (rad) over time (s); damping "
               "fitted through a custom RK4 op: c = %.4f (true %.2f)</text>\n", L, c_fit, C_TRUE);
    /* axes and ticks */
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#888\"/>\n", L, Y(0.0), W - R, Y(0.0));
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#888\"/>\n", L, T, L, H - B);
    for (int s = 0; s <= 6; s++)
        fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%d</text>\n", X((double)s), H - B + 18, s);
    for (int k = -1; k <= 1; k++)
        fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%d</text>\n", L - 6, Y((double)k) + 4, k);
    /* the two trajectories */
    const double *curves[2] = {initial, fitted};
    const char *styles[2] = {"stroke=\"#999\" stroke-dasharray=\"5,4\"", "stroke=\"#1f77b4\" stroke-width=\"2\""};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "<polyline fill=\"none\" %s points=\"", styles[k]);
        for (int n = 0; n <= N_STEPS; n++) fprintf(f, "%.1f,%.1f ", X(n * DT), Y(curves[k][n]));
        fprintf(f, "\"/>\n");
    }
    for (int i = 0; i < n_obs; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", X(obs_t[i]), Y(obs[i]));
    /* legend, in a row under the title */
    const double ly = 42;
    fprintf(f, "<circle cx=\"%g\" cy=\"%g\" r=\"3\" fill=\"#d62728\"/><text x=\"%g\" y=\"%g\">observations</text>\n",
            L + 4, ly - 4, L + 12, ly);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#999\" stroke-dasharray=\"5,4\"/>"
               "<text x=\"%g\" y=\"%g\">initial guess c = %.2f</text>\n",
            L + 120, ly - 4, L + 144, ly - 4, L + 150, ly, C_INIT);
    fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
               "<text x=\"%g\" y=\"%g\">fitted</text>\n",
            L + 300, ly - 4, L + 324, ly - 4, L + 330, ly);
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    return fclose(f) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *svg_path = argc > 1 ? argv[1] : "ode_fit.svg";

    /* 1. The adjoint against finite differences: 15 steps of 0.05 s, both inputs. */
    integrator short_run = {15, 0.05};
    ag_custom_op check_op = AG_NULL_CUSTOM_OP;
    TRY(ag_custom_op_new(&check_op, "pendulum_rk4", 2, 1, rk4_forward, rk4_backward, NULL, &short_run, NULL));
    ag_tensor gc_in[2] = {AG_NULL_TENSOR, AG_NULL_TENSOR};
    TRY(ag_tensor_from_data(&gc_in[0], (double[]){0.9, -0.4}, (int64_t[]){2}, 1, AG_FLOAT64));
    TRY(ag_tensor_from_data(&gc_in[1], &(double){0.3}, NULL, 0, AG_FLOAT64));
    for (int i = 0; i < 2; i++) TRY(ag_tensor_set_requires_grad(gc_in[i], true));
    bool passed = false;
    int64_t worst_input = -1, worst_index = -1;
    double worst_analytic = NAN, worst_numeric = NAN;
    TRY(ag_gradcheck(&passed, &worst_input, &worst_index, &worst_analytic, &worst_numeric, build_trajectory,
                     &check_op, gc_in, 2, 1e-6, 1e-7, 1e-6));
    printf("gradcheck of the hand-written RK4 adjoint (15 steps, d/d y0 and d/d c): %s "
           "(worst element: input %lld [%lld], analytic %.10f, numeric %.10f)\n",
           passed ? "passed" : "FAILED", (long long)worst_input, (long long)worst_index, worst_analytic,
           worst_numeric);
    for (int i = 0; i < 2; i++) TRY(ag_tensor_free(gc_in[i]));
    TRY(ag_custom_op_free(check_op));

    /* 2. Observations: a finer reference solution for the true damping, sampled, plus noise. */
    enum { N_OBS = N_STEPS / OBS_EVERY };
    double obs[N_OBS], obs_t[N_OBS];
    int64_t obs_index[N_OBS];
    {
        double s[2] = {THETA0, OMEGA0}, next[2];
        uint64_t rng = 0x5DEECE66DULL;
        int k = 0;
        for (int n = 1; n <= N_STEPS; n++) {
            for (int r = 0; r < REF_REFINE; r++) {
                rk4_step(next, s, C_TRUE, DT / REF_REFINE);
                s[0] = next[0], s[1] = next[1];
            }
            if (n % OBS_EVERY == 0) {
                obs_index[k] = n;
                obs_t[k] = n * DT;
                obs[k] = s[0] + NOISE * normal(&rng);
                k++;
            }
        }
    }

    /* 3. The fit. */
    integrator run = {N_STEPS, DT};
    ag_custom_op op = AG_NULL_CUSTOM_OP;
    TRY(ag_custom_op_new(&op, "pendulum_rk4", 2, 1, rk4_forward, rk4_backward, NULL, &run, NULL));
    ag_tensor y0 = AG_NULL_TENSOR, c = AG_NULL_TENSOR, target = AG_NULL_TENSOR;
    TRY(ag_tensor_from_data(&y0, (double[]){THETA0, OMEGA0}, (int64_t[]){2}, 1, AG_FLOAT64)); /* known */
    TRY(ag_tensor_from_data(&c, &(double){C_INIT}, NULL, 0, AG_FLOAT64));
    TRY(ag_tensor_set_requires_grad(c, true));
    TRY(ag_tensor_from_data(&target, obs, (int64_t[]){N_OBS}, 1, AG_FLOAT64));
    ag_optimizer adam = 0;
    TRY(ag_optimizer_adam(&adam, &c, 1, LEARNING_RATE, 0.9, 0.999, 1e-8, 0.0));
    printf("fitting the damping c of a pendulum (true %.3f, start %.3f) to %d noisy angles through the custom "
           "op, Adam lr %.3f\n", C_TRUE, C_INIT, N_OBS, LEARNING_RATE);
    double loss_value = NAN, c_fit = C_INIT;
    for (int it = 1; it <= ITERATIONS; it++) {
        ag_tensor traj = AG_NULL_TENSOR, picked = AG_NULL_TENSOR, theta = AG_NULL_TENSOR, pred = AG_NULL_TENSOR;
        ag_tensor loss = AG_NULL_TENSOR;
        TRY(ag_custom_op_apply(&traj, 1, op, (ag_tensor[]){y0, c}, 2));
        TRY(ag_index_select(&picked, traj, 0, obs_index, N_OBS)); /* [N_OBS, 2] */
        TRY(ag_slice(&theta, picked, 1, 0, 1, 1));                  /* [N_OBS, 1] */
        TRY(ag_reshape(&pred, theta, (int64_t[]){N_OBS}, 1));
        TRY(ag_mse_loss(&loss, pred, target));
        TRY(ag_optimizer_zero_grad(adam));
        TRY(ag_backward(loss, AG_NULL_TENSOR, false, false));
        TRY(ag_tensor_item(&loss_value, loss));
        TRY(ag_optimizer_step(adam));
        TRY(ag_tensor_item(&c_fit, c));
        if (it % PRINT_EVERY == 0 || it == 1)
            printf("iteration %3d  loss %.6f  c %.5f\n", it, loss_value, c_fit);
        ag_tensor all[] = {traj, picked, theta, pred, loss};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) TRY(ag_tensor_free(all[i]));
    }

    /* 4. The result, the picture. */
    double error = fabs(c_fit - C_TRUE);
    printf("recovered damping c = %.5f, true %.5f: error %.5f (tolerance %.3f), final loss %.6f "
           "(noise variance %.6f)\n", c_fit, C_TRUE, error, TOLERANCE, loss_value, NOISE * NOISE);
    double *initial = malloc((N_STEPS + 1) * sizeof *initial), *fitted = malloc((N_STEPS + 1) * sizeof *fitted);
    trajectory_theta(initial, op, y0, C_INIT);
    trajectory_theta(fitted, op, y0, c_fit);
    int svg_failed = write_svg(svg_path, obs_t, obs, N_OBS, initial, fitted, c_fit);
    if (!svg_failed) printf("wrote %s\n", svg_path);
    free(initial);
    free(fitted);
    TRY(ag_optimizer_free(adam));
    TRY(ag_tensor_free(target));
    TRY(ag_tensor_free(c));
    TRY(ag_tensor_free(y0));
    TRY(ag_custom_op_free(op));

    int64_t live = -1;
    TRY(ag_live_handle_count(&live));
    if (!passed || error > TOLERANCE || svg_failed || live != 0) {
        fprintf(stderr, "ode_fit: FAILED (gradcheck %s, |c_fit - c_true| = %.5f, %lld handles live)\n",
                passed ? "passed" : "failed", error, (long long)live);
        return 1;
    }
    printf("ode_fit: OK\n");
    return 0;
}
