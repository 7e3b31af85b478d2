import XCTest
@testable import AutogradEngine

/// The ops added in issue 15 (log1p, expm1, erf, atan2, clamp, cumsum): values, gradients and
/// tangents against PyTorch 2 float64 (torch.autograd and torch.func.jvp, printed to 17
/// digits), and the conventions where we differ from it on purpose, against hand derivation.
/// Gradchecks are in CatalogueGradientTests, fused-against-recorded agreement in
/// FusedRuleAgreementTests.
final class AddedOpsTests: XCTestCase {
    /// f's value, its gradient for `seed` and its tangent for `tangent` at x (float64).
    private func evaluate(_ x: [Double], seed: [Double], tangent: [Double], _ f: (Tensor) throws -> Tensor) throws
        -> (value: Tensor, gradient: Tensor, tangent: Tensor) {
        let leaf = try Tensor(x, shape: [x.count])
        try leaf.setRequiresGrad(true)
        let y = try f(leaf)
        let g = try Tensor.gradients(of: [y], withRespectTo: [leaf], seeds: [Tensor(seed, shape: y.shape)])[0]!
        let (_, t) = try Transforms.jvp({ [try f($0[0])] }, primals: [Tensor(x, shape: [x.count])],
                                        tangents: [Tensor(tangent, shape: [x.count])])
        return (y, g, t[0])
    }

    func testLog1pAgainstPyTorch() throws {
        let x = [-0.9, -0.5, -1e-10, 0.0, 1e-12, 0.3, 2.5, 40.0]
        let r = try evaluate(x, seed: [Double](repeating: 1.5, count: 8), tangent: (1...8).map { 0.25 * Double($0) }) { try $0.log1p() }
        assertValues(r.value, [-2.302585092994046, -0.6931471805599453, -1.00000000005e-10, 0.0, 9.999999999995e-13,
                               0.26236426446749106, 1.252762968495368, 3.713572066704308], tol: 1e-15, "log1p")
        assertValues(r.gradient, [15.000000000000004, 3.0, 1.50000000015, 1.5, 1.4999999999984999, 1.1538461538461537,
                                  0.42857142857142855, 0.036585365853658534], tol: 1e-15, "log1p'")
        assertValues(r.tangent, [2.5000000000000004, 1.0, 0.750000000075, 1.0, 1.2499999999987499, 1.1538461538461537,
                                 0.5, 0.04878048780487805], tol: 1e-15, "log1p jvp")
        // The small values keep their relative accuracy (log(1 + x) would give 0 or 1.00000008e-10).
        XCTAssertEqual(r.value.values[2], -1.00000000005e-10, accuracy: 1e-25)
        // -1 gives -inf, below -1 nan (IEEE, as torch.log1p).
        let edge = try Tensor([-1, -2], shape: [2]).log1p().values
        XCTAssertEqual(edge[0], -.infinity)
        XCTAssertTrue(edge[1].isNaN)
    }

    /// expm1' is taken as e^x, not PyTorch's y + 1: the same to an ulp for x > -1, but y + 1 is
    /// 0 at x = -40 (y rounds to -1), where e^-40 = 4.25e-18. The expected values there are
    /// torch.exp(x) · seed; elsewhere they are PyTorch's own gradients.
    func testExpm1AgainstPyTorchAndTheExactDerivativeWherePyTorchCancels() throws {
        let x = [-40.0, -5.0, -0.7, -1e-10, 0.0, 1e-12, 0.3, 2.5, 5.0]
        let r = try evaluate(x, seed: [Double](repeating: 1.5, count: 9), tangent: (1...9).map { 0.25 * Double($0) }) { try $0.expm1() }
        assertValues(r.value, [-1.0, -0.9932620530009145, -0.5034146962085905, -9.999999999500001e-11, 0.0, 1.0000000000005e-12,
                               0.3498588075760031, 11.182493960703473, 147.4131591025766], tol: 1e-15, "expm1")
        // PyTorch: [0.0, 0.010106920498628214, ...]; exact: 1.5 · torch.exp(x).
        assertValues(r.gradient, [6.372531382937383e-18, 0.0101069204986282, 0.7448779556871143, 1.49999999985, 1.5,
                                  1.5000000000015001, 2.0247882113640046, 18.27374094105521, 222.61973865386489], tol: 1e-15, "expm1'")
        XCTAssertEqual(r.gradient.values[0], 6.372531382937383e-18, accuracy: 1e-31, "expm1' at -40 keeps its relative accuracy")
        // torch.func.jvp, except at -40 (0.25 · e^-40 there, where torch gives 0).
        assertValues(r.tangent, [0.25 * 4.248354255291589e-18, 0.003368973499542738, 0.3724389778435572, 0.9999999999, 1.25,
                                 1.5000000000015001, 2.3622529132580055, 24.364987921406946, 333.92960798079736], tol: 1e-15, "expm1 jvp")
        XCTAssertEqual(r.tangent.values[0], 0.25 * 4.248354255291589e-18, accuracy: 1e-31)
    }

