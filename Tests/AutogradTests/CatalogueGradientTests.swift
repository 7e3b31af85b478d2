import XCTest
@testable import AutogradEngine

/// Gradchecks (central differences, float64) for the whole op catalogue.
final class CatalogueGradientTests: XCTestCase {
    var rng = TestRNG(2026)

    // nonisolated(unsafe): a table of closures that capture nothing, built once and only read.
    nonisolated(unsafe) static let binaryOps: [(String, (Tensor, Tensor) throws -> Tensor)] = [
        ("add", { try $0 + $1 }), ("sub", { try $0 - $1 }), ("mul", { try $0 * $1 }), ("div", { try $0 / $1 }),
        ("pow", { try $0.abs().pow($1) }), ("maximum", { try $0.maximum($1) }), ("minimum", { try $0.minimum($1) }),
        ("atan2", { try $0.atan2($1) }), ("atan2 swapped", { try $1.atan2($0) }),
    ]

    func testEveryBinaryOpOverBroadcastPatterns() {
        let patterns: [([Int], [Int])] = [([3, 4], [3, 4]), ([3, 1], [1, 4]), ([2, 3, 4], [4]), ([4], [2, 3, 4]),
                                          ([], [2, 3]), ([2, 3], []), ([2, 1, 4], [3, 1])]
        for (name, op) in Self.binaryOps {
            for (sa, sb) in patterns {
                let a = rng.tensor(sa, 0.3, 2), b = rng.tensor(sb, -1.5, 1.5, gap: 0.3)
                assertGradCheck([a, b], "\(name) \(sa) x \(sb)") { try op($0[0], $0[1]) }
            }
        }
    }

    func testScalarOperandsOnEitherSide() {
        let x = rng.tensor([2, 3], 0.5, 2)
        assertGradCheck([x], "x ** 3") { try $0[0] ** 3 }
        assertGradCheck([x], "2 ** x") { try 2 ** $0[0] }
        assertGradCheck([x], "x ** 0.5") { try $0[0] ** 0.5 }
        assertGradCheck([x], "1 - x") { try 1 - $0[0] }
        assertGradCheck([x], "3 / x") { try 3 / $0[0] }
        assertGradCheck([x], "x + 2") { try $0[0] + 2 }
        assertGradCheck([x], "0.5 * x") { try 0.5 * $0[0] }
    }

    func testPowGradientToTheExponentIsLogBaseTimesPower() throws {
        let a = try Tensor([2, 3], shape: [2]), b = try Tensor([1.5, -0.5], shape: [2])
        try b.setRequiresGrad(true)
        try a.pow(b).sum().backward()
        assertValues(b.grad!, [Foundation.log(2) * Foundation.pow(2, 1.5), Foundation.log(3) * Foundation.pow(3, -0.5)])
        // At a == 0 the exponent's gradient is taken as 0, not nan.
        let z = try Tensor([0], shape: [1]), e = try Tensor([2], shape: [1])
        try e.setRequiresGrad(true)
        try z.pow(e).sum().backward()
        assertValues(e.grad!, [0])
    }

    func testUnaryOps() {
        let x = rng.tensor([3, 4], -3, 3)
        let positive = rng.tensor([3, 4], 0.2, 3)
        let unary: [(String, (Tensor) throws -> Tensor)] = [
            ("sqrt", { try $0.abs().sqrt() }), ("abs", { try $0.abs() }), ("sin", { try $0.sin() }), ("cos", { try $0.cos() }),
            ("tanh", { try $0.tanh() }), ("sigmoid", { try $0.sigmoid() }), ("leaky_relu", { try $0.leakyRelu(negativeSlope: 0.1) }),
            ("gelu", { try $0.gelu() }), ("softplus", { try $0.softplus() }), ("exp", { try $0.exp() }), ("relu", { try $0.relu() }),
            ("log1p", { try $0.abs().log1p() }), ("log1p near -1", { try ($0.abs() * 0.1 - 0.95).log1p() }),
            ("expm1", { try $0.expm1() }), ("erf", { try $0.erf() }),
        ]
        for (name, op) in unary { assertGradCheck([x], name) { try op($0[0]) } }
        assertGradCheck([positive], "sqrt") { try $0[0].sqrt() }
        assertGradCheck([positive], "log") { try $0[0].log() }
    }

