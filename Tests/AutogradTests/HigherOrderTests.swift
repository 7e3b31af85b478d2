import Foundation
import XCTest
@testable import AutogradEngine

/// grad(), create_graph and second derivatives, hooks, DOT pictures.
final class HigherOrderTests: XCTestCase {
    private func scalar(_ v: Double) throws -> Tensor {
        let t = try Tensor(scalar: v)
        try t.setRequiresGrad(true)
        return t
    }

    /// d²f/dx² through grad(create_graph) twice, against the hand formula and against a
    /// central difference of the first derivative.
    private func checkSecondDerivative(_ name: String, at x0: Double, _ f: (Tensor) throws -> Tensor,
                                       _ expected: Double, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try scalar(x0)
        let d1 = try Tensor.gradients(of: [f(x)], withRespectTo: [x], createGraph: true)[0]!
        XCTAssertTrue(d1.requiresGrad, "\(name): the first derivative must be differentiable", file: file, line: line)
        let d2 = try Tensor.gradients(of: [d1], withRespectTo: [x])[0]!.item()
        XCTAssertEqual(d2, expected, accuracy: 1e-10 * max(1, Swift.abs(expected)), "\(name): hand formula", file: file, line: line)
        let h = 1e-5
        func firstDerivative(_ v: Double) throws -> Double {
            let xv = try scalar(v)
            return try Tensor.gradients(of: [f(xv)], withRespectTo: [xv])[0]!.item()
        }
        let numeric = (try firstDerivative(x0 + h) - firstDerivative(x0 - h)) / (2 * h)
        XCTAssertEqual(d2, numeric, accuracy: 1e-6 * max(1, Swift.abs(numeric)), "\(name): finite differences", file: file, line: line)
    }

    func testSecondDerivativesOfElementaryFunctions() throws {
        let x = 0.7
        try checkSecondDerivative("x^3 (mul)", at: x, { try $0 * $0 * $0 }, 6 * x)
        try checkSecondDerivative("x ** 3 (pow)", at: x, { try $0 ** 3 }, 6 * x)
        try checkSecondDerivative("sin", at: x, { try $0.sin() }, -Foundation.sin(x))
        let t = Foundation.tanh(x)
        try checkSecondDerivative("tanh", at: x, { try $0.tanh() }, -2 * t * (1 - t * t))
        try checkSecondDerivative("exp", at: x, { try $0.exp() }, Foundation.exp(x))
        try checkSecondDerivative("log", at: x, { try $0.log() }, -1 / (x * x))
        let s = 1 / (1 + Foundation.exp(-x))
        try checkSecondDerivative("sigmoid", at: x, { try $0.sigmoid() }, s * (1 - s) * (1 - 2 * s))
        try checkSecondDerivative("sqrt", at: x, { try $0.sqrt() }, -0.25 * Foundation.pow(x, -1.5))
        try checkSecondDerivative("softplus", at: x, { try $0.softplus() }, s * (1 - s))
        let phi = Foundation.exp(-x * x / 2) / (2 * Double.pi).squareRoot()
        try checkSecondDerivative("gelu", at: x, { try $0.gelu() }, phi * (2 - x * x))
        try checkSecondDerivative("cos", at: x, { try $0.cos() }, -Foundation.cos(x))
        try checkSecondDerivative("x / (1 + x²)", at: x, { try $0 / ($0 * $0 + 1) }, (2 * x * x * x - 6 * x) / Foundation.pow(1 + x * x, 3))
    }

    func testHessianVectorProductOfASmallMLP() throws {
        var rng = TestRNG(11)
        let x = rng.tensor([5, 3], requiresGrad: false), y = rng.tensor([5, 1], requiresGrad: false)
        let w1 = rng.tensor([3, 4]), w2 = rng.tensor([4, 1])
        let v1 = rng.tensor([3, 4], requiresGrad: false), v2 = rng.tensor([4, 1], requiresGrad: false)
        func loss(_ a: Tensor, _ b: Tensor) throws -> Tensor { try x.matmul(a).tanh().matmul(b).mseLoss(y) }

        let g = try Tensor.gradients(of: [loss(w1, w2)], withRespectTo: [w1, w2], createGraph: true)
        let gv = try (g[0]! * v1).sum() + (g[1]! * v2).sum()
        let hv = try Tensor.gradients(of: [gv], withRespectTo: [w1, w2])

        // Finite differences of the gradient along v.
        let h = 1e-6
        func gradientAt(_ s: Double) throws -> [[Double]] {
            let a = try Tensor(zip(w1.values, v1.values).map { $0 + s * $1 }, shape: w1.shape)
            let b = try Tensor(zip(w2.values, v2.values).map { $0 + s * $1 }, shape: w2.shape)
            try a.setRequiresGrad(true); try b.setRequiresGrad(true)
            return try Tensor.gradients(of: [loss(a, b)], withRespectTo: [a, b]).map { $0!.values }
        }
        let up = try gradientAt(h), down = try gradientAt(-h)
        for k in 0..<2 {
            let numeric = zip(up[k], down[k]).map { ($0 - $1) / (2 * h) }
            assertValues(hv[k]!, numeric, tol: 1e-6, "Hv block \(k)")
        }
    }