    func testErfAgainstPyTorch() throws {
        let x = [-40.0, -5.0, -0.7, -1e-10, 0.0, 1e-12, 0.3, 2.5, 5.0]
        let r = try evaluate(x, seed: [Double](repeating: 1.5, count: 9), tangent: (1...9).map { 0.25 * Double($0) }) { try $0.erf() }
        assertValues(r.value, [-1.0, -0.9999999999984626, -0.6778011938374184, -1.1283791670955126e-10, 0.0, 1.1283791670955126e-12,
                               0.3286267594591274, 0.999593047982555, 0.9999999999984626], tol: 1e-15, "erf")
        assertValues(r.gradient, [0.0, 2.3506299796526004e-11, 1.036912290615808, 1.692568750643269, 1.692568750643269,
                                  1.692568750643269, 1.5468913644284448, 0.003267426345529065, 2.3506299796526004e-11], tol: 1e-14, "erf'")
        assertValues(r.tangent, [0.0, 7.835433265508668e-12, 0.518456145307904, 1.1283791670955126, 1.4104739588693906,
                                 1.692568750643269, 1.8047065918331855, 0.00435656846070542, 3.5259449694789006e-11], tol: 1e-14, "erf jvp")
    }

    /// float32 values against torch float32 (its vectorised kernels and glibc's may differ in
    /// the last place: 2 ulp allowed).
    func testFloat32ValuesAgainstPyTorch() throws {
        func check(_ x: [Double], _ f: (Tensor) throws -> Tensor, _ expected: [Double], _ label: String) throws {
            let y = try f(Tensor(x, shape: [x.count], dtype: .float32))
            XCTAssertEqual(y.dtype, .float32)
            for (i, (a, b)) in zip(y.values, expected).enumerated() {
                XCTAssertLessThanOrEqual(FusedRuleAgreementTests.ulps(a, b, .float32), 2, "\(label)[\(i)]: \(a) vs torch \(b)")
            }
        }
        try check([-0.9, -0.5, -1e-10, 0.0, 1e-12, 0.3, 2.5, 40.0], { try $0.log1p() },
                  [-2.3025848865509033, -0.6931471824645996, -1.000000013351432e-10, 0.0, 9.999999960041972e-13, 0.2623642683029175,
                   1.2527629137039185, 3.7135720252990723], "log1p")
        let x = [-40.0, -5.0, -0.7, -1e-10, 0.0, 1e-12, 0.3, 2.5, 5.0]
        try check(x, { try $0.expm1() }, [-1.0, -0.9932620525360107, -0.5034146904945374, -1.000000013351432e-10, 0.0,
                                          9.999999960041972e-13, 0.349858820438385, 11.182494163513184, 147.4131622314453], "expm1")
        try check(x, { try $0.erf() }, [-1.0, -1.0, -0.6778011918067932, -1.1283791956362421e-10, 0.0, 1.128379182625816e-12,
                                        0.3286267817020416, 0.9995930194854736, 1.0], "erf")
        let a = try Tensor([1.0, -2.0, 0.5, 3.0, 0.0, -0.0, 0.0, 1.0, 0.0, -1.0], shape: [10], dtype: .float32)
        let b = try Tensor([2.0, 1.5, -0.25, -3.0, 0.0, 0.0, -0.0, 0.0, 1.0, -0.0], shape: [10], dtype: .float32)
        let expected = [0.46364760398864746, -0.9272952079772949, 2.0344438552856445, 2.356194496154785, 0.0, -0.0,
                        3.1415927410125732, 1.5707963705062866, 0.0, -1.5707963705062866]
        for (i, (v, e)) in zip(try a.atan2(b).values, expected).enumerated() {
            XCTAssertLessThanOrEqual(FusedRuleAgreementTests.ulps(v, e, .float32), 2, "atan2[\(i)]")
            XCTAssertEqual(v.sign, e.sign, "atan2[\(i)]: signed zero")
        }
    }