    /// clamp with one bound, both, and both equal to values of x: away from the bounds by
    /// central differences; at a bound the gradient is 1 (torch's convention, the one-sided
    /// derivative from inside), which finite differences cannot see, so it is checked directly.
    func testClampWithOneOrBothBounds() throws {
        let x = try Tensor([-1.7, -0.9, -0.3, 0.4, 1.1, 1.9, -1.2, 0.8, 1.4, -0.1, 0.6, 1.6], shape: [3, 4])
        try x.setRequiresGrad(true)
        for (lo, hi) in [(-0.5, 1.0), (-0.5, nil), (nil, 1.0), (-1.0, -1.0), (nil, nil)] as [(Double?, Double?)] {
            assertGradCheck([x], "clamp \(String(describing: lo)) \(String(describing: hi))") { try $0[0].clamp(min: lo, max: hi) }
        }
        let atBounds = try Tensor([-0.5, 1.0, 0.2, -0.6, 1.1], shape: [5])
        try atBounds.setRequiresGrad(true)
        try atBounds.clamp(min: -0.5, max: 1.0).sum().backward()
        XCTAssertEqual(atBounds.grad!.values, [1, 1, 1, 0, 0])
    }

    func testCumsumAlongEveryAxis() {
        let x = rng.tensor([2, 3, 4])
        for axis in [0, 1, 2, -1, -2, -3] {
            assertGradCheck([x], "cumsum \(axis)") { try $0[0].cumsum(axis: axis) }
            assertGradCheck([x], "cumsum \(axis) of a product") { try ($0[0] * $0[0]).cumsum(axis: axis) }
        }
        let v = rng.tensor([7])
        assertGradCheck([v], "cumsum 1-D") { try $0[0].cumsum(axis: 0) }
        assertGradCheck([rng.tensor([])], "cumsum 0-d") { try $0[0].cumsum(axis: -1) }
    }

    func testGeluKeepsRelativeAccuracyInTheLowerTail() throws {
        // Reference values from mpmath at 40 digits: x * ncdf(x).
        let y = try Tensor([-10.92, -12], shape: [2]).gelu().values
        let expected = [-5.050271097807453675e-27, -2.131778534493214797e-32]
        for (a, b) in zip(y, expected) { XCTAssertEqual(a, b, accuracy: 1e-12 * Swift.abs(b)) }
    }

    func testKinksAreDocumentedValues() throws {
        let x = try Tensor([0, 0, 0], shape: [3])
        try x.setRequiresGrad(true)
        try (x.relu() + x.abs() + x.leakyRelu(negativeSlope: 0.2)).sum().backward()
        assertValues(x.grad!, [0.2, 0.2, 0.2])  // relu'(0) = 0, abs'(0) = 0, leaky'(0) = slope
    }

    func testSigmoidAndSoftplusStayFiniteAtPlusMinus1000() throws {
        let x = try Tensor([-1000, 1000], shape: [2])
        try x.setRequiresGrad(true)
        let s = try x.sigmoid(), p = try x.softplus()
        assertValues(s, [0, 1])
        assertValues(p, [0, 1000])
        try (s + p).sum().backward()
        XCTAssertTrue(x.grad!.values.allSatisfy { $0.isFinite })
        assertValues(x.grad!, [0, 1])  // sigmoid' ≈ 0 at both ends; softplus' = sigmoid
    }

