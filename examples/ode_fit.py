"""Fits the parameters of a damped pendulum through a numerical integrator that Autograd does
not know: one RK4 step written in NumPy, wrapped as a user-defined op (ag.Function) whose
backward is the step's adjoint, written by hand in NumPy.

    theta'' = -k sin(theta) - c theta'        state s = (theta, omega), parameters p = (k, c)

Observations come from integrating with the true parameters; the fit starts elsewhere and
minimises the squared error of the simulated trajectories with ag.Adam, the gradient flowing
back through every step. Prints the progress and the recovered against the true parameters;
exits 1 unless they are recovered.

    pip install ./bindings/python && python3 examples/ode_fit.py
"""
import sys

import numpy as np

import libautograd as ag


def field(s, p):
    """The vector field f(s; p) for states s (..., 2) and parameters p (2,)."""
    theta, omega = s[..., 0], s[..., 1]
    return np.stack([omega, -p[0] * np.sin(theta) - p[1] * omega], axis=-1)


def field_vjp(s, p, w):
    """w^T df/ds (..., 2) and w^T df/dp per state (..., 2), for cotangents w (..., 2)."""
    theta, omega = s[..., 0], s[..., 1]
    ws = np.stack([-w[..., 1] * p[0] * np.cos(theta), w[..., 0] - w[..., 1] * p[1]], axis=-1)
    wp = np.stack([-w[..., 1] * np.sin(theta), -w[..., 1] * omega], axis=-1)
    return ws, wp


def rk4_stages(s, p, h):
    """The stage points z1..z4 and slopes k1..k4 of one classical Runge-Kutta step."""
    k1 = field(s, p)
    z2 = s + 0.5 * h * k1
    k2 = field(z2, p)
    z3 = s + 0.5 * h * k2
    k3 = field(z3, p)
    z4 = s + h * k3
    k4 = field(z4, p)
    return (s, z2, z3, z4), (k1, k2, k3, k4)


def rk4_step(s, p, h):
    _, (k1, k2, k3, k4) = rk4_stages(s, p, h)
    return s + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def rk4_step_adjoint(s, p, h, g):
    """The adjoint of rk4_step: (dL/ds, dL/dp per state) from g = dL/d(next state), by running
    the stages backwards (z_{i+1} = s + a_i h k_i, k_i = f(z_i))."""
    zs, _ = rk4_stages(s, p, h)
    kbar = [h / 6.0 * g, h / 3.0 * g, h / 3.0 * g, h / 6.0 * g]
    sbar = g.copy()
    pbar = np.zeros_like(g)
    step_to = [0.5 * h, 0.5 * h, h]  # z2 = s + h/2 k1, z3 = s + h/2 k2, z4 = s + h k3
    for i in (3, 2, 1, 0):
        zbar, dp = field_vjp(zs[i], p, kbar[i])  # through k_i = f(z_i)
        pbar += dp
        sbar += zbar  # every z_i is s + (a multiple of the previous slope)
        if i > 0:
            kbar[i - 1] = kbar[i - 1] + step_to[i - 1] * zbar
    return sbar, pbar


class RK4Step(ag.Function):
    """next state = rk4_step(state, params, h), for states (B, 2) and params (2,)."""

    @staticmethod
    def forward(ctx, state, params, h):
        ctx.h = h  # a non-Tensor argument, kept for backward
        ctx.save_for_backward(state, params)
        return ag.tensor(rk4_step(state.numpy(), params.numpy(), h), dtype=state.dtype)

    @staticmethod
    def backward(ctx, grad):
        state, params = ctx.saved_tensors
        sbar, pbar = rk4_step_adjoint(state.numpy(), params.numpy(), ctx.h, grad.numpy())
        # pbar is per state, (B, 2): the library sums it to the parameters' shape (2,).
        return (ag.tensor(sbar, dtype=grad.dtype), ag.tensor(pbar, dtype=grad.dtype), None)


def simulate(s0, params, h, steps):
    """The trajectory (steps, B, 2) from s0 through RK4Step, as a list of Tensors."""
    s, out = s0, []
    for _ in range(steps):
        s = RK4Step.apply(s, params, h)
        out.append(s)
    return out


def main():
    h, steps = 0.1, 30
    true_p = np.array([4.0, 0.3])
    s0 = np.array([[1.0, 0.0], [-0.5, 1.0], [2.0, -0.5]])

    # The adjoint against central differences, on one step (float64).
    check = ag.gradcheck(lambda s, p: RK4Step.apply(s, p, h).sum(),
                         [ag.tensor(s0, requires_grad=True),
                          ag.tensor([2.5, 0.1], requires_grad=True)])
    print(f"gradcheck of the hand-written adjoint: {'passed' if check else check}")
    if not check:
        return 1

    observed, s = [], s0
    for _ in range(steps):
        s = rk4_step(s, true_p, h)
        observed.append(s)
    observed = ag.tensor(np.stack(observed))

    params = ag.tensor([2.5, 0.1], requires_grad=True)
    start = ag.tensor(s0)
    opt = ag.Adam([params], lr=0.05)
    for it in range(201):
        opt.zero_grad()
        loss = ag.mse_loss(ag.stack(simulate(start, params, h, steps)), observed)
        loss.backward()
        opt.step()
        if it % 40 == 0:
            k, c = params.numpy()
            print(f"iter {it:3d}  loss {loss.item():.3e}  k {k:.4f}  c {c:.4f}")
    found = params.detach().numpy()
    print(f"recovered k = {found[0]:.4f}, c = {found[1]:.4f}; "
          f"true k = {true_p[0]:.4f}, c = {true_p[1]:.4f}")
    if not np.allclose(found, true_p, atol=1e-3):
        print("FAILED: the parameters were not recovered")
        return 1
    print("recovered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