    /// atan2 at quadrants, signed zeros and (0, 0) against PyTorch: the gradient at (0, 0) is 0
    /// to both (PyTorch's convention), selected (0 even for an infinite seed); the tangent there
    /// is 0 too (torch.func.jvp gives nan: its JVP divides by a² + b² = 0, its VJP does not).
    func testAtan2AgainstPyTorch() throws {
        let av = [1.0, -2.0, 0.5, 3.0, 0.0, -0.0, 0.0, 1.0, 0.0, -1.0]
        let bv = [2.0, 1.5, -0.25, -3.0, 0.0, 0.0, -0.0, 0.0, 1.0, -0.0]
        let a = try Tensor(av, shape: [10]), b = try Tensor(bv, shape: [10])
        try a.setRequiresGrad(true); try b.setRequiresGrad(true)
        let y = try a.atan2(b)
        assertValues(y, [0.4636476090008061, -0.9272952180016122, 2.0344439357957027, 2.356194490192345, 0.0, -0.0,
                         3.141592653589793, 1.5707963267948966, 0.0, -1.5707963267948966], tol: 1e-15, "atan2")
        XCTAssertEqual(y.values[5].sign, .minus, "atan2(-0, 0) = -0")
        try y.sum().backward()
        assertValues(a.grad!, [0.4, 0.24, -0.8, -0.16666666666666666, 0.0, 0.0, -0.0, 0.0, 1.0, -0.0], tol: 1e-15, "d/da")
        assertValues(b.grad!, [-0.2, 0.32, -1.6, -0.16666666666666666, -0.0, 0.0, -0.0, -1.0, -0.0, 1.0], tol: 1e-15, "d/db")
        let (_, t) = try Transforms.jvp({ [try $0[0].atan2($0[1])] }, primals: [Tensor(av, shape: [10]), Tensor(bv, shape: [10])],
                                        tangents: [Tensor.full([10], 0.5), Tensor.full([10], -2)])
        // torch.func.jvp, with 0 in place of its nan at the three (±0, ±0) points.
        assertValues(t[0], [0.6, -0.52, 2.8, 0.25, 0, 0, 0, 2.0, 0.5, -2.0], tol: 1e-15, "atan2 jvp")
        // (0, 0) with an infinite seed: selected, not multiplied.
        let z = try Tensor([0], shape: [1]), w = try Tensor([0], shape: [1])
        try z.setRequiresGrad(true); try w.setRequiresGrad(true)
        try z.atan2(w).backward(seed: Tensor([Double.infinity], shape: [1]))
        XCTAssertEqual(z.grad!.values, [0])
        XCTAssertEqual(w.grad!.values, [0])
    }

    /// Where a² + b² overflows or underflows PyTorch's gradient is 0; ours is b/(a² + b²) and
    /// -a/(a² + b²) by hand: at a = b = s they are ±1/(2s).
    func testAtan2GradientWithoutOverflowOrUnderflow() throws {
        for (s, dtype) in [(1e200, DType.float64), (1e-200, .float64), (1e30, .float32), (1e-30, .float32)] {
            let a = try Tensor([s], shape: [1], dtype: dtype), b = try Tensor([s], shape: [1], dtype: dtype)
            try a.setRequiresGrad(true); try b.setRequiresGrad(true)
            let (ga, gb) = try { () throws -> (Tensor, Tensor) in
                let g = try Tensor.gradients(of: [a.atan2(b)], withRespectTo: [a, b])
                return (g[0]!, g[1]!)
            }()
            let stored = dtype == .float32 ? Double(Float(s)) : s
            let expected = 1 / (2 * stored)
            XCTAssertLessThanOrEqual(FusedRuleAgreementTests.ulps(ga.values[0], expected, dtype), 2, "d/da at \(s) \(dtype): \(ga.values[0])")
            XCTAssertLessThanOrEqual(FusedRuleAgreementTests.ulps(gb.values[0], -expected, dtype), 2, "d/db at \(s) \(dtype): \(gb.values[0])")
        }
        // a = inf, b finite: d/da = 0, d/db = -0 (the limits; PyTorch gives nan for d/db).
        let a = try Tensor([Double.infinity], shape: [1]), b = try Tensor([1], shape: [1])
        try a.setRequiresGrad(true); try b.setRequiresGrad(true)
        let g = try Tensor.gradients(of: [a.atan2(b)], withRespectTo: [a, b])
        XCTAssertEqual(g[0]!.values, [0])
        XCTAssertEqual(g[1]!.values, [0])
    }

