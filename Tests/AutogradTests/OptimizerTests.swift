import XCTest
@testable import AutogradEngine

/// Optimizer steps against values computed by hand from the torch.optim formulas.
final class OptimizerTests: XCTestCase {
    /// A parameter p with .grad = g after backward of sum(p * g).
    private func parameter(_ values: [Double]) throws -> Tensor {
        let p = try Tensor(values, shape: [values.count])
        try p.setRequiresGrad(true)
        return p
    }

    private func setGradient(_ p: Tensor, _ g: [Double]) throws {
        p.zeroGrad()
        try (p * Tensor(g, shape: [g.count])).sum().backward()
    }

    func testSGDWithMomentumNesterovAndWeightDecay() throws {
        let p = try parameter([1, -2])
        let opt = try SGD(parameters: [p], learningRate: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01)
        try setGradient(p, [0.5, 0.25])
        try opt.step()
        // d = g + wd p = [0.51, 0.23]; buf = d; p -= lr (d + 0.9 buf) = lr · 1.9 d
        let p1 = [1 - 0.1 * 1.9 * 0.51, -2 - 0.1 * 1.9 * 0.23]
        assertValues(p, p1)
        try setGradient(p, [-1, 1])
        try opt.step()
        let d2 = [-1 + 0.01 * p1[0], 1 + 0.01 * p1[1]]
        let b2 = [0.9 * 0.51 + d2[0], 0.9 * 0.23 + d2[1]]
        assertValues(p, [p1[0] - 0.1 * (d2[0] + 0.9 * b2[0]), p1[1] - 0.1 * (d2[1] + 0.9 * b2[1])])
    }

    func testPlainSGDAndLearningRateChanges() throws {
        let p = try parameter([3])
        let opt = try SGD(parameters: [p], learningRate: 0.5)
        try setGradient(p, [2])
        try opt.step()
        assertValues(p, [2])
        opt.learningRate = 0.25
        try opt.step()  // same gradient still accumulated
        assertValues(p, [1.5])
        opt.zeroGrad()
        XCTAssertNil(p.grad)
        try opt.step()  // no gradient: skipped
        assertValues(p, [1.5])
    }

    func testAdamAndAdamW() throws {
        for decoupled in [false, true] {
            let p = try parameter([1])
            let opt = try Adam(parameters: [p], learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8,
                               weightDecay: 0.1, decoupledWeightDecay: decoupled)
            var x = 1.0, m = 0.0, v = 0.0
            for (t, g) in [0.3, -0.2, 0.5].enumerated() {
                try setGradient(p, [g])
                try opt.step()
                var d = g
                if decoupled { x *= 1 - 0.01 * 0.1 } else { d += 0.1 * x }
                m = 0.9 * m + 0.1 * d
                v = 0.999 * v + 0.001 * d * d
                let mHat = m / (1 - Foundation.pow(0.9, Double(t + 1))), vHat = v / (1 - Foundation.pow(0.999, Double(t + 1)))
                x -= 0.01 * mHat / (vHat.squareRoot() + 1e-8)
                assertValues(p, [x], tol: 1e-14, decoupled ? "AdamW step \(t + 1)" : "Adam step \(t + 1)")
            }
        }
    }

    func testOptimizerArgumentChecks() throws {
        let p = try parameter([1])
        XCTAssertThrowsError(try SGD(parameters: [], learningRate: 0.1))
        XCTAssertThrowsError(try SGD(parameters: [p, p], learningRate: 0.1))
        XCTAssertThrowsError(try SGD(parameters: [p], learningRate: -1))
        XCTAssertThrowsError(try SGD(parameters: [p], learningRate: 0.1, nesterov: true))
        XCTAssertThrowsError(try Adam(parameters: [p], beta1: 1))
        XCTAssertThrowsError(try SGD(parameters: [try p * 2], learningRate: 0.1))
    }

    func testInitializersFollowTheirBounds() throws {
        let w = try Initializer.make(.kaimingUniform, shape: [200, 50], seed: 1)
        let b = (2.0).squareRoot() * (3.0 / 50).squareRoot()
        XCTAssertTrue(w.values.allSatisfy { Swift.abs($0) <= b })
        XCTAssertGreaterThan(w.values.map { Swift.abs($0) }.max()!, 0.95 * b)
        let x = try Initializer.make(.xavierNormal, shape: [300, 100], seed: 2)
        let sd = (x.values.map { $0 * $0 }.reduce(0, +) / Double(x.count)).squareRoot()
        XCTAssertEqual(sd, (2.0 / 400).squareRoot(), accuracy: 0.003)
        XCTAssertEqual(try Initializer.make(.kaimingNormal, shape: [3, 4], seed: 9).values,
                       try Initializer.make(.kaimingNormal, shape: [3, 4], seed: 9).values)
        XCTAssertThrowsError(try Initializer.make(.xavierUniform, shape: [], seed: 1))
    }
}
