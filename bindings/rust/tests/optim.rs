//! Optimizers against steps computed by hand from the formulas of torch.optim (the header
//! states them): one Adam step, two SGD-with-momentum steps, Nesterov, AdamW's decay.

use autograd::{Optimizer, Status, Tensor};

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "got {got:?}, want {want:?}");
    }
}

/// loss = sum(p * p), so grad = 2p.
fn backward_square(p: &Tensor) {
    (p * p).sum().unwrap().backward().unwrap();
}

#[test]
fn one_adam_step_by_hand() {
    let p0 = [1.0, -2.0, 0.5];
    let p = Tensor::from_slice(&p0, &[3]).unwrap().requiring_grad().unwrap();
    let (lr, b1, b2, eps) = (0.1, 0.9, 0.999, 1e-8);
    let opt = Optimizer::adam_with(&[&p], lr, b1, b2, eps, 0.0).unwrap();
    backward_square(&p);
    opt.step().unwrap();
    // t = 1: m = (1 - b1) g, v = (1 - b2) g^2; m^ = m / (1 - b1) = g, v^ = v / (1 - b2) = g^2;
    // p -= lr * m^ / (sqrt(v^) + eps) = lr * g / (|g| + eps).
    let want: Vec<f64> = p0
        .iter()
        .map(|&p| {
            let g = 2.0 * p;
            let m = (1.0 - b1) * g;
            let v = (1.0 - b2) * g * g;
            let (mh, vh) = (m / (1.0 - b1), v / (1.0 - b2));
            p - lr * mh / (vh.sqrt() + eps)
        })
        .collect();
    close(&p.to_vec_f64().unwrap(), &want);
    // Close to p - 0.1 * sign(p), as Adam's first step is.
    close(&p.to_vec_f64().unwrap().iter().map(|v| (v * 1e6).round() / 1e6).collect::<Vec<_>>(), &[0.9, -1.9, 0.4]);
}

#[test]
fn sgd_with_momentum_two_steps_by_hand() {
    let p = Tensor::from_slice(&[1.0, -3.0], &[2]).unwrap().requiring_grad().unwrap();
    let (lr, mu) = (0.1, 0.9);
    let opt = Optimizer::sgd_with(&[&p], lr, mu, false, 0.0).unwrap();
    let mut want = vec![1.0, -3.0];
    let mut buf = [0.0; 2];
    for step in 0..2 {
        opt.zero_grad().unwrap();
        backward_square(&p);
        opt.step().unwrap();
        for i in 0..2 {
            let d = 2.0 * want[i];
            buf[i] = if step == 0 { d } else { mu * buf[i] + d };
            want[i] -= lr * buf[i];
        }
        close(&p.to_vec_f64().unwrap(), &want);
    }
    // 1 -> 0.8 -> 0.8 - 0.1 * (0.9 * 2 + 1.6) = 0.46
    close(&[p.to_vec_f64().unwrap()[0]], &[0.46]);
}

#[test]
fn nesterov_weight_decay_and_adamw() {
    // SGD, Nesterov, weight decay 0.5, one step: d = 2p + 0.5p = 2.5p; buf = d;
    // p -= lr * (d + mu * buf) = lr * 2.5p * (1 + mu).
    let p = Tensor::from_slice(&[2.0], &[1]).unwrap().requiring_grad().unwrap();
    let opt = Optimizer::sgd_with(&[&p], 0.1, 0.5, true, 0.5).unwrap();
    backward_square(&p);
    opt.step().unwrap();
    close(&p.to_vec_f64().unwrap(), &[2.0 - 0.1 * 5.0 * 1.5]);

    // AdamW: p *= 1 - lr * wd first, then the Adam step with d = grad (of the old p).
    let q = Tensor::from_slice(&[1.0], &[1]).unwrap().requiring_grad().unwrap();
    let opt = Optimizer::adamw_with(&[&q], 0.1, 0.9, 0.999, 1e-8, 0.2).unwrap();
    backward_square(&q);
    opt.step().unwrap();
    let g: f64 = 2.0;
    close(&q.to_vec_f64().unwrap(), &[1.0 * (1.0 - 0.1 * 0.2) - 0.1 * g / (g.abs() + 1e-8)]);
}

#[test]
fn zero_grad_learning_rate_and_parameters_without_gradient() {
    let p = Tensor::from_slice(&[1.0], &[1]).unwrap().requiring_grad().unwrap();
    let untouched = Tensor::from_slice(&[5.0], &[1]).unwrap().requiring_grad().unwrap();
    let opt = Optimizer::sgd(&[&p, &untouched], 0.5).unwrap();
    assert_eq!(opt.lr().unwrap(), 0.5);
    opt.set_lr(0.25).unwrap();
    assert_eq!(opt.lr().unwrap(), 0.25);
    backward_square(&p);
    opt.step().unwrap();
    close(&p.to_vec_f64().unwrap(), &[1.0 - 0.25 * 2.0]);
    close(&untouched.to_vec_f64().unwrap(), &[5.0]); // no gradient, no update
    opt.zero_grad().unwrap();
    assert!(p.grad().unwrap().is_none());
    assert_eq!(opt.set_lr(f64::NAN).unwrap_err().status, Status::Argument);
    // The optimizer holds its parameters: their Tensors may go first.
    drop(p);
    drop(untouched);
    opt.step().unwrap();
    // A parameter that is not a leaf requiring grad is refused.
    let c = Tensor::scalar(1.0).unwrap();
    assert_eq!(Optimizer::adam(&[&c], 0.1).unwrap_err().status, Status::State);
    assert_eq!(Optimizer::adam(&[], 0.1).unwrap_err().status, Status::Argument);
}