    /// torch.clamp's table (PyTorch float64, seed 1): one or both bounds, x at the bounds, nan,
    /// ±inf, min > max.
    func testClampAgainstPyTorch() throws {
        let x = [-2.0, -1, 0, 1, 2, .nan, -.infinity, .infinity]
        let cases: [(Double?, Double?, [Double], [Double])] = [
            (-1, 1, [-1, -1, 0, 1, 1, .nan, -1, 1], [0, 1, 1, 1, 0, 0, 0, 0]),
            (-1, nil, [-1, -1, 0, 1, 2, .nan, -1, .infinity], [0, 1, 1, 1, 1, 0, 0, 1]),
            (nil, 1, [-2, -1, 0, 1, 1, .nan, -.infinity, 1], [1, 1, 1, 1, 0, 0, 1, 0]),
            (1, -1, [-1, -1, -1, -1, -1, .nan, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0]),
            (-.infinity, .infinity, [-2, -1, 0, 1, 2, .nan, -.infinity, .infinity], [1, 1, 1, 1, 1, 0, 1, 1]),
        ]
        for (lo, hi, values, grads) in cases {
            for dtype in [DType.float64, .float32] {
                let label = "clamp(min: \(lo.map { "\($0)" } ?? "nil"), max: \(hi.map { "\($0)" } ?? "nil")) \(dtype)"
                let leaf = try Tensor(x, shape: [8], dtype: dtype)
                try leaf.setRequiresGrad(true)
                let y = try leaf.clamp(min: lo, max: hi)
                for (i, (v, e)) in zip(y.values, values).enumerated() {
                    XCTAssertTrue(v == e || (v.isNaN && e.isNaN), "\(label) value[\(i)]: \(v), torch \(e)")
                }
                try y.backward(seed: Tensor.ones([8], dtype: dtype))
                XCTAssertEqual(leaf.grad!.values, grads, label)
                let (_, t) = try Transforms.jvp({ [try $0[0].clamp(min: lo, max: hi)] }, primals: [Tensor(x, shape: [8], dtype: dtype)],
                                                tangents: [Tensor.full([8], 3, dtype: dtype)])
                XCTAssertEqual(t[0].values, grads.map { 3 * $0 }, "\(label) jvp")
            }
        }
        // An infinite seed reaches only the elements inside the bounds (PyTorch: inf there, 0 elsewhere).
        let leaf = try Tensor(x, shape: [8])
        try leaf.setRequiresGrad(true)
        try leaf.clamp(min: -1, max: 1).backward(seed: Tensor.full([8], .infinity))
        XCTAssertEqual(leaf.grad!.values, [0, .infinity, .infinity, .infinity, 0, 0, 0, 0])
        // A nan bound is refused.
        XCTAssertThrowsError(try leaf.clamp(min: .nan)) { XCTAssertTrue("\($0)".contains("nan"), "\($0)") }
        XCTAssertThrowsError(try leaf.clamp(min: 0, max: .nan))
    }

