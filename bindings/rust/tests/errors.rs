//! Errors: every failure is an `Err` with the library's status and message; operators panic
//! with the same; the error type works with `?` and `Box<dyn std::error::Error>`.

use std::panic::catch_unwind;

use autograd::{sys, DType, Error, Status, Tensor};

fn m(shape: &[i64]) -> Tensor {
    Tensor::ones(shape, DType::F64).unwrap()
}

#[test]
fn shape_mismatch_is_err_shape_with_the_message() {
    let e = m(&[2, 3]).add(&m(&[4])).unwrap_err();
    assert_eq!(e.status, Status::Shape);
    assert_eq!(e.status.code(), sys::AG_ERR_SHAPE);
    assert_eq!(e.status.name(), "AG_ERR_SHAPE");
    assert_eq!(e.message, "ag_add: shapes [2, 3] and [4] do not broadcast (axis 1: 3 vs 4)");
    assert_eq!(e.to_string(), "AG_ERR_SHAPE: ag_add: shapes [2, 3] and [4] do not broadcast (axis 1: 3 vs 4)");
}

#[test]
fn other_statuses() {
    // Mixed dtypes.
    let f32s = Tensor::ones(&[2], DType::F32).unwrap();
    let e = f32s.mul(&m(&[2])).unwrap_err();
    assert_eq!(e.status, Status::DType);
    assert!(e.message.contains("different dtypes (float32 and float64)"), "{e}");
    // item of a tensor of two elements.
    let e = m(&[2]).item().unwrap_err();
    assert_eq!(e.status, Status::Shape);
    assert!(e.message.contains("item() needs exactly one element"), "{e}");
    // requires_grad on a result.
    let x = m(&[2]).requiring_grad().unwrap();
    let y = x.exp().unwrap();
    let e = y.set_requires_grad(false).unwrap_err();
    assert_eq!(e.status, Status::State);
    // backward twice through a released graph.
    let s = y.sum().unwrap();
    s.backward().unwrap();
    let e = s.backward().unwrap_err();
    assert_eq!(e.status, Status::State);
    assert!(e.message.contains("retain_graph"), "{e}");
    // A bad axis.
    let e = m(&[2, 3]).sum_axes(&[2], false).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Status::Argument, "ag_sum: axis 2 is out of range for a tensor of rank 2")
    );
    // reading float values as int64 is refused (use to_dtype).
    assert_eq!(m(&[2]).to_vec::<i64>().unwrap_err().status, Status::DType);
    // An optimizer with a negative learning rate.
    let e = autograd::Optimizer::sgd(&[&x], -0.1).unwrap_err();
    assert_eq!(e.status, Status::Argument);
    assert!(e.message.contains("the learning rate must be finite and >= 0, got -0.1"), "{e}");
}

#[test]
fn from_slice_checks_the_length_itself() {
    let e = Tensor::from_slice(&[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert_eq!(e.status, Status::Shape);
    assert_eq!(e.message, "Tensor::from_slice: 3 values for shape [2, 2] of 4 elements");
    // A negative extent is left to the library, which reports it.
    let e = Tensor::from_slice::<f64>(&[], &[2, -3]).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Status::Shape, "ag_tensor_from_data: negative extent -3 in shape [2, -3]")
    );
}

#[test]
fn operators_panic_with_the_status_and_message() {
    let a = m(&[2, 3]);
    let b = m(&[4]);
    let payload = catch_unwind(|| &a + &b).unwrap_err();
    let text = payload.downcast_ref::<String>().expect("a formatted panic message");
    assert_eq!(
        text,
        "autograd: operator + failed: AG_ERR_SHAPE: ag_add: shapes [2, 3] and [4] do not broadcast (axis 1: 3 vs 4)"
    );
    let f32s = Tensor::ones(&[4], DType::F32).unwrap();
    let payload = catch_unwind(|| &b / f32s).unwrap_err();
    assert!(payload.downcast_ref::<String>().unwrap().contains("AG_ERR_DTYPE"));
    // The library carries on.
    assert_eq!((&a * 3.0).sum().unwrap().item().unwrap(), 18.0);
}

#[test]
fn errors_work_with_question_mark_and_box_dyn_error() {
    fn inner() -> Result<f64, Box<dyn std::error::Error>> {
        let t = Tensor::from_slice(&[1.0, 2.0], &[2])?;
        Ok(t.reshape(&[3])?.item()?)
    }
    let e = inner().unwrap_err();
    let e = e.downcast_ref::<Error>().expect("an autograd::Error");
    assert_eq!(e.status, Status::Shape);
    assert!(e.message.starts_with("ag_reshape: shape [3] (3 elements) does not match [2] (2 elements)"), "{e}");
}

#[test]
fn the_message_is_read_on_the_failing_thread() {
    // ag_last_error is per thread: two threads failing differently each see their own.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let e = m(&[2, 3]).matmul(&m(&[4 + i, 5])).unwrap_err();
                    assert_eq!(e.message, format!("ag_matmul: inner extents differ: [2, 3] @ [{}, 5]", 4 + i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn status_codes_round_trip() {
    for code in 1..=10 {
        let s = Status::from_code(code).unwrap();
        assert_eq!(s.code(), code);
        // SAFETY: ag_status_name returns a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(sys::ag_status_name(code)) };
        assert_eq!(s.name(), name.to_str().unwrap());
    }
    assert_eq!(Status::from_code(sys::AG_OK), None);
    assert_eq!(Status::from_code(42), Some(Status::Unknown(42)));
}
