//! The acceptance graph of bindings/c/example.c, from Rust:
//!
//!     f(x, W) = sum(relu(x @ W) * 2)        x: (2,3), W: (3,2), float64
//!
//! with the same inputs, its gradients checked against values worked out here with plain
//! loops (example.c's hand derivation: z = x @ W; f = sum(2 relu(z)); dz = 2 [z > 0];
//! df/dx = dz @ W^T; df/dW = x^T @ dz), then example.c's bad inputs (a freed handle,
//! mismatched shapes) as `Err` with the library's status and message, and the library working
//! on afterwards.

use autograd::{sys, Status, Tensor};

const M: usize = 2;
const K: usize = 3;
const N: usize = 2;
const X: [f64; M * K] = [1.0, 2.0, -1.0, 0.5, -1.5, 2.0];
const W: [f64; K * N] = [0.5, -1.0, 1.5, 0.25, -0.5, 2.0];

struct ByHand {
    z: Vec<f64>,
    f: f64,
    dx: Vec<f64>,
    dw: Vec<f64>,
}

fn by_hand() -> ByHand {
    let mut z = vec![0.0; M * N];
    let mut dz = [0.0; M * N];
    let mut f = 0.0;
    for i in 0..M {
        for j in 0..N {
            let acc: f64 = (0..K).map(|k| X[i * K + k] * W[k * N + j]).sum();
            z[i * N + j] = acc;
            dz[i * N + j] = if acc > 0.0 { 2.0 } else { 0.0 }; // relu'(0) is 0, as in PyTorch
            f += 2.0 * acc.max(0.0);
        }
    }
    let mut dx = vec![0.0; M * K];
    for i in 0..M {
        for k in 0..K {
            dx[i * K + k] = (0..N).map(|j| dz[i * N + j] * W[k * N + j]).sum();
        }
    }
    let mut dw = vec![0.0; K * N];
    for k in 0..K {
        for j in 0..N {
            dw[k * N + j] = (0..M).map(|i| X[i * K + k] * dz[i * N + j]).sum();
        }
    }
    ByHand { z, f, dx, dw }
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what}[{i}]: library gave {g}, expected {w}");
    }
}

#[test]
fn example_graph_gives_the_hand_derived_gradients() -> autograd::Result<()> {
    let want = by_hand();
    // The hand derivation itself, on these inputs: two of the four entries of x @ W are
    // negative (-2.5 and -3), so relu has work to do; f = 2 * (4 + 3.125) = 14.25.
    assert_eq!(want.z.iter().filter(|&&v| v < 0.0).count(), 2);
    assert_eq!(want.f, 14.25);

    let x = Tensor::from_slice(&X, &[M as i64, K as i64])?.requiring_grad()?;
    let w = Tensor::from_slice(&W, &[K as i64, N as i64])?.requiring_grad()?;
    let xw = x.matmul(&w)?;
    let f = (xw.relu()? * 2.0).sum()?;
    assert_eq!(f.shape(), Vec::<i64>::new());
    f.backward()?;

    let dx = x.grad()?.expect("x has a gradient");
    let dw = w.grad()?.expect("W has a gradient");
    assert_eq!(dx.shape(), vec![2, 3]);
    assert_eq!(dw.shape(), vec![3, 2]);
    assert_close("x @ W", &xw.to_vec_f64()?, &want.z);
    assert_close("f", &[f.item()?], &[want.f]);
    assert_close("df/dx", &dx.to_vec_f64()?, &want.dx);
    assert_close("df/dW", &dw.to_vec_f64()?, &want.dw);
    println!("f = {}, df/dx = {:?}, df/dW = {:?}", f.item()?, dx.to_vec_f64()?, dw.to_vec_f64()?);
    Ok(())
}

#[test]
fn the_same_graph_with_methods_only() -> autograd::Result<()> {
    // The Result forms of the operators: no panic path at all.
    let want = by_hand();
    let x = Tensor::from_slice(&X, &[2, 3])?.requiring_grad()?;
    let w = Tensor::from_slice(&W, &[3, 2])?.requiring_grad()?;
    let two = Tensor::scalar(2.0)?;
    let f = x.matmul(&w)?.relu()?.mul(&two)?.sum()?;
    f.backward()?;
    assert_close("df/dx", &x.grad()?.unwrap().to_vec_f64()?, &want.dx);
    assert_close("df/dW", &w.grad()?.unwrap().to_vec_f64()?, &want.dw);
    assert!(two.grad()?.is_none(), "a constant gets no gradient");
    Ok(())
}

#[test]
fn bad_input_is_an_err_with_the_status_and_the_message() -> autograd::Result<()> {
    let a = Tensor::ones(&[2, 3], autograd::DType::F64)?;

    // A freed handle (example.c's `stale`).
    let stale = Tensor::ones(&[2, 3], autograd::DType::F64)?.into_raw();
    // SAFETY: frees a handle this test owns (given up by into_raw just above).
    assert_eq!(unsafe { sys::ag_tensor_free(stale) }, sys::AG_OK);
    let stale = std::mem::ManuallyDrop::new(Tensor::from_raw(stale));
    let e = a.add(&stale).unwrap_err();
    assert_eq!(e.status, Status::InvalidHandle);
    assert_eq!(e.status.code(), sys::AG_ERR_INVALID_HANDLE);
    assert!(e.message.starts_with("ag_add: "), "{e}");
    assert!(e.message.contains("is not a live tensor handle"), "{e}");

    // Mismatched shapes (example.c's (2,3) @ (4,5)).
    let m45 = Tensor::ones(&[4, 5], autograd::DType::F64)?;
    let e = a.matmul(&m45).unwrap_err();
    assert_eq!(e.status, Status::Shape);
    assert_eq!(e.status.code(), sys::AG_ERR_SHAPE);
    assert_eq!(e.message, "ag_matmul: inner extents differ: [2, 3] @ [4, 5]");
    assert_eq!(e.to_string(), format!("AG_ERR_SHAPE: {}", e.message));
    println!("{e}");

    // Carry on: d/dv sum(v * v) = 2v.
    let vs = [3.0, -1.5, 0.25, 2.0];
    let v = Tensor::from_slice(&vs, &[4])?.requiring_grad()?;
    (&v * &v).sum()?.backward()?;
    let want: Vec<f64> = vs.iter().map(|x| 2.0 * x).collect();
    assert_close("d/dv sum(v*v)", &v.grad()?.unwrap().to_vec_f64()?, &want);
    Ok(())
}