    /// cumsum along every axis of a [2, 3, 4] tensor, negative axes included: values and
    /// gradients (the reversed cumulative sum of g) against PyTorch, tangents against the
    /// cumulative sum of the tangent by hand.
    func testCumsumAgainstPyTorch() throws {
        let x = (0..<24).map { Double($0) * 0.37 - 2.1 }
        let g = (0..<24).map { Double($0) * 0.5 + 1 }
        let byAxis: [Int: ([Double], [Double])] = [
            0: ([-2.1, -1.73, -1.36, -0.9900000000000002, -0.6200000000000001, -0.25, 0.11999999999999966, 0.48999999999999977,
                 0.8599999999999999, 1.23, 1.6, 1.9700000000000002, 0.23999999999999932, 0.9799999999999995, 1.7199999999999995,
                 2.4599999999999995, 3.1999999999999997, 3.9399999999999995, 4.68, 5.42, 6.16, 6.9, 7.640000000000001, 8.38],
                [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11, 11.5, 12, 12.5]),
            1: ([-2.1, -1.73, -1.36, -0.9900000000000002, -2.72, -1.98, -1.2400000000000004, -0.5000000000000004,
                 -1.8600000000000003, -0.75, 0.35999999999999965, 1.4699999999999998, 2.3399999999999994, 2.7099999999999995,
                 3.0799999999999996, 3.4499999999999997, 6.159999999999999, 6.899999999999999, 7.640000000000001, 8.379999999999999,
                 11.46, 12.569999999999999, 13.680000000000001, 14.79],
                [9, 10.5, 12, 13.5, 8, 9, 10, 11, 5, 5.5, 6, 6.5, 27, 28.5, 30, 31.5, 20, 21, 22, 23, 11, 11.5, 12, 12.5]),
            2: ([-2.1, -3.83, -5.19, -6.180000000000001, -0.6200000000000001, -0.8700000000000001, -0.7500000000000004,
                 -0.2600000000000007, 0.8599999999999999, 2.09, 3.69, 5.66, 2.3399999999999994, 5.049999999999999, 8.129999999999999,
                 11.579999999999998, 3.82, 8.01, 12.57, 17.5, 5.300000000000001, 10.97, 17.01, 23.42],
                [7, 6, 4.5, 2.5, 15, 12, 8.5, 4.5, 23, 18, 12.5, 6.5, 31, 24, 16.5, 8.5, 39, 30, 20.5, 10.5, 47, 36, 24.5, 12.5]),
        ]
        for axis in [0, 1, 2, -1, -2, -3] {
            let (values, grads) = byAxis[(axis + 3) % 3]!
            let leaf = try Tensor(x, shape: [2, 3, 4])
            try leaf.setRequiresGrad(true)
            let y = try leaf.cumsum(axis: axis)
            XCTAssertEqual(y.shape, [2, 3, 4])
            assertValues(y, values, tol: 1e-14, "cumsum axis \(axis)")
            try y.backward(seed: Tensor(g, shape: [2, 3, 4]))
            assertValues(leaf.grad!, grads, tol: 1e-15, "cumsum' axis \(axis)")
            // The tangent is the cumulative sum of the tangent: feeding g as the tangent gives the values of cumsum(g).
            let (_, t) = try Transforms.jvp({ [try $0[0].cumsum(axis: axis)] }, primals: [Tensor(x, shape: [2, 3, 4])],
                                            tangents: [Tensor(g, shape: [2, 3, 4])])
            let expected = try Tensor(g, shape: [2, 3, 4]).cumsum(axis: axis).values
            XCTAssertEqual(t[0].values, expected, "cumsum jvp axis \(axis)")
            var hand = g
            let strides = [12, 4, 1], a = (axis + 3) % 3
            for i in 0..<24 where (i / strides[a]) % [2, 3, 4][a] > 0 { hand[i] = hand[i - strides[a]] + g[i] }
            XCTAssertEqual(expected, hand, "cumsum of g by hand, axis \(axis)")
        }
    }

    func testCumsumEdgeCases() throws {
        // 0-d: axis 0 or -1, the tensor itself; anything else is an argument error (as torch).
        let s = try Tensor(scalar: 3)
        try s.setRequiresGrad(true)
        XCTAssertEqual(try s.cumsum(axis: 0).values, [3])
        XCTAssertEqual(try s.cumsum(axis: -1).shape, [])
        XCTAssertThrowsError(try s.cumsum(axis: 1))
        try s.cumsum(axis: -1).backward()
        XCTAssertEqual(s.grad!.values, [1])
        // Out-of-range axes, the extremes included.
        let x = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        for axis in [2, -3, Int.min, Int.max] {
            XCTAssertThrowsError(try x.cumsum(axis: axis), "axis \(axis)") { XCTAssertTrue($0 is AutogradError) }
        }
        // Empty axes and empty tensors.
        XCTAssertEqual(try Tensor.zeros([2, 0, 3]).cumsum(axis: 1).shape, [2, 0, 3])
        XCTAssertEqual(try Tensor.zeros([0]).cumsum(axis: 0).count, 0)
        // inf and nan run on to the end of their lane only.
        let y = try Tensor([1, .infinity, 1, 2, .nan, 3], shape: [2, 3]).cumsum(axis: 1).values
        XCTAssertEqual(y[0], 1); XCTAssertEqual(y[1], .infinity); XCTAssertEqual(y[2], .infinity)
        XCTAssertEqual(y[3], 2); XCTAssertTrue(y[4].isNaN && y[5].isNaN)
        // Overflow to inf, then inf + -inf = nan (as PyTorch's running sum).
        let big = try Tensor([1e308, 1e308, -1e308, -.infinity], shape: [4]).cumsum(axis: 0).values
        XCTAssertEqual(big[0], 1e308); XCTAssertEqual(big[1], .infinity); XCTAssertEqual(big[2], .infinity); XCTAssertTrue(big[3].isNaN)
    }

