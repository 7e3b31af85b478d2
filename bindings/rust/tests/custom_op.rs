//! Custom ops as closures: forward and backward, the gradient checked by finite differences
//! (by hand here, and by the library's gradcheck through a Rust closure); failures and panics
//! in either closure as `Err`; the closures dropped once nothing can call the op.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use autograd::{gradcheck, CustomOp, Error, Status, Tensor};

/// f(x, y) = x * sin(y), elementwise, computed on raw values (not library ops), with its
/// derivative by hand: df/dx = sin(y), df/dy = x cos(y).
fn x_sin_y() -> CustomOp {
    CustomOp::with_backward(
        "x_sin_y",
        2,
        1,
        |ctx, inputs| {
            ctx.save(&[inputs[0], inputs[1]])?;
            let x = inputs[0].to_vec_f64()?;
            let y = inputs[1].to_vec_f64()?;
            let out: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * b.sin()).collect();
            Ok(vec![Tensor::from_slice(&out, &inputs[0].shape())?])
        },
        |ctx, grads| {
            let (x, y) = (ctx.saved(0)?, ctx.saved(1)?);
            let g = grads[0];
            let dx = g.mul(&y.sin()?)?;
            let dy = g.mul(&x.mul(&y.cos()?)?)?;
            Ok(vec![Some(dx), Some(dy)])
        },
    )
    .unwrap()
}

fn forward_value(op: &CustomOp, x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as i64;
    let out = op.apply(&[&Tensor::from_slice(x, &[n]).unwrap(), &Tensor::from_slice(y, &[n]).unwrap()]).unwrap();
    out[0].sum().unwrap().item().unwrap()
}

#[test]
fn forward_and_backward_match_finite_differences() {
    let op = x_sin_y();
    let xs: [f64; 3] = [0.5, -1.25, 2.0];
    let ys: [f64; 3] = [0.3, 1.1, -0.7];
    let x = Tensor::from_slice(&xs, &[3]).unwrap().requiring_grad().unwrap();
    let y = Tensor::from_slice(&ys, &[3]).unwrap().requiring_grad().unwrap();
    let out = op.apply(&[&x, &y]).unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].requires_grad());
    let want: Vec<f64> = xs.iter().zip(&ys).map(|(a, b)| a * b.sin()).collect();
    assert_eq!(out[0].to_vec_f64().unwrap(), want);
    out[0].sum().unwrap().backward().unwrap();
    let dx = x.grad().unwrap().unwrap().to_vec_f64().unwrap();
    let dy = y.grad().unwrap().unwrap().to_vec_f64().unwrap();

    // Central differences of sum(f) through the op's forward, one element at a time.
    let h = 1e-6;
    for i in 0..3 {
        let (mut xp, mut xm) = (xs, xs);
        xp[i] += h;
        xm[i] -= h;
        let num = (forward_value(&op, &xp, &ys) - forward_value(&op, &xm, &ys)) / (2.0 * h);
        assert!((dx[i] - num).abs() < 1e-8, "df/dx[{i}]: backward {} vs numeric {num}", dx[i]);
        let (mut yp, mut ym) = (ys, ys);
        yp[i] += h;
        ym[i] -= h;
        let num = (forward_value(&op, &xs, &yp) - forward_value(&op, &xs, &ym)) / (2.0 * h);
        assert!((dy[i] - num).abs() < 1e-8, "df/dy[{i}]: backward {} vs numeric {num}", dy[i]);
    }
}

#[test]
fn gradcheck_through_a_rust_closure() {
    let op = x_sin_y();
    let x = Tensor::from_slice(&[0.5, -1.25, 2.0], &[3]).unwrap().requiring_grad().unwrap();
    let y = Tensor::from_slice(&[0.3, 1.1, -0.7], &[3]).unwrap().requiring_grad().unwrap();
    let report = gradcheck(|inp| Ok(op.apply(inp)?.remove(0)), &[&x, &y], 1e-6, 1e-7, 1e-5).unwrap();
    assert!(report.passed, "{report:?}");

    // A wrong backward is caught: claim df/dy = x sin(y) instead of x cos(y).
    let wrong = CustomOp::with_backward(
        "wrong",
        2,
        1,
        |ctx, i| {
            ctx.save(&[i[0], i[1]])?;
            Ok(vec![i[0].mul(&i[1].sin()?)?])
        },
        |ctx, g| {
            let (x, y) = (ctx.saved(0)?, ctx.saved(1)?);
            Ok(vec![Some(g[0].mul(&y.sin()?)?), Some(g[0].mul(&x.mul(&y.sin()?)?)?)])
        },
    )
    .unwrap();
    let report = gradcheck(|inp| Ok(wrong.apply(inp)?.remove(0)), &[&x, &y], 1e-6, 1e-7, 1e-5).unwrap();
    assert!(!report.passed);
    assert_eq!(report.worst_input, 1, "the wrong derivative is the one of y: {report:?}");

    // A build closure that panics: gradcheck returns Err, quoting it.
    let e =
        gradcheck(|_inp| -> autograd::Result<Tensor> { panic!("build failed on purpose") }, &[&x], 1e-6, 1e-7, 1e-5)
            .unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("a gradcheck function (a Rust closure) panicked: build failed on purpose"), "{e}");
}

