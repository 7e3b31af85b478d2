//! mlp.rs - a tiny multilayer perceptron learning XOR with the Rust crate (the same model,
//! seeds and schedule as examples/mlp.cpp).
//!
//! Run (from bindings/rust, once the library is built):
//!     cargo run --example mlp
//! Prints the loss as it trains and the four predictions; exits 1 if XOR was not learned.

use autograd::{no_grad, DType, Optimizer, Tensor};

fn main() {
    match train() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("mlp: XOR was not learned");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("autograd error: {e}");
            std::process::exit(1);
        }
    }
}

fn train() -> autograd::Result<bool> {
    // The four XOR inputs (4, 2) and their targets (4, 1).
    let x = Tensor::from_slice(&[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2])?;
    let y = Tensor::from_slice(&[0.0, 1.0, 1.0, 0.0], &[4, 1])?;

    // Parameters: 2 -> 8 (tanh) -> 1, seeded so every run is the same.
    let w1 = Tensor::rand_normal(&[8, 2], 0.0, 1.0, 1, DType::F64)?.requiring_grad()?;
    let b1 = Tensor::zeros(&[8], DType::F64)?.requiring_grad()?;
    let w2 = Tensor::rand_normal(&[1, 8], 0.0, 0.5, 2, DType::F64)?.requiring_grad()?;
    let b2 = Tensor::zeros(&[1], DType::F64)?.requiring_grad()?;
    let opt = Optimizer::adam(&[&w1, &b1, &w2, &b2], 0.05)?;

    let forward = |x: &Tensor| -> autograd::Result<Tensor> {
        let hidden = x.linear(&w1, Some(&b1))?.tanh()?;
        hidden.linear(&w2, Some(&b2))
    };

    let mut first = f64::NAN;
    let mut loss_value = f64::NAN;
    for step in 0..=500 {
        opt.zero_grad()?;
        let loss = forward(&x)?.mse_loss(&y)?;
        loss.backward()?;
        opt.step()?;
        loss_value = loss.item()?;
        if step == 0 {
            first = loss_value;
        }
        if step % 100 == 0 {
            println!("step {step:3}  loss {loss_value:.6}");
        }
    }

    // Inference: record no graph.
    let pred = no_grad(|| forward(&x))?;
    assert!(!pred.requires_grad());
    let p = pred.to_vec_f64()?;
    for (i, v) in p.iter().enumerate() {
        println!("xor({}, {}) = {v:.3}", i >> 1, i & 1);
    }
    let targets = [0.0, 1.0, 1.0, 0.0];
    let right = p.iter().zip(targets).all(|(v, t)| (v - t).abs() < 0.1);
    Ok(loss_value < 1e-3 && loss_value < first && right)
}
