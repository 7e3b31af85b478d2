"""Shared fixtures: JAX in float64, and a leak check on libautograd's live handle count."""

import gc

import pytest

import libautograd as ag


def pytest_configure(config):
    try:
        import jax
    except ImportError:  # the JAX tests skip themselves (importorskip)
        return
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")


@pytest.fixture
def no_leaks():
    """Fails the test if libautograd has more live handles at its end than at its start
    (after every Python object of the test is collected)."""
    gc.collect()
    start = ag.live_handle_count()
    yield start
    gc.collect()
    assert ag.live_handle_count() == start


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(20240607)