    /// float32 is summed in double and each element rounded once, as PyTorch's CPU kernel does:
    /// for dyadic inputs (exact in double) the result is the exact prefix sum rounded to float,
    /// bit for bit. A running float32 total would differ (it rounds at every step).
    func testCumsumFloat32RoundsEachExactPrefixSumOnce() throws {
        let n = 3000
        let x = (0..<n).map { i -> Double in
            let m = Double((i * 7919) % 1001 - 500), scale = Foundation.pow(2.0, Double(i % 24 - 18))
            return m * scale
        }
        let y = try Tensor(x, shape: [n], dtype: .float32).cumsum(axis: 0).values
        var exact = 0.0, runningFloat: Float = 0, floatDiffers = 0
        for i in 0..<n {
            exact += x[i]   // exact: every partial sum fits in 53 bits
            runningFloat += Float(x[i])
            XCTAssertEqual(y[i], Double(Float(exact)), "element \(i)")
            if Double(runningFloat) != Double(Float(exact)) { floatDiffers += 1 }
        }
        XCTAssertGreaterThan(floatDiffers, 100, "the inputs tell a float32 running sum apart")
        // Reverse (cumsum's VJP), along axis 0 of [n, 1]: the suffix sums, each rounded once.
        let leaf = try Tensor(x.map { _ in 0 }, shape: [n, 1], dtype: .float32)
        try leaf.setRequiresGrad(true)
        try leaf.cumsum(axis: 0).backward(seed: Tensor(x, shape: [n, 1], dtype: .float32))
        let suffix = leaf.grad!.values
        exact = 0
        for i in stride(from: n - 1, through: 0, by: -1) {
            exact += x[i]
            XCTAssertEqual(suffix[i], Double(Float(exact)), "suffix element \(i)")
        }
    }

    /// float64 runs compensated: 1 followed by 1e-16s keeps every 1e-16 (a running double sum,
    /// PyTorch's, stays at 1: 1 + 1e-16 rounds to 1).
    func testCumsumFloat64IsCompensated() throws {
        let n = 1000
        let y = try Tensor([1] + [Double](repeating: 1e-16, count: n - 1), shape: [n]).cumsum(axis: 0).values
        for k in [1, 10, 100, 999] {
            let expected = 1 + Double(k) * 1e-16
            XCTAssertLessThanOrEqual(FusedRuleAgreementTests.ulps(y[k], expected, .float64), 1, "element \(k): \(y[k]) vs \(expected)")
        }
    }

