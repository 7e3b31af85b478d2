import XCTest
@testable import AutogradEngine

/// conv1d, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d: values against PyTorch (numbers
/// printed by torch 2.13 in float64), gradchecks over stride/padding/dilation/groups, forward
/// mode against central differences, second order, empty batches, capture/replay and errors.
final class ConvolutionTests: XCTestCase {
    /// (arange(n) * step) % mod + offset: the inputs of the PyTorch reference calls below.
    func ramp(_ shape: [Int], _ step: Double, _ mod: Double, _ offset: Double, requiresGrad: Bool = false) throws -> Tensor {
        let n = shape.reduce(1, *)
        let t = try Tensor((0..<n).map { (Double($0) * step).truncatingRemainder(dividingBy: mod) + offset }, shape: shape)
        try t.setRequiresGrad(requiresGrad)
        return t
    }

    // x = (arange(32) * 0.37 % 2.3 - 1.1).reshape(1, 2, 4, 4), w = (arange(36) * 0.29 % 1.7 - 0.8).reshape(2, 2, 3, 3)
    func testConv2dValuesMatchTorch() throws {
        let x = try ramp([1, 2, 4, 4], 0.37, 2.3, -1.1), w = try ramp([2, 2, 3, 3], 0.29, 1.7, -0.8)
        let b = try Tensor([0.25, -0.5], shape: [2])
        // F.conv2d(x, w, b, stride=2, padding=1)
        let y = try x.conv2d(weight: w, bias: b, stride: (2, 2), padding: (1, 1))
        XCTAssertEqual(y.shape, [1, 2, 2, 2])
        assertValues(y, [-1.5431999999999997, -1.1772000000000007, -0.9310999999999985, 3.4884000000000026,
                         -2.3796, -1.8096, -1.649899999999998, 2.8800000000000017], tol: 1e-14)
        // F.conv2d(x, w2, None, padding=(1, 0), dilation=(2, 1), groups=2), w2 = (arange(8) * 0.41 % 1.3 - 0.6).reshape(4, 1, 2, 1)
        let w2 = try ramp([4, 1, 2, 1], 0.41, 1.3, -0.6)
        let z = try x.conv2d(weight: w2, padding: (1, 0), dilation: (2, 1), groups: 2)
        XCTAssertEqual(z.shape, [1, 4, 4, 4])
        assertValues(try z.slice(axis: 1, start: 0, stop: 1), [
            -0.07219999999999999, -0.14250000000000002, -0.21279999999999993, 0.1539, 0.7436, 0.45130000000000003,
            0.159, -0.13329999999999995, -0.42559999999999987, -0.2808999999999999, -0.5731999999999998, 0.5145,
            0.26399999999999996, 0.041999999999999905, -0.18000000000000016, -0.4020000000000002], tol: 1e-14)
        assertValues(try z.slice(axis: 1, start: 3, stop: 4), [
            0.19799999999999998, 0.07590000000000009, -0.046200000000000394, -0.16830000000000028, -0.16720000000000007,
            0.6769000000000003, 0.7620000000000005, -0.44089999999999974, -0.35579999999999956, -0.2707000000000005,
            -0.18559999999999985, -0.10050000000000081, 0.4927999999999996, -0.5879999999999996, -0.3808,
            -0.1735999999999995], tol: 1e-14)
    }

    // x1 = (arange(10) * 0.7 % 1.5).reshape(1, 2, 5), w1 = (arange(6) * 0.3 - 0.7).reshape(1, 2, 3)
    func testConv1dValuesMatchTorch() throws {
        let x = try ramp([1, 2, 5], 0.7, 1.5, 0)
        let w = try Tensor((0..<6).map { Double($0) * 0.3 - 0.7 }, shape: [1, 2, 3])
        // F.conv1d(x1, w1, tensor([0.1]), stride=2, padding=1)
        let y = try x.conv1d(weight: w, bias: Tensor([0.1], shape: [1]), stride: 2, padding: 1)
        XCTAssertEqual(y.shape, [1, 1, 3])
        assertValues(y, [1.2399999999999995, 0.3099999999999995, -0.46999999999999986], tol: 1e-14)
    }