    func testGradOfAnyNodeWithRespectToAnyOtherLeavesGradAlone() throws {
        let x = try Tensor([1, 2, 3], shape: [3])
        try x.setRequiresGrad(true)
        let h = try x * x            // a non-leaf
        let y = try (h * 3).sum()
        let z = try (x.exp()).sum()
        let g = try Tensor.gradients(of: [y, z], withRespectTo: [h, x], retainGraph: true)
        assertValues(g[0]!, [3, 3, 3])                                  // dy/dh
        assertValues(g[1]!, [1, 2, 3].map { 6 * $0 + Foundation.exp($0) })  // d(y+z)/dx
        XCTAssertNil(x.grad, "grad() must not touch .grad")
        let seeded = try Tensor.gradients(of: [h], withRespectTo: [x], seeds: [Tensor([1, 0, 2], shape: [3])])
        assertValues(seeded[0]!, [2, 0, 12])
    }

    func testUnusedInputsNeedAllowUnused() throws {
        let a = try scalar(1), b = try scalar(2)
        let y = try a * 3
        XCTAssertThrowsError(try Tensor.gradients(of: [y], withRespectTo: [a, b], retainGraph: true)) { error in
            guard case AutogradError.state = error else { return XCTFail("got \(error)") }
        }
        let g = try Tensor.gradients(of: [y], withRespectTo: [a, b], allowUnused: true)
        assertValues(g[0]!, [3])
        XCTAssertNil(g[1])
    }

    func testHooksSeeAndReplaceGradients() throws {
        let x = try Tensor([1, 2], shape: [2])
        try x.setRequiresGrad(true)
        let h = try x * 2
        var seenAtH: [Double] = [], seenAtX: [Double] = []
        try h.registerHook(GradHook(id: 1) { g in seenAtH = g.values; return try g * 10 })
        try x.registerHook(GradHook(id: 2) { g in seenAtX = g.values; return nil })
        try (h * h).sum().backward()
        XCTAssertEqual(seenAtH, [4, 8])          // d/dh sum(h²) = 2h
        XCTAssertEqual(seenAtX, [80, 160])       // replaced 10·2h, times dh/dx = 2
        assertValues(x.grad!, [80, 160])
        XCTAssertTrue(x.removeHook(id: 2))
        XCTAssertFalse(x.removeHook(id: 2))
        try x.registerHook(GradHook(id: 3) { _ in throw AutogradError.callback("refused") })
        XCTAssertThrowsError(try (x * 1).sum().backward())
    }

    func testGradReadyHooksRunAfterAccumulationAndBeforeTheRestOfTheBackward() throws {
        // h = tanh(x W1), f = sum(h W2): W2's gradient is complete before the pass reaches h.
        let x = try Tensor([0.5, -1, 2, 0.25, 1, -0.5], shape: [2, 3])
        let w1 = try Tensor([0.1, 0.2, -0.3, 0.4, 0.5, -0.6], shape: [3, 2]), w2 = try Tensor([1, -2], shape: [2, 1])
        try w1.setRequiresGrad(true)
        try w2.setRequiresGrad(true)
        var events: [String] = []
        var seenW2: [Double] = []
        try w2.registerPostAccumulateGradHook(GradReadyHook(id: 1) { t in events.append("W2"); seenW2 = t.grad?.values ?? [] })
        try w1.registerPostAccumulateGradHook(GradReadyHook(id: 2) { _ in events.append("W1") })
        let h = try x.matmul(w1).tanh()
        try h.registerHook(GradHook(id: 3) { _ in events.append("h"); return nil })
        try h.matmul(w2).sum().backward()
        XCTAssertEqual(events, ["W2", "h", "W1"])
        // dW2 = h^T 1: the column sums of h, by hand from the forward values
        let pre = [[0.5 * 0.1 - 1 * -0.3 + 2 * 0.5, 0.5 * 0.2 - 1 * 0.4 + 2 * -0.6],
                   [0.25 * 0.1 + 1 * -0.3 - 0.5 * 0.5, 0.25 * 0.2 + 1 * 0.4 - 0.5 * -0.6]]
        let want = [Foundation.tanh(pre[0][0]) + Foundation.tanh(pre[1][0]), Foundation.tanh(pre[0][1]) + Foundation.tanh(pre[1][1])]
        XCTAssertEqual(seenW2.count, 2)
        for (a, b) in zip(seenW2, want) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        // ag_grad-style passes run none; removal works; only leaves take them
        events = []
        _ = try Tensor.gradients(of: [x.matmul(w1).tanh().matmul(w2).sum()], withRespectTo: [w1, w2])
        XCTAssertEqual(events, [])
        XCTAssertTrue(w2.removeHook(id: 1))
        XCTAssertFalse(w2.removeHook(id: 1))
        XCTAssertThrowsError(try h.registerPostAccumulateGradHook(GradReadyHook(id: 4) { _ in }))
        XCTAssertThrowsError(try x.registerPostAccumulateGradHook(GradReadyHook(id: 5) { _ in }))
        try w1.registerPostAccumulateGradHook(GradReadyHook(id: 6) { _ in throw AutogradError.callback("refused") })
        XCTAssertThrowsError(try x.matmul(w1).sum().backward())
    }

