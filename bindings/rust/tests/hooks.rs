//! Gradient hooks as closures: observing, replacing, removing; a hook that fails or panics
//! makes the backward an `Err` (Status::Callback, quoting it) and the process carries on; the
//! closure is dropped once the library can no longer call it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use autograd::{Error, Status, Tensor};

fn leaf(v: &[f64]) -> Tensor {
    Tensor::from_slice(v, &[v.len() as i64]).unwrap().requiring_grad().unwrap()
}

/// Counts its drops: captured by a closure, it tells when the library dropped the closure.
struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_hook_sees_the_gradient_and_can_replace_it() {
    let x = leaf(&[1.0, 2.0, 3.0]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    x.register_hook(move |g| {
        seen2.lock().unwrap().push(g.to_vec_f64()?);
        Ok(None) // keep it
    })
    .unwrap();
    (&x * &x).sum().unwrap().backward().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![vec![2.0, 4.0, 6.0]]);
    assert_eq!(x.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![2.0, 4.0, 6.0]);

    // A second hook, registered later, runs after the first and replaces the gradient.
    let y = leaf(&[1.0, 2.0]);
    let id = y.register_hook(|g| Ok(Some(g * 10.0))).unwrap();
    (&y * 3.0).sum().unwrap().backward().unwrap();
    assert_eq!(y.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![30.0, 30.0]);
    // Removed: the next backward accumulates the plain gradient.
    y.remove_hook(id).unwrap();
    (&y * 3.0).sum().unwrap().backward().unwrap();
    assert_eq!(y.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![33.0, 33.0]);
    let e = y.remove_hook(id).unwrap_err();
    assert_eq!(e.status, Status::Argument);
}

#[test]
fn a_hook_on_an_intermediate_result() {
    // y = 2x; z = sum(y^2): the gradient into y is 2y = 4x; doubling it doubles dz/dx = 8x.
    let x = leaf(&[1.0, -1.0]);
    let y = &x * 2.0;
    y.register_hook(|g| Ok(Some(g * 2.0))).unwrap();
    (&y * &y).sum().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![16.0, -16.0]);
}

#[test]
fn a_panicking_hook_fails_the_backward_and_the_process_carries_on() {
    let x = leaf(&[1.0, 2.0]);
    x.register_hook(|_g| -> autograd::Result<Option<Tensor>> { panic!("the hook blew up at step {}", 7) }).unwrap();
    let e = (&x * &x).sum().unwrap().backward().unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("a gradient hook (a Rust closure) panicked: the hook blew up at step 7"), "{e}");
    println!("the backward's error: {e}");

    // The library keeps working, on this thread and this tensor's neighbours.
    let y = leaf(&[3.0]);
    (&y * &y).sum().unwrap().backward().unwrap();
    assert_eq!(y.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![6.0]);
}

#[test]
fn a_hook_returning_err_fails_the_backward_quoting_it() {
    let x = leaf(&[1.0, 2.0]);
    x.register_hook(|_g| Err(Error::new(Status::Argument, "this gradient is not welcome"))).unwrap();
    let e = x.sum().unwrap().backward().unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("returned an error: AG_ERR_ARGUMENT: this gradient is not welcome"), "{e}");

    // An Err from a library call inside the hook, passed on with `?`.
    let z = leaf(&[1.0, 2.0]);
    z.register_hook(|g| Ok(Some(g.reshape(&[3])?))).unwrap();
    let e = z.sum().unwrap().backward().unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("ag_reshape: shape [3] (3 elements) does not match [2]"), "{e}");
}

#[test]
fn a_replacement_of_the_wrong_shape_is_refused() {
    let x = leaf(&[1.0, 2.0]);
    x.register_hook(|_g| Ok(Some(Tensor::scalar(1.0)?))).unwrap();
    let e = x.sum().unwrap().backward().unwrap_err();
    assert_eq!(e.status, Status::Shape);
    assert!(e.message.contains("the replacement gradient is float64 []"), "{e}");
}

#[test]
fn the_closure_is_dropped_when_the_hook_goes() {
    let drops = Arc::new(AtomicUsize::new(0));
    let x = leaf(&[1.0]);
    let token = DropCount(Arc::clone(&drops));
    let id = x
        .register_hook(move |_g| {
            let _keep = &token;
            Ok(None)
        })
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    x.remove_hook(id).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "removing the hook dropped the closure");

    // Or when the leaf's last handle goes.
    let y = leaf(&[1.0]);
    let token = DropCount(Arc::clone(&drops));
    y.register_hook(move |_g| {
        let _keep = &token;
        Ok(None)
    })
    .unwrap();
    let y2 = y.clone();
    drop(y);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "another handle keeps the tensor and its hook");
    drop(y2);
    assert_eq!(drops.load(Ordering::SeqCst), 2, "freeing the last handle dropped the closure");

    // A failed registration (no requires_grad) drops the closure at once, not through the library.
    let c = Tensor::scalar(1.0).unwrap();
    let token = DropCount(Arc::clone(&drops));
    let e = c
        .register_hook(move |_g| {
            let _keep = &token;
            Ok(None)
        })
        .unwrap_err();
    assert_eq!(e.status, Status::State);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

#[test]
fn a_gradient_ready_hook_runs_after_accumulation_and_before_the_rest_of_the_backward() {
    // f = sum((x * w1) * w2): w2's gradient (x * w1 = [2, 6]) is complete before the backward
    // reaches h = x * w1, nearer the input; w1's after it.
    let x = Tensor::from_slice(&[1.0, 2.0], &[2]).unwrap();
    let w1 = leaf(&[2.0, 3.0]);
    let w2 = leaf(&[4.0, 5.0]);
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2, o3, s2) = (Arc::clone(&order), Arc::clone(&order), Arc::clone(&order), Arc::clone(&seen));
    let id = w2
        .register_post_accumulate_grad_hook(move |leaf| {
            o2.lock().unwrap().push("w2");
            s2.lock().unwrap().extend(leaf.grad()?.expect("accumulated").to_vec_f64()?);
            Ok(())
        })
        .unwrap();
    w1.register_post_accumulate_grad_hook(move |_| {
        o1.lock().unwrap().push("w1");
        Ok(())
    })
    .unwrap();
    let h = &x * &w1;
    h.register_hook(move |_| {
        o3.lock().unwrap().push("h");
        Ok(None)
    })
    .unwrap();
    (&h * &w2).sum().unwrap().backward().unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["w2", "h", "w1"]);
    assert_eq!(*seen.lock().unwrap(), vec![2.0, 6.0]);
    w2.remove_hook(id).unwrap();

    // A panicking one fails the backward with Status::Callback; the process carries on.
    let z = leaf(&[1.0]);
    z.register_post_accumulate_grad_hook(|_| panic!("ready hook panicked")).unwrap();
    let err: Error = (&z * 2.0).sum().unwrap().backward().unwrap_err();
    assert_eq!(err.status, Status::Callback);
    assert!(err.message.contains("ready hook panicked"), "{}", err.message);
    // Only leaves that require grad take one.
    let c = Tensor::from_slice(&[1.0], &[1]).unwrap();
    assert_eq!(c.register_post_accumulate_grad_hook(|_| Ok(())).unwrap_err().status, Status::State);
    let r = &z * 2.0;
    assert_eq!(r.register_post_accumulate_grad_hook(|_| Ok(())).unwrap_err().status, Status::State);
}
