//! No handle leaks: the library's count of live handles (ag_live_handle_count, process-wide)
//! before and after each kind of use. One test in its own binary, so no other test's handles
//! come and go meanwhile.

use autograd::{gradcheck, live_handle_count, CustomOp, DType, Optimizer, Tensor};

fn live() -> i64 {
    live_handle_count().unwrap()
}

#[test]
fn every_handle_is_freed() {
    let base = live();

    // Drop frees; clone takes exactly one new handle (its scratch generator is freed).
    let x = Tensor::from_slice(&[1.0, 2.0, -1.0, 0.5, -1.5, 2.0], &[2, 3]).unwrap().requiring_grad().unwrap();
    assert_eq!(live(), base + 1);
    let clones: Vec<Tensor> = (0..5).map(|_| x.clone()).collect();
    assert_eq!(live(), base + 6);
    drop(clones);
    assert_eq!(live(), base + 1);
    let raw = x.try_clone().unwrap().into_raw();
    assert_eq!(live(), base + 2);
    drop(Tensor::from_raw(raw));
    assert_eq!(live(), base + 1);

    // The acceptance graph, its gradients, and operators' temporaries.
    {
        let w = Tensor::from_slice(&[0.5, -1.0, 1.5, 0.25, -0.5, 2.0], &[3, 2]).unwrap().requiring_grad().unwrap();
        let f = (x.matmul(&w).unwrap().relu().unwrap() * 2.0).sum().unwrap();
        f.backward().unwrap();
        let _g = (x.grad().unwrap(), w.grad().unwrap());
        assert_eq!(live(), base + 5);
    }
    assert_eq!(live(), base + 1);

    // Failed calls make no handle.
    let bad = Tensor::ones(&[4, 5], DType::F64).unwrap();
    for _ in 0..10 {
        assert!(x.matmul(&bad).is_err());
        assert!(std::panic::catch_unwind(|| &x + &bad).is_err());
        assert!(Tensor::from_slice(&[1.0], &[2]).is_err());
    }
    drop(bad);
    assert_eq!(live(), base + 1);

    // Hooks, one replacing the gradient and one panicking.
    {
        let y = Tensor::from_slice(&[1.0, 2.0], &[2]).unwrap().requiring_grad().unwrap();
        y.register_hook(|g| Ok(Some(g * 2.0))).unwrap();
        (&y * &y).sum().unwrap().backward().unwrap();
        let z = Tensor::from_slice(&[1.0], &[1]).unwrap().requiring_grad().unwrap();
        z.register_hook(|g| -> autograd::Result<Option<Tensor>> {
            let _t = g * 3.0;
            panic!("a panicking hook holding a tensor");
        })
        .unwrap();
        assert!(z.exp().unwrap().sum().unwrap().backward().is_err());
    }
    assert_eq!(live(), base + 1);

    // A custom op, its backward, a failing forward; the op handle itself.
    {
        let op = CustomOp::with_backward(
            "square",
            1,
            1,
            |ctx, i| {
                ctx.save(&[i[0]])?;
                Ok(vec![i[0].mul(i[0])?])
            },
            |ctx, g| Ok(vec![Some(g[0].mul(&ctx.saved(0)?.mul_scalar(2.0)?)?)]),
        )
        .unwrap();
        let y = op.apply(&[&x]).unwrap().remove(0);
        y.sum().unwrap().backward().unwrap();
        let failing = CustomOp::new("failing", 1, 1, |_c, i| {
            let _made = i[0].exp()?; // a tensor made, then a failure: it must be freed
            Err(autograd::Error::new(autograd::Status::State, "nope"))
        })
        .unwrap();
        assert!(failing.apply(&[&x]).is_err());
        let r = gradcheck(
            |inp| Ok(op.apply(inp)?.remove(0)),
            &[&Tensor::from_slice(&[0.5, 1.5], &[2]).unwrap().requiring_grad().unwrap()],
            1e-6,
            1e-7,
            1e-5,
        )
        .unwrap();
        assert!(r.passed);
    }
    assert_eq!(live(), base + 1);

    // Optimizers.
    {
        let opt = Optimizer::adam(&[&x], 0.1).unwrap();
        assert_eq!(live(), base + 2);
        opt.step().unwrap();
        opt.zero_grad().unwrap();
    }
    drop(x);
    assert_eq!(live(), base, "every handle made by this test is freed");
}