#[test]
fn panics_and_errors_in_the_closures_are_errs() {
    let op = CustomOp::with_backward(
        "fragile",
        1,
        1,
        |_ctx, x| {
            if x[0].numel() == 3 {
                panic!("forward cannot take 3 elements");
            }
            Ok(vec![x[0].mul_scalar(2.0)?])
        },
        |_ctx, _g| -> autograd::Result<Vec<Option<Tensor>>> { panic!("backward panics always") },
    )
    .unwrap();
    let three = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3]).unwrap();
    let e = op.apply(&[&three]).unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("fragile"), "the message names the op: {e}");
    assert!(
        e.message.contains("a custom op's forward (a Rust closure) panicked: forward cannot take 3 elements"),
        "{e}"
    );

    let x = Tensor::from_slice(&[1.0, 2.0], &[2]).unwrap().requiring_grad().unwrap();
    let y = op.apply(&[&x]).unwrap().remove(0);
    assert_eq!(y.to_vec_f64().unwrap(), vec![2.0, 4.0]);
    let e = y.sum().unwrap().backward().unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("a custom op's backward (a Rust closure) panicked: backward panics always"), "{e}");

    // Contract errors made on the Rust side: the wrong number of outputs or gradients.
    let bad = CustomOp::with_backward(
        "two_outputs",
        1,
        1,
        |_ctx, x| Ok(vec![x[0].exp()?, x[0].exp()?]),
        |_ctx, _g| Ok(vec![]),
    )
    .unwrap();
    let e = bad.apply(&[&x]).unwrap_err();
    assert!(e.message.contains("the forward returned 2 tensors for 1 outputs"), "{e}");
    let short = CustomOp::with_backward("short", 1, 1, |_c, x| Ok(vec![x[0].exp()?]), |_c, _g| Ok(vec![])).unwrap();
    let e = short.apply(&[&x]).unwrap().remove(0).sum().unwrap().backward().unwrap_err();
    assert!(e.message.contains("the backward returned 0 gradients for 1 inputs"), "{e}");

    // An Err with a status of the closure's own.
    let picky = CustomOp::new("picky", 1, 1, |_c, _x| Err(Error::new(Status::Argument, "no thanks"))).unwrap();
    let e = picky.apply(&[&x]).unwrap_err();
    assert_eq!(e.status, Status::Callback);
    assert!(e.message.contains("AG_ERR_ARGUMENT: no thanks"), "{e}");

    // An op without a backward: a backward pass through it fails with AG_ERR_STATE.
    let no_bwd = CustomOp::new("forward_only", 1, 1, |_c, x| Ok(vec![x[0].exp()?])).unwrap();
    let e = no_bwd.apply(&[&x]).unwrap().remove(0).sum().unwrap().backward().unwrap_err();
    assert_eq!(e.status, Status::State);

    // Inputs of the wrong count are refused by the library before the forward runs.
    let e = op.apply(&[&x, &x]).unwrap_err();
    assert_eq!(e.status, Status::Argument);

    // Everything still works.
    assert_eq!(op.apply(&[&x]).unwrap()[0].to_vec_f64().unwrap(), vec![2.0, 4.0]);
}

#[test]
fn several_outputs_and_needs_input_grad() {
    // (a, b) -> (a + b, a * b); the backward sums both outputs' contributions.
    let op = CustomOp::with_backward(
        "sum_and_product",
        2,
        2,
        |ctx, i| {
            assert!(ctx.needs_input_grad(0)?);
            assert!(!ctx.needs_input_grad(1)?);
            ctx.save(&[i[0], i[1]])?;
            Ok(vec![i[0].add(i[1])?, i[0].mul(i[1])?])
        },
        |ctx, g| {
            let (a, b) = (ctx.saved(0)?, ctx.saved(1)?);
            assert_eq!(ctx.saved_count()?, 2);
            let da = g[0].add(&g[1].mul(&b)?)?;
            let db = if ctx.needs_input_grad(1)? { Some(g[0].add(&g[1].mul(&a)?)?) } else { None };
            Ok(vec![Some(da), db])
        },
    )
    .unwrap();
    let a = Tensor::from_slice(&[2.0], &[1]).unwrap().requiring_grad().unwrap();
    let b = Tensor::from_slice(&[5.0], &[1]).unwrap(); // a constant
    let outs = op.apply(&[&a, &b]).unwrap();
    // d/da (s + 3p) = 1 + 3b = 16
    (&outs[0] + &outs[1] * 3.0).sum().unwrap().backward().unwrap();
    assert_eq!(a.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![16.0]);
}

#[test]
fn the_closures_live_until_the_last_graph_goes() {
    struct DropCount(Arc<AtomicUsize>);
    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let token = DropCount(Arc::clone(&drops));
    let op = CustomOp::with_backward(
        "square",
        1,
        1,
        move |ctx, x| {
            let _keep = &token;
            ctx.save(&[x[0]])?;
            Ok(vec![x[0].mul(x[0])?])
        },
        |ctx, g| Ok(vec![Some(g[0].mul(&ctx.saved(0)?.mul_scalar(2.0)?)?)]),
    )
    .unwrap();
    let x = Tensor::from_slice(&[3.0], &[1]).unwrap().requiring_grad().unwrap();
    let y = op.apply(&[&x]).unwrap().remove(0);
    drop(op);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the graph of y still uses the op");
    y.sum().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().unwrap().to_vec_f64().unwrap(), vec![6.0]);
    drop(y);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the closures went with the last graph");

    // A name the library refuses: the closures are dropped by Rust at once.
    let token = DropCount(Arc::clone(&drops));
    let e = CustomOp::new("", 1, 1, move |_c, x| {
        let _keep = &token;
        Ok(vec![x[0].exp()?])
    })
    .unwrap_err();
    assert_eq!(e.status, Status::Argument);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}
