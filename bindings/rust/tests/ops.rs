//! Operators and methods: values against plain Rust arithmetic, every operator form (owned,
//! borrowed, scalar on either side), dtypes, accessors, clone sharing the graph, threads.

use autograd::{DType, Tensor};

fn t(v: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "got {got:?}, want {want:?}");
    }
}

const A: [f64; 4] = [1.0, -2.0, 3.5, 0.25];
const B: [f64; 4] = [2.0, 4.0, -0.5, 8.0];

fn zip(f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    A.iter().zip(&B).map(|(&a, &b)| f(a, b)).collect()
}

#[test]
fn binary_operators_in_every_form() {
    let a = t(&A, &[4]);
    let b = t(&B, &[4]);
    close(&vals(&(&a + &b)), &zip(|x, y| x + y));
    close(&vals(&(&a - &b)), &zip(|x, y| x - y));
    close(&vals(&(&a * &b)), &zip(|x, y| x * y));
    close(&vals(&(&a / &b)), &zip(|x, y| x / y));
    // Owned operands (consumed), in each position.
    close(&vals(&(a.clone() + &b)), &zip(|x, y| x + y));
    close(&vals(&(&a - b.clone())), &zip(|x, y| x - y));
    close(&vals(&(a.clone() * b.clone())), &zip(|x, y| x * y));
    // Scalars on either side.
    close(&vals(&(&a + 1.5)), &zip(|x, _| x + 1.5));
    close(&vals(&(1.5 + &a)), &zip(|x, _| 1.5 + x));
    close(&vals(&(&a - 1.5)), &zip(|x, _| x - 1.5));
    close(&vals(&(1.5 - &a)), &zip(|x, _| 1.5 - x));
    close(&vals(&(&a * 3.0)), &zip(|x, _| x * 3.0));
    close(&vals(&(3.0 * a.clone())), &zip(|x, _| 3.0 * x));
    close(&vals(&(&a / 4.0)), &zip(|x, _| x / 4.0));
    close(&vals(&(4.0 / &b)), &zip(|_, y| 4.0 / y));
    close(&vals(&(a.clone() / 4.0)), &zip(|x, _| x / 4.0));
    close(&vals(&(-&a)), &zip(|x, _| -x));
    close(&vals(&(-a.clone())), &zip(|x, _| -x));
    // A chain mixing them.
    close(&vals(&(2.0 * &a * &b - &a / 2.0 + 1.0)), &zip(|x, y| 2.0 * x * y - x / 2.0 + 1.0));
}

#[test]
fn methods_match_the_operators_and_std() {
    let a = t(&A, &[4]);
    let b = t(&B, &[4]);
    close(&vals(&a.add(&b).unwrap()), &zip(|x, y| x + y));
    close(&vals(&a.sub(&b).unwrap()), &zip(|x, y| x - y));
    close(&vals(&a.mul(&b).unwrap()), &zip(|x, y| x * y));
    close(&vals(&a.div(&b).unwrap()), &zip(|x, y| x / y));
    close(&vals(&a.neg().unwrap()), &zip(|x, _| -x));
    close(&vals(&a.exp().unwrap()), &zip(|x, _| x.exp()));
    close(&vals(&b.abs().unwrap().log().unwrap()), &zip(|_, y| y.abs().ln()));
    close(&vals(&a.tanh().unwrap()), &zip(|x, _| x.tanh()));
    close(&vals(&a.sigmoid().unwrap()), &zip(|x, _| 1.0 / (1.0 + (-x).exp())));
    close(&vals(&a.relu().unwrap()), &zip(|x, _| x.max(0.0)));
    close(&vals(&a.sin().unwrap()), &zip(|x, _| x.sin()));
    close(&vals(&a.maximum(&b).unwrap()), &zip(f64::max));
    close(&vals(&a.pow_scalar(2.0).unwrap()), &zip(|x, _| x * x));
    close(&vals(&a.rsub_scalar(1.0).unwrap()), &zip(|x, _| 1.0 - x));
    close(&vals(&a.clamp(0.0, 1.0).unwrap()), &zip(|x, _| x.clamp(0.0, 1.0)));
    close(&[a.sum().unwrap().item().unwrap()], &[A.iter().sum()]);
    close(&[a.mean().unwrap().item().unwrap()], &[A.iter().sum::<f64>() / 4.0]);
    close(&[a.dot(&b).unwrap().item().unwrap()], &[zip(|x, y| x * y).iter().sum()]);
}

