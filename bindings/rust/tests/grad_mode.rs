//! no_grad: nothing recorded inside, the previous state restored on exit and on panic, per
//! thread.

use std::panic::{catch_unwind, AssertUnwindSafe};

use autograd::{enable_grad, is_grad_enabled, no_grad, GradModeGuard, Tensor};

#[test]
fn no_grad_records_nothing_and_restores() {
    let x = Tensor::from_slice(&[1.0, 2.0], &[2]).unwrap().requiring_grad().unwrap();
    assert!(is_grad_enabled());
    let y = no_grad(|| {
        assert!(!is_grad_enabled());
        &x * 2.0
    });
    assert!(is_grad_enabled());
    assert!(!y.requires_grad(), "a result made under no_grad records no history");
    assert!((&x * 2.0).requires_grad());

    // Nested scopes restore in order.
    no_grad(|| {
        enable_grad(|| {
            assert!(is_grad_enabled());
            assert!((&x * 2.0).requires_grad());
        });
        assert!(!is_grad_enabled());
    });
    assert!(is_grad_enabled());

    // A guard held by hand.
    {
        let _g = GradModeGuard::new(false);
        assert!(!is_grad_enabled());
    }
    assert!(is_grad_enabled());
}

#[test]
fn no_grad_restores_after_a_panic() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        no_grad(|| {
            assert!(!is_grad_enabled());
            panic!("inside no_grad");
        })
    }));
    assert!(r.is_err());
    assert!(is_grad_enabled(), "grad mode came back on when the panic left the scope");
}

#[test]
fn grad_mode_is_per_thread() {
    no_grad(|| {
        let other = std::thread::spawn(is_grad_enabled).join().unwrap();
        assert!(other, "another thread keeps its own grad mode");
        assert!(!is_grad_enabled());
    });
}
