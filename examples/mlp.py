"""Fits a 2-16-16-1 tanh MLP to a synthetic regression target with Adam, using the libautograd
Python package. Prints the loss per epoch; exits 1 unless the last loss is well below the first.

    pip install ./bindings/python && python3 examples/mlp.py
"""
import sys

import numpy as np

import libautograd as ag

rng = np.random.default_rng(0)
X = rng.uniform(-2.0, 2.0, size=(256, 2))
Y = (np.sin(X[:, :1] * 1.5) * np.cos(X[:, 1:]) + 0.1 * X[:, :1] ** 2)  # (256, 1)

sizes = [2, 16, 16, 1]
params = []
for seed, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    weight = ag.xavier_uniform(n_out, n_in, seed=seed, requires_grad=True)
    bias = ag.zeros(n_out, requires_grad=True)
    params += [weight, bias]


def model(x):
    """tanh hidden layers, a linear output layer (weights (out, in), as torch's Linear)."""
    h = x
    for i in range(0, len(params) - 2, 2):
        h = ag.tanh(ag.linear(h, params[i], params[i + 1]))
    return ag.linear(h, params[-2], params[-1])


opt = ag.Adam(params, lr=0.01)
batch, epochs, losses = 32, 30, []
for epoch in range(epochs):
    order = rng.permutation(len(X))
    total = 0.0
    for start in range(0, len(X), batch):
        idx = order[start:start + batch]
        opt.zero_grad()
        loss = ag.mse_loss(model(ag.from_numpy(X[idx])), Y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    with ag.no_grad():  # evaluation: no graph is recorded
        full = ag.mse_loss(model(ag.from_numpy(X)), Y).item()
    losses.append(full)
    print(f"epoch {epoch + 1:2d}  train loss {total / len(X):.5f}  full-data loss {full:.5f}")

if not losses[-1] < 0.25 * losses[0]:
    print(f"mlp: FAILED: the loss went from {losses[0]:.5f} to {losses[-1]:.5f}")
    sys.exit(1)
print(f"mlp: ok, loss {losses[0]:.5f} -> {losses[-1]:.5f}")