    func testGradReadyHookOnALeafRootAndAUsedTwiceLeaf() throws {
        // A leaf that is its own root has no incoming edge: it finishes at the end of the pass.
        let r = try Tensor(scalar: 3)
        try r.setRequiresGrad(true)
        var calls = 0
        try r.registerPostAccumulateGradHook(GradReadyHook(id: 1) { t in calls += 1; XCTAssertEqual(t.grad?.values, [1]) })
        try r.backward()
        XCTAssertEqual(calls, 1)
        // x used twice: one call, with the complete gradient 2x + 1
        let x = try Tensor([1, 2], shape: [2])
        try x.setRequiresGrad(true)
        var seen: [[Double]] = []
        try x.registerPostAccumulateGradHook(GradReadyHook(id: 2) { t in seen.append(t.grad?.values ?? []) })
        try (x * x + x).sum().backward()
        XCTAssertEqual(seen, [[3, 5]])
    }

    func testGraphPictureNamesOpsShapesAndLeaves() throws {
        let x = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3]), w = try Tensor.ones([3, 2])
        try w.setRequiresGrad(true)
        let dot = try (x.matmul(w).relu() * 2).sum().graphDOT()
        for piece in ["digraph", "matmul", "relu", "mul", "sum", "[3, 2] float64", "requires_grad", "constant"] {
            XCTAssertTrue(dot.contains(piece), "missing \(piece) in\n\(dot)")
        }
    }

    func testAHookWhoseBackwardFreesTheRunningGraphMakesAStateError() throws {
        // x = 3; m = x*x; the outer backward runs from m.sum(), whose hook runs a backward from
        // e = 2m without retain_graph: that releases m's node before the outer pass reaches it.
        let x = try Tensor(scalar: 3)
        try x.setRequiresGrad(true)
        let m = try x * x
        let e = try m * 2
        let l = try m.sum()
        try l.registerHook(GradHook(id: 1) { _ in try e.backward(); return nil })
        XCTAssertThrowsError(try l.backward()) { error in
            guard case AutogradError.state(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("freed during this backward"), message)
        }
        // The nested backward's own gradient landed: de/dx = 2 * 2x = 12.
        assertValues(try XCTUnwrap(x.grad), [12], "x.grad")
    }

    func testAHookWhoseBackwardReachesItselfIsRefusedNotAStackOverflow() throws {
        // The hook on x turns grad mode on and runs a backward through x again: each pass fires
        // the hook once more. Unbounded, this overflowed the stack (found with issue 17's
        // nesting limit for custom ops); now the 65th nested pass fails.
        weak var released: Tensor?
        var depth = 0
        do {
            let x = try Tensor(scalar: 1)
            released = x
            try x.setRequiresGrad(true)
            // Unowned: a hook that held its own tensor would be a cycle (x -> hook -> x).
            try x.registerHook(GradHook(id: 1) { [unowned x] _ in
                depth += 1
                try GradMode.with(enabled: true) { try (x * 2).backward() }
                return nil
            })
            XCTAssertThrowsError(try (x * 3).backward()) { error in
                XCTAssertTrue("\(error)".contains("64 backward passes are running nested"), "\(error)")
            }
        }
        XCTAssertEqual(depth, 64)
        XCTAssertNil(released, "the leaf, its hook and the 64 graphs are released")
    }

    func testSavedTensorsAreReleasedAfterBackwardUnlessRetained() throws {
        // A saved input is kept as its values (the tensor object itself may go), so watch those.
        weak var saved: Storage?
        let x = try Tensor([1, 2], shape: [2])
        try x.setRequiresGrad(true)
        var y: Tensor? = nil
        do {
            let e = try x.exp()
            saved = e.storage
            y = try (e * e).sum()  // mul saves e
        }
        XCTAssertNotNil(saved, "the graph keeps what backward needs")
        try y!.backward(retainGraph: true)
        XCTAssertNotNil(saved, "backward with retain_graph keeps saved tensors")
        try y!.backward()
        XCTAssertNil(saved, "backward without retain_graph releases saved tensors")
        // Both passes summed: d/dx sum(exp(x)^2) = 2 exp(2x), twice.
        assertValues(try XCTUnwrap(x.grad), [4 * Foundation.exp(2.0), 4 * Foundation.exp(4.0)], tol: 1e-12, "x.grad")
        withExtendedLifetime(y) {}
    }
}