#[test]
fn shapes_matmul_and_reductions() {
    let a = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(a.shape(), vec![2, 3]);
    assert_eq!((a.ndim(), a.numel(), a.dtype()), (2, 6, DType::F64));
    let at = a.t().unwrap();
    assert_eq!(at.shape(), vec![3, 2]);
    close(&vals(&at), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    // (2,3) @ (3,2) = [[14, 32], [32, 77]].
    close(&vals(&a.matmul(&at).unwrap()), &[14.0, 32.0, 32.0, 77.0]);
    close(&vals(&a.sum_axes(&[0], false).unwrap()), &[5.0, 7.0, 9.0]);
    let kept = a.sum_axes(&[1], true).unwrap();
    assert_eq!(kept.shape(), vec![2, 1]);
    close(&vals(&kept), &[6.0, 15.0]);
    close(&vals(&a.mean_axes(&[-1], false).unwrap()), &[2.0, 5.0]);
    close(&vals(&a.max_axes(&[1], false).unwrap()), &[3.0, 6.0]);
    close(&vals(&a.reshape(&[3, -1]).unwrap()), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(a.reshape(&[3, -1]).unwrap().shape(), vec![3, 2]);
    // Broadcasting: (2,3) + (3).
    close(&vals(&(&a + &t(&[10.0, 20.0, 30.0], &[3]))), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    close(&vals(&Tensor::concat(&[&a, &a], 0).unwrap().slice(0, 1, 3, 1).unwrap()), &[4.0, 5.0, 6.0, 1.0, 2.0, 3.0]);
    let sm = a.softmax(-1).unwrap();
    close(&vals(&sm.sum_axes(&[-1], false).unwrap()), &[1.0, 1.0]);
    // A scalar has shape [] and one element.
    let s = Tensor::scalar(2.5).unwrap();
    assert_eq!((s.shape(), s.numel(), s.item().unwrap()), (vec![], 1, 2.5));
}

#[test]
fn dtypes_and_conversions() {
    let f = Tensor::from_slice(&[1.5f32, -2.0], &[2]).unwrap();
    assert_eq!(f.dtype(), DType::F32);
    assert_eq!(f.to_vec_f32().unwrap(), vec![1.5, -2.0]);
    assert_eq!(f.to_vec_f64().unwrap(), vec![1.5, -2.0]);
    assert_eq!((&f * 2.0).dtype(), DType::F32);
    let i = Tensor::from_slice(&[3i64, -4, 5], &[3]).unwrap();
    assert_eq!(i.dtype(), DType::I64);
    assert_eq!(i.to_vec::<i64>().unwrap(), vec![3, -4, 5]);
    assert_eq!(i.to_vec_f64().unwrap(), vec![3.0, -4.0, 5.0]);
    let mask = Tensor::from_slice(&[true, false, true], &[3]).unwrap();
    assert_eq!(mask.dtype(), DType::Bool);
    assert_eq!(mask.to_vec::<bool>().unwrap(), vec![true, false, true]);
    assert_eq!(mask.to_vec::<i64>().unwrap(), vec![1, 0, 1]);
    let gt = t(&[1.0, 5.0], &[2]).gt(&t(&[2.0, 2.0], &[2])).unwrap();
    assert_eq!(gt.to_vec_f64().unwrap(), vec![0.0, 1.0]);
    assert_eq!(f.to_dtype(DType::F64).unwrap().dtype(), DType::F64);
    let e = Tensor::from_slice::<f64>(&[], &[0, 3]).unwrap();
    assert_eq!((e.numel(), e.to_vec_f64().unwrap()), (0, vec![]));
    assert_eq!(Tensor::zeros(&[2], DType::F64).unwrap().to_vec_f64().unwrap(), vec![0.0, 0.0]);
    assert_eq!(Tensor::full(&[2], 7.0, DType::I64).unwrap().to_vec::<i64>().unwrap(), vec![7, 7]);
    assert_eq!(Tensor::arange(0.0, 3.0, 1.0, DType::F64).unwrap().to_vec_f64().unwrap(), vec![0.0, 1.0, 2.0]);
    assert_eq!(format!("{:?}", t(&[1.0, 2.0], &[2])), "Tensor(F64 [2] [1.0, 2.0])");
}

#[test]
fn clone_is_a_second_handle_to_the_same_tensor() {
    let x = t(&[1.0, 2.0, 3.0], &[3]).requiring_grad().unwrap();
    let x2 = x.clone();
    assert_ne!(x.handle(), x2.handle());
    assert!(x2.requires_grad());
    // A graph built on the clone backpropagates into the original leaf, and the gradient is
    // seen through both handles.
    (&x2 * &x2).sum().unwrap().backward().unwrap();
    close(&vals(&x.grad().unwrap().unwrap()), &[2.0, 4.0, 6.0]);
    close(&vals(&x2.grad().unwrap().unwrap()), &[2.0, 4.0, 6.0]);
    drop(x);
    close(&vals(&x2), &[1.0, 2.0, 3.0]);
    // int64 tensors clone too.
    let i = Tensor::from_slice(&[1i64, 2], &[2]).unwrap();
    assert_eq!(i.clone().to_vec::<i64>().unwrap(), vec![1, 2]);
    // detach shares the values but not the graph.
    let d = x2.detach().unwrap();
    assert!(!d.requires_grad());
}

#[test]
fn higher_order_gradients_and_grad() {
    // d/dx x^3 = 3x^2, d2/dx2 = 6x at x = 2.
    let x = Tensor::scalar(2.0).unwrap().requiring_grad().unwrap();
    let y = x.pow_scalar(3.0).unwrap();
    let g = autograd::grad(&[&y], &[&x], true).unwrap().remove(0);
    assert_eq!(g.item().unwrap(), 12.0);
    let g2 = autograd::grad(&[&g], &[&x], false).unwrap().remove(0);
    assert_eq!(g2.item().unwrap(), 12.0);
    assert!(x.grad().unwrap().is_none(), "ag_grad leaves .grad alone");
}

#[test]
fn tensors_are_send_and_sync_and_usable_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tensor>();
    assert_send_sync::<autograd::Optimizer>();
    assert_send_sync::<autograd::CustomOp>();
    let w = t(&[1.0, 2.0, 3.0], &[3]);
    std::thread::scope(|s| {
        for k in 0..4 {
            let w = &w;
            s.spawn(move || {
                for _ in 0..100 {
                    let y = (w * k as f64).sum().unwrap().item().unwrap();
                    assert_eq!(y, 6.0 * k as f64);
                }
            });
        }
    });
    // A tensor moved to another thread and back.
    let moved = std::thread::spawn(move || (&w + 1.0).sum().unwrap()).join().unwrap();
    assert_eq!(moved.item().unwrap(), 9.0);
}

#[test]
fn graph_to_dot_names_the_ops() {
    let x = t(&[1.0], &[1]).requiring_grad().unwrap();
    let y = x.exp().unwrap().sum().unwrap();
    let dot = y.graph_to_dot().unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("exp"), "{dot}");
}

#[test]
fn library_information() {
    use autograd::sys;
    let v = autograd::version();
    assert_eq!(v, format!("{}.{}.{}", sys::AG_VERSION_MAJOR, sys::AG_VERSION_MINOR, sys::AG_VERSION_PATCH));
    let n = autograd::num_threads().unwrap();
    assert!((1..=256).contains(&n));
    let e = autograd::set_num_threads(0).unwrap_err();
    assert_eq!(e.status, autograd::Status::Argument);
    assert_eq!(autograd::num_threads().unwrap(), n, "a refused count changes nothing");
}