    func testPoolValuesMatchTorch() throws {
        let x = try ramp([1, 2, 4, 4], 0.37, 2.3, -1.1)
        // F.max_pool2d(x, 3, 2, 1)
        assertValues(try x.maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)), [
            0.75, 1.1199999999999997, 1.0399999999999996, 1.1199999999999997, 0.5900000000000003, 0.9600000000000004,
            0.8799999999999994, 1.1700000000000013], tol: 0)
        // F.avg_pool2d(x, 3, 2, 1, count_include_pad=False) and with the default True
        assertValues(try x.avgPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1), countIncludePad: false), [
            -0.17500000000000004, -0.0033333333333334845, 0.12833333333333327, 0.04444444444444448, -0.004999999999999671,
            0.1666666666666671, -0.08499999999999967, 0.08666666666666724], tol: 1e-13)
        assertValues(try x.avgPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)), [
            -0.07777777777777779, -0.002222222222222323, 0.08555555555555551, 0.04444444444444448, -0.002222222222222076,
            0.11111111111111141, -0.05666666666666645, 0.08666666666666724], tol: 1e-13)
        // F.adaptive_avg_pool2d((arange(20) * 0.53 % 1.9).reshape(1, 1, 5, 4), (3, 3))
        let x5 = try ramp([1, 1, 5, 4], 0.53, 1.9, 0)
        assertValues(try x5.adaptiveAvgPool2d(outputSize: (3, 3)), [
            0.37500000000000017, 0.9050000000000002, 1.435, 0.7050000000000005, 1.2350000000000005, 1.1316666666666673,
            1.0350000000000006, 1.0900000000000007, 0.6700000000000007], tol: 1e-14)
    }

    /// Ties (the zeros after a relu): the gradient goes to the first maximum in scan order, and
    /// overlapping windows that pick one position sum there (torch's max_pool2d(t, 2) and
    /// max_pool2d(t, 3, 1) gradients of .sum()).
    func testMaxPoolTiesGoToTheFirstMaximum() throws {
        for dtype in [DType.float64, .float32] {
            let t = try Tensor([0, 0, 1, 1, 0, 0, 1, 0, 2, 0, 0, 0, 0, 2, 0, 0], shape: [1, 1, 4, 4], dtype: dtype)
            try t.setRequiresGrad(true)
            try t.maxPool2d(kernel: (2, 2)).sum().backward()
            assertValues(try XCTUnwrap(t.grad), [1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0], tol: 0)
            t.zeroGrad()
            try t.maxPool2d(kernel: (3, 3), stride: (1, 1)).sum().backward()
            assertValues(try XCTUnwrap(t.grad), [0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0], tol: 0)
        }
    }

    func testMaxPoolNanIsTheMaximum() throws {
        let x = try Tensor([1, .nan, 3, 2], shape: [1, 1, 2, 2])
        XCTAssertTrue(try x.maxPool2d(kernel: (2, 2)).item().isNaN)
        // Windows cut by the padding and windows inside, with and without the nan (as torch's
        // max_pool2d(y, 2, 1, 1) and the gradient of its sum).
        let y = try Tensor([.nan, 1, 2, 5, 0, 4, 3, 7, 6], shape: [1, 1, 3, 3])
        try y.setRequiresGrad(true)
        let m = try y.maxPool2d(kernel: (2, 2), stride: (1, 1), padding: (1, 1))
        XCTAssertEqual(m.values.map { $0.isNaN }, [true, true, false, false, true, true, false, false, false, false, false, false, false, false, false, false])
        assertValues(try m.slice(axis: 2, start: 2, stop: 4), [5, 7, 7, 6, 3, 7, 7, 6], tol: 0)
        // Each nan window sends its gradient to the nan (first maximum), the others to theirs.
        try m.sum().backward()
        assertValues(try XCTUnwrap(y.grad), [4, 0, 2, 1, 0, 2, 1, 4, 2], tol: 0)
    }

    // MARK: - Gradients

    /// (x shape, weight shape, bias?, stride, padding, dilation, groups)
    static let convCases: [([Int], [Int], Bool, (Int, Int), (Int, Int), (Int, Int), Int)] = [
        ([2, 3, 5, 4], [2, 3, 3, 2], true, (1, 1), (0, 0), (1, 1), 1),
        ([1, 2, 6, 5], [3, 2, 3, 3], false, (2, 1), (1, 2), (1, 1), 1),
        ([2, 4, 7, 6], [4, 2, 2, 3], true, (2, 3), (1, 0), (2, 1), 2),
        ([1, 3, 5, 5], [3, 1, 3, 3], true, (1, 1), (1, 1), (1, 1), 3),     // depthwise
        ([1, 2, 4, 4], [2, 2, 1, 1], true, (2, 2), (0, 0), (1, 1), 1),     // 1x1, strided
        ([1, 1, 3, 3], [1, 1, 3, 3], false, (3, 3), (2, 2), (2, 2), 1),    // dilation reaching into padding
        ([1, 2, 3, 2], [2, 2, 2, 1], true, (40, 30), (60, 50), (1, 2), 1),  // padding far wider than the input: no scratch
    ]

    func testConv2dGradCheck() throws {
        var rng = TestRNG(180)
        for (xs, ws, hasBias, s, p, d, g) in Self.convCases {
            var inputs = [rng.tensor(xs), rng.tensor(ws)]
            if hasBias { inputs.append(rng.tensor([ws[0]])) }
            assertGradCheck(inputs, "conv2d \(xs) \(ws) s\(s) p\(p) d\(d) g\(g)") { t in
                try t[0].conv2d(weight: t[1], bias: t.count > 2 ? t[2] : nil, stride: s, padding: p, dilation: d, groups: g)
            }
        }
    }

    func testConv1dGradCheck() throws {
        var rng = TestRNG(181)
        assertGradCheck([rng.tensor([2, 4, 7]), rng.tensor([6, 2, 3]), rng.tensor([6])], "conv1d") { t in
            try t[0].conv1d(weight: t[1], bias: t[2], stride: 2, padding: 1, dilation: 2, groups: 2)
        }
    }

    func testPoolGradCheck() throws {
        var rng = TestRNG(182)
        let x = rng.tensor([2, 2, 5, 6])
        for (k, s, p) in [((2, 2), nil, (0, 0)), ((3, 2), (1, 2), (1, 1)), ((3, 3), (2, 2), (1, 0))] as [((Int, Int), (Int, Int)?, (Int, Int))] {
            assertGradCheck([x], "max_pool2d k\(k) s\(String(describing: s)) p\(p)") { try $0[0].maxPool2d(kernel: k, stride: s, padding: p) }
            for include in [true, false] {
                assertGradCheck([x], "avg_pool2d k\(k) p\(p) \(include)") {
                    try $0[0].avgPool2d(kernel: k, stride: s, padding: p, countIncludePad: include)
                }
            }
        }
        // Every path of adaptive_avg_pool2d: a mean, an even tiling, the Kronecker product, the
        // separable products (a tall input).
        for (shape, size) in [([2, 2, 5, 6], (1, 1)), ([2, 2, 4, 6], (2, 3)), ([2, 2, 5, 6], (3, 4)), ([1, 1, 300, 3], (7, 2))] {
            assertGradCheck([rng.tensor(shape)], "adaptive_avg_pool2d \(shape) \(size)") { try $0[0].adaptiveAvgPool2d(outputSize: size) }
        }
    }

    /// Second order: the gradient (with create_graph) is itself differentiable: conv2d's (bilinear)
    /// and max pooling's (through its select/scatter pair).
    func testSecondOrder() throws {
        var rng = TestRNG(183)
        /// gradcheck's numeric evaluations run with grad mode off on leaves without requires_grad:
        /// made differentiable here (with grad mode on, below).
        func differentiable(_ t: Tensor) throws -> Tensor {
            if t.requiresGrad { return t }
            let c = t.detach()
            try c.setRequiresGrad(true)
            return c
        }
        assertGradCheck([rng.tensor([1, 2, 5, 5]), rng.tensor([2, 1, 3, 3])], "d conv2d") { t in try GradMode.with(enabled: true) {
            let (x, w) = (try differentiable(t[0]), try differentiable(t[1]))
            let y = try x.conv2d(weight: w, padding: (1, 1), groups: 2)
            let g = try Tensor.gradients(of: [y.multiplying(y).sum()], withRespectTo: [x, w], createGraph: true)
            return try g[0]!.sum(axes: [1]).adding(g[1]!.sum())
        } }
        assertGradCheck([rng.tensor([1, 2, 5, 5])], "d max_pool2d") { t in try GradMode.with(enabled: true) {
            let x = try differentiable(t[0])
            let y = try x.maxPool2d(kernel: (3, 3), stride: (1, 2))
            return try XCTUnwrap(Tensor.gradients(of: [y.multiplying(y).sum()], withRespectTo: [x], createGraph: true)[0])
        } }
    }

    /// Forward mode: the tangent against central differences of the op along the tangent.
    func testForwardMode() throws {
        var rng = TestRNG(184)
        let cases: [(String, [[Int]], ([Tensor]) throws -> Tensor)] = [
            ("conv2d", [[2, 4, 5, 5], [4, 2, 3, 2], [4]], { t in
                try t[0].conv2d(weight: t[1], bias: t[2], stride: (2, 1), padding: (1, 1), dilation: (1, 2), groups: 2) }),
            ("conv1d", [[2, 3, 6], [2, 3, 2]], { t in try t[0].conv1d(weight: t[1], padding: 1) }),
            ("max_pool2d", [[2, 3, 5, 5]], { t in try t[0].maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1)) }),
            ("avg_pool2d", [[2, 3, 5, 5]], { t in try t[0].avgPool2d(kernel: (2, 3), padding: (1, 1), countIncludePad: false) }),
            ("adaptive", [[2, 3, 5, 5]], { t in try t[0].adaptiveAvgPool2d(outputSize: (3, 2)) }),
        ]
        for (name, shapes, f) in cases {
            let xs = shapes.map { rng.tensor($0, requiresGrad: false) }
            let ts = shapes.map { rng.tensor($0, requiresGrad: false) }
            let (_, tangents) = try Transforms.jvp({ [try f($0)] }, primals: xs, tangents: ts)
            let eps = 1e-6
            func at(_ sign: Double) throws -> Tensor {
                try f(zip(xs, ts).map { x, t in try x.adding(t.multiplying(x.constant(sign * eps))) })
            }
            let fd = try at(1).subtracting(at(-1)).values.map { $0 / (2 * eps) }
            assertValues(tangents[0], fd, tol: 1e-7, name)
        }
    }

    // MARK: - Empty inputs, capture, errors

    func testEmptyBatchesAndChannels() throws {
        let w = try Tensor.ones([3, 2, 3, 3]), b = try Tensor.ones([3])
        try w.setRequiresGrad(true)
        try b.setRequiresGrad(true)
        let x = try Tensor.zeros([0, 2, 5, 5])
        try x.setRequiresGrad(true)
        let y = try x.conv2d(weight: w, bias: b, padding: (1, 1))
        XCTAssertEqual(y.shape, [0, 3, 5, 5])
        try y.sum().backward()
        XCTAssertEqual(x.grad?.shape, [0, 2, 5, 5])
        assertValues(try XCTUnwrap(w.grad), [Double](repeating: 0, count: 54), tol: 0)
        assertValues(try XCTUnwrap(b.grad), [0, 0, 0], tol: 0)
        // No input channel: the bias alone.
        let c0 = try Tensor.zeros([2, 0, 4, 4]).conv2d(weight: Tensor.zeros([3, 0, 3, 3]), bias: b)
        XCTAssertEqual(c0.shape, [2, 3, 2, 2])
        assertValues(c0, [Double](repeating: 1, count: 24), tol: 0)
        XCTAssertEqual(try Tensor.zeros([0, 2, 4, 4]).maxPool2d(kernel: (2, 2)).shape, [0, 2, 2, 2])
        XCTAssertEqual(try Tensor.zeros([2, 0, 4, 4]).avgPool2d(kernel: (2, 2)).shape, [2, 0, 2, 2])
        XCTAssertEqual(try Tensor.zeros([2, 3, 4, 4]).adaptiveAvgPool2d(outputSize: (0, 2)).shape, [2, 3, 0, 2])
        XCTAssertEqual(try Tensor.zeros([0, 2, 7]).conv1d(weight: Tensor.ones([4, 2, 3])).shape, [0, 4, 5])
    }

    /// A CNN step captured with its gradients replays with the eager bits on new inputs (the max
    /// pool's positions found again from the new values).
    func testCaptureReplaysBitForBit() throws {
        var rng = TestRNG(185)
        for dtype in [DType.float32, .float64] {
            let w1 = try rng.tensor([4, 2, 3, 3]).converted(to: dtype), w2 = try rng.tensor([4, 2, 2, 2]).converted(to: dtype)
            let b = try rng.tensor([4]).converted(to: dtype)
            func step(_ x: [Tensor]) throws -> [Tensor] {
                let h = try x[0].conv2d(weight: x[1], bias: x[3], padding: (1, 1)).relu().maxPool2d(kernel: (2, 2))
                let y = try h.conv2d(weight: x[2], groups: 2).avgPool2d(kernel: (2, 2), stride: (1, 1)).adaptiveAvgPool2d(outputSize: (1, 1))
                let loss = try y.multiplying(y).sum()
                return [loss] + (try Tensor.gradients(of: [loss], withRespectTo: Array(x)).map { $0! })
            }
            func inputs() throws -> [Tensor] {
                try [rng.tensor([3, 2, 8, 8]).converted(to: dtype), w1, w2, b].map { t in
                    let c = t.detach()
                    try c.setRequiresGrad(true)
                    return c
                }
            }
            let f = try CapturedFunction.capture(try inputs()) { try step($0) }
            for _ in 0..<2 {
                let x = try inputs()
                XCTAssertEqual(try f(x).map { $0.values.map(\.bitPattern) }, try step(x).map { $0.values.map(\.bitPattern) }, "\(dtype)")
            }
        }
    }

    func assertThrows(_ expected: (String) -> AutogradError, _ fragment: String, _ body: () throws -> Tensor,
                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? AutogradError else { return XCTFail("not an AutogradError: \(error)", file: file, line: line) }
            XCTAssertEqual(e, expected(e.message), "wrong case: \(e)", file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), "\(e.message) lacks '\(fragment)'", file: file, line: line)
        }
    }

    func testErrors() throws {
        let x = try Tensor.zeros([1, 2, 4, 4]), w = try Tensor.zeros([4, 2, 3, 3])
        let shape = AutogradError.shape, argument = AutogradError.argument, dtype = AutogradError.dtype
        assertThrows(shape, "must be 4-D") { try Tensor.zeros([2, 4, 4]).conv2d(weight: w) }
        assertThrows(shape, "weight must be 4-D") { try x.conv2d(weight: Tensor.zeros([4, 2, 3])) }
        assertThrows(shape, "does not fit") { try x.conv2d(weight: Tensor.zeros([4, 1, 3, 3])) }
        assertThrows(shape, "not divisible by groups") { try x.conv2d(weight: Tensor.zeros([4, 1, 3, 3]), groups: 3) }
        assertThrows(shape, "output channels") { try x.conv2d(weight: Tensor.zeros([3, 1, 3, 3]), groups: 2) }
        assertThrows(shape, "bias has shape") { try x.conv2d(weight: w, bias: Tensor.zeros([3])) }
        assertThrows(shape, "larger than the padded input") { try x.conv2d(weight: Tensor.zeros([4, 2, 5, 3])) }
        assertThrows(shape, "larger than the padded input") { try x.conv2d(weight: w, dilation: (2, 1)) }
        assertThrows(shape, "spatial extents must be positive") { try Tensor.zeros([1, 2, 0, 4]).conv2d(weight: w, padding: (2, 2)) }
        assertThrows(shape, "overflow") { try x.conv2d(weight: w, padding: (Int.max / 2, 0)) }
        assertThrows(argument, "stride must be positive") { try x.conv2d(weight: w, stride: (0, 1)) }
        assertThrows(argument, "padding must be non-negative") { try x.conv2d(weight: w, padding: (0, -1)) }
        assertThrows(argument, "dilation must be positive") { try x.conv2d(weight: w, dilation: (1, 0)) }
        assertThrows(argument, "groups must be positive") { try x.conv2d(weight: w, groups: 0) }
        assertThrows(argument, "kernel size must be positive") { try x.conv2d(weight: Tensor.zeros([4, 2, 0, 3])) }
        assertThrows(dtype, "weight is float32") { try x.conv2d(weight: w.converted(to: .float32)) }
        assertThrows(dtype, "bias is float32") { try x.conv2d(weight: w, bias: Tensor.zeros([4], dtype: .float32)) }
        assertThrows(shape, "must be 3-D") { try x.conv1d(weight: Tensor.zeros([4, 2, 3])) }
        assertThrows(shape, "weight must be 3-D") { try Tensor.zeros([1, 2, 5]).conv1d(weight: w) }
        assertThrows(argument, "stride must be positive") { try Tensor.zeros([1, 2, 5]).conv1d(weight: Tensor.zeros([4, 2, 3]), stride: 0) }
        assertThrows(argument, "padding must be at most half") { try x.maxPool2d(kernel: (3, 3), padding: (2, 0)) }
        assertThrows(argument, "kernel size must be positive") { try x.maxPool2d(kernel: (0, 2)) }
        assertThrows(argument, "stride must be positive") { try x.avgPool2d(kernel: (2, 2), stride: (0, 0)) }
        assertThrows(argument, "padding must be non-negative") { try x.avgPool2d(kernel: (2, 2), padding: (-1, 0)) }
        assertThrows(shape, "larger than the padded input") { try x.maxPool2d(kernel: (5, 5)) }
        assertThrows(shape, "must be 4-D") { try Tensor.zeros([2, 4, 4]).maxPool2d(kernel: (2, 2)) }
        assertThrows(shape, "spatial extents must be positive") { try Tensor.zeros([1, 1, 4, 0]).avgPool2d(kernel: (1, 1)) }
        assertThrows(argument, "output size must be non-negative") { try x.adaptiveAvgPool2d(outputSize: (-1, 2)) }
        assertThrows(shape, "must be 4-D") { try Tensor.zeros([4, 4]).adaptiveAvgPool2d(outputSize: (2, 2)) }
        assertThrows(shape, "spatial extents must be positive") { try Tensor.zeros([1, 1, 0, 3]).adaptiveAvgPool2d(outputSize: (2, 2)) }
    }
}