    /// Second derivatives (create_graph) of the new elementwise ops against hand formulas and
    /// central differences of the first derivative; cumsum's gradient is differentiable again.
    func testSecondDerivatives() throws {
        func second(_ x0: Double, _ f: (Tensor) throws -> Tensor) throws -> Double {
            let x = try Tensor(scalar: x0)
            try x.setRequiresGrad(true)
            let d1 = try Tensor.gradients(of: [f(x)], withRespectTo: [x], createGraph: true)[0]!
            return try Tensor.gradients(of: [d1], withRespectTo: [x])[0]!.item()
        }
        let x = 0.7
        XCTAssertEqual(try second(x) { try $0.log1p() }, -1 / ((1 + x) * (1 + x)), accuracy: 1e-14)
        XCTAssertEqual(try second(x) { try $0.expm1() }, Foundation.exp(x), accuracy: 1e-14)
        XCTAssertEqual(try second(x) { try $0.erf() }, -4 * x / Double.pi.squareRoot() * Foundation.exp(-x * x), accuracy: 1e-14)
        XCTAssertEqual(try second(x) { try $0.clamp(min: 0, max: 1) * $0 }, 2, accuracy: 1e-14)
        // atan2(x, c) and atan2(c, x): d²/dx² = -2xc/(x² + c²)² and 2xc/(x² + c²)².
        for (c, large) in [(1.3, false), (0.2, true)] {
            let r2 = x * x + c * c
            XCTAssertEqual(try second(x) { try $0.atan2(Tensor(scalar: c)) }, -2 * x * c / (r2 * r2), accuracy: 1e-13, "large \(large)")
            XCTAssertEqual(try second(x) { try Tensor(scalar: c).atan2($0) }, 2 * x * c / (r2 * r2), accuracy: 1e-13, "large \(large)")
        }
        // The mixed partial of atan2: d²/da db = (a² - b²)/(a² + b²)².
        let a = try Tensor(scalar: 0.8), b = try Tensor(scalar: -0.3)
        try a.setRequiresGrad(true); try b.setRequiresGrad(true)
        let da = try Tensor.gradients(of: [a.atan2(b)], withRespectTo: [a], createGraph: true)[0]!
        let dab = try Tensor.gradients(of: [da], withRespectTo: [b])[0]!.item()
        XCTAssertEqual(dab, (0.64 - 0.09) / (0.73 * 0.73), accuracy: 1e-14)
        // cumsum inside a product: d/dx sum(cumsum(x) * x), differentiated again (Hessian-vector product by hand).
        let v = try Tensor([1, 2, 3], shape: [3])
        try v.setRequiresGrad(true)
        let gv = try Tensor.gradients(of: [(v.cumsum(axis: 0) * v).sum()], withRespectTo: [v], createGraph: true)[0]!
        // grad_i = cumsum(x)_i + sum_{j >= i} x_j: [1 + 6, 3 + 5, 6 + 3]
        XCTAssertEqual(gv.values, [7, 8, 9])
        let h = try Tensor.gradients(of: [gv.sum()], withRespectTo: [v])[0]!
        // d/dx_k sum_i grad_i = (n - k) + (k + 1) = n + 1 for every k.
        XCTAssertEqual(h.values, [4, 4, 4])
    }

    /// Every new op's JVP against central differences (float64) at random points, atan2 with
    /// broadcasting, cumsum along each axis.
    func testJVPsAgainstCentralDifferences() throws {
        var rng = TestRNG(15)
        let cases: [(String, [[Int]], ([Tensor]) throws -> Tensor)] = [
            ("log1p", [[3, 4]], { try $0[0].abs().log1p() }),
            ("expm1", [[3, 4]], { try $0[0].expm1() }),
            ("erf", [[3, 4]], { try $0[0].erf() }),
            ("clamp", [[3, 4]], { try $0[0].clamp(min: -0.5, max: 1.2) }),
            ("clamp min", [[3, 4]], { try $0[0].clamp(min: 0.3) }),
            ("atan2", [[3, 4], [3, 4]], { try $0[0].atan2($0[1]) }),
            ("atan2 broadcast", [[3, 1], [4]], { try $0[0].atan2($0[1]) }),
            ("cumsum 0", [[3, 4]], { try $0[0].cumsum(axis: 0) }),
            ("cumsum -1", [[3, 4]], { try $0[0].cumsum(axis: -1) }),
        ]
        for (name, shapes, f) in cases {
            // Points away from clamp's bounds (|x - bound| >= 0.05).
            let xs = shapes.map { s -> Tensor in
                let t = rng.tensor(s, -2, 2, gap: 0.1, requiresGrad: false)
                return try! Tensor(t.values.map { v in [-0.5, 1.2, 0.3].contains { Swift.abs(v - $0) < 0.05 } ? v + 0.1 : v }, shape: s)
            }
            let ts = shapes.map { rng.tensor($0, -1, 1, gap: 0, requiresGrad: false) }
            let (_, tangent) = try Transforms.jvp({ [try f($0)] }, primals: xs, tangents: ts)
            let h = 1e-6
            func shifted(_ sign: Double) throws -> [Double] {
                try f(zip(xs, ts).map { x, t in try Tensor(zip(x.values, t.values).map { $0 + sign * h * $1 }, shape: x.shape) }).values
            }
            let numeric = zip(try shifted(1), try shifted(-1)).map { ($0 - $1) / (2 * h) }
            assertValues(tangent[0], numeric, tol: 1e-7, "\(name) jvp")
        }
    }
}