    func testReductionsOverEveryAxisCombinationOfRank3() {
        let x = rng.tensor([2, 3, 4])
        let subsets: [[Int]] = [[], [0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2], [-1], [-3, -2]]
        for axes in subsets {
            for keep in [false, true] {
                assertGradCheck([x], "max \(axes) \(keep)") { try $0[0].max(axes: axes, keepDims: keep) }
                assertGradCheck([x], "min \(axes) \(keep)") { try $0[0].min(axes: axes, keepDims: keep) }
                assertGradCheck([x], "var \(axes) \(keep)") { try $0[0].variance(axes: axes, keepDims: keep) }
                assertGradCheck([x], "var0 \(axes) \(keep)") { try $0[0].variance(axes: axes, correction: 0, keepDims: keep) }
                assertGradCheck([x], "logsumexp \(axes) \(keep)") { try $0[0].logSumExp(axes: axes, keepDims: keep) }
            }
        }
    }

    func testMaxSplitsTheGradientAmongTies() throws {
        let x = try Tensor([1, 3, 3, 2], shape: [4])
        try x.setRequiresGrad(true)
        try x.max().backward()
        assertValues(x.grad!, [0, 0.5, 0.5, 0])
        let a = try Tensor([1, 2], shape: [2]), b = try Tensor([1, 3], shape: [2])
        try a.setRequiresGrad(true); try b.setRequiresGrad(true)
        try a.maximum(b).sum().backward()
        assertValues(a.grad!, [0.5, 0])
        assertValues(b.grad!, [0.5, 1])
    }

    func testShapeAndIndexingOps() {
        let x = rng.tensor([2, 3, 4])
        assertGradCheck([x], "squeeze/unsqueeze") { try $0[0].unsqueezed(1).unsqueezed(-1).squeezed([1]) }
        assertGradCheck([x], "slice step 2") { try $0[0].slice(axis: 2, start: 0, stop: 4, step: 2) }
        assertGradCheck([x], "slice negative bounds") { try $0[0].slice(axis: -2, start: -2, stop: 100, step: 1) }
        assertGradCheck([x], "index_select with repeats") { try $0[0].indexSelect(axis: 1, [2, 0, 2, -1]) }
        assertGradCheck([x], "gather") { try $0[0].gather(axis: 2, index: [3, 0, 1, 1, 2, 2, 0, 0, 3, 3, 1, 2], indexShape: [2, 3, 2]) }
        assertGradCheck([x], "gather smaller index") { try $0[0].gather(axis: 0, index: [1, 0, 1], indexShape: [1, 3, 1]) }
        let y = rng.tensor([2, 5, 4]), z = rng.tensor([2, 1, 4])
        assertGradCheck([x, y, z], "concat") { try Tensor.concat($0, axis: 1) }
        let w = rng.tensor([2, 3, 4])
        assertGradCheck([x, w], "stack") { try Tensor.stack($0, axis: 1) }
        assertGradCheck([x, w], "stack last") { try Tensor.stack($0, axis: -1) }
    }

    func testLinearAlgebra() {
        let v = rng.tensor([5]), u = rng.tensor([5]), w = rng.tensor([3])
        assertGradCheck([v, u], "dot") { try $0[0].dot($0[1]) }
        assertGradCheck([v, w], "outer") { try $0[0].outer($0[1]) }
        assertGradCheck([v, u], "matmul 1-D @ 1-D") { try $0[0].matmul($0[1]) }
        let m = rng.tensor([4, 5]), m2 = rng.tensor([5, 3])
        assertGradCheck([m, v], "matmul 2-D @ 1-D") { try $0[0].matmul($0[1]) }
        assertGradCheck([v, m2], "matmul 1-D @ 2-D") { try $0[0].matmul($0[1]) }
        let b1 = rng.tensor([2, 1, 3, 4]), b2 = rng.tensor([3, 4, 2])
        assertGradCheck([b1, b2], "batched matmul with broadcast batch") { try $0[0].matmul($0[1]) }
        let b3 = rng.tensor([4, 2])
        assertGradCheck([b1, b3], "batched @ 2-D") { try $0[0].matmul($0[1]) }
        let b4 = rng.tensor([4])
        assertGradCheck([b1, b4], "batched @ 1-D") { try $0[0].matmul($0[1]) }
        assertGradCheck([b4, b2], "1-D @ batched") { try $0[0].matmul($0[1]) }
        let x = rng.tensor([6, 4]), wt = rng.tensor([3, 4]), bias = rng.tensor([3])
        assertGradCheck([x, wt, bias], "linear") { try $0[0].linear(weight: $0[1], bias: $0[2]) }
    }

    func testNeuralNetworkFunctions() {
        let logits = rng.tensor([4, 5])
        assertGradCheck([logits], "softmax") { try $0[0].softmax(axis: 1) }
        assertGradCheck([logits], "softmax axis 0") { try $0[0].softmax(axis: 0) }
        assertGradCheck([logits], "log_softmax") { try $0[0].logSoftmax(axis: -1) }
        assertGradCheck([logits], "cross_entropy") { try $0[0].crossEntropy(labels: [1, 0, 4, 4]) }
        let p = rng.tensor([3, 2]), t = rng.tensor([3, 2])
        assertGradCheck([p, t], "mse_loss") { try $0[0].mseLoss($0[1]) }
    }

    func testStableFormsAtLargeLogits() throws {
        let x = try Tensor([1000, 0, -1000, 999], shape: [1, 4])
        try x.setRequiresGrad(true)
        let s = try x.softmax(axis: 1)
        XCTAssertTrue(s.values.allSatisfy { $0.isFinite })
        assertValues(s, [1 / (1 + Foundation.exp(-1.0)), 0, 0, Foundation.exp(-1.0) / (1 + Foundation.exp(-1.0))])
        let lse = try x.logSumExp(axes: [1])
        assertValues(lse, [1000 + Foundation.log(1 + Foundation.exp(-1.0))])
        let ce = try x.crossEntropy(labels: [2])
        assertValues(ce, [2000 + Foundation.log(1 + Foundation.exp(-1.0))])
        try ce.backward()
        XCTAssertTrue(x.grad!.values.allSatisfy { $0.isFinite })
    }

    func testWhereSendsGradientToTheChosenBranch() throws {
        let c = try Tensor([1, 0, 1], shape: [3, 1]), a = rng.tensor([3, 4]), b = rng.tensor([4])
        assertGradCheck([a, b], "where") { try Tensor.where(c, $0[0], $0[1]) }
        let cmp = try a.gt(b)
        XCTAssertFalse(cmp.requiresGrad)
        XCTAssertEqual(cmp.shape, [3, 4])
    }

    func testCreationIsDeterministic() throws {
        assertValues(try Tensor.arange(start: 1, stop: 2, step: 0.25), [1, 1.25, 1.5, 1.75])
        assertValues(try Tensor.eye(2, 3), [1, 0, 0, 0, 1, 0])
        let u1 = try Tensor.uniform([1000], low: -1, high: 2, seed: 7), u2 = try Tensor.uniform([1000], low: -1, high: 2, seed: 7)
        XCTAssertEqual(u1.values, u2.values)
        XCTAssertTrue(u1.values.allSatisfy { $0 >= -1 && $0 < 2 })
        XCTAssertNotEqual(u1.values, try Tensor.uniform([1000], low: -1, high: 2, seed: 8).values)
        let n = try Tensor.normal([20000], mean: 1, std: 2, seed: 3)
        let mean = n.values.reduce(0, +) / 20000
        let sd = (n.values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 20000).squareRoot()
        XCTAssertEqual(mean, 1, accuracy: 0.05)
        XCTAssertEqual(sd, 2, accuracy: 0.05)
        XCTAssertEqual(n.values, try Tensor.normal([20000], mean: 1, std: 2, seed: 3).values)
    }
}
