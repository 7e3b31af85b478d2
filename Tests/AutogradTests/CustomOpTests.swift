import XCTest
import Foundation
@testable import AutogradEngine

/// User-defined ops (issue 17). Expected values: finite differences (gradcheck), the same
/// function written with catalogue ops, and hand derivation.
final class CustomOpTests: XCTestCase {
    /// a * b, broadcasting; backward with library ops (so second derivatives work), gradients
    /// returned in the broadcast shape for the engine to reduce.
    func multiplyOp(calls: Counter? = nil) throws -> CustomOp {
        try CustomOp(name: "my_mul", inputs: 2, outputs: 1, forward: { ctx, xs in
            calls?.add()
            try ctx.save(xs)
            return [try xs[0].multiplying(xs[1])]
        }, backward: { ctx, gs in
            let s = try ctx.saved()
            return [try ctx.needsInputGradient(0) ? gs[0].multiplying(s[1]) : nil,
                    try ctx.needsInputGradient(1) ? gs[0].multiplying(s[0]) : nil]
        }, jvp: { _, xs, ts in
            var terms: [Tensor] = []
            if let t = ts[0] { terms.append(try t.multiplying(xs[1])) }
            if let t = ts[1] { terms.append(try xs[0].multiplying(t)) }
            let sum = try terms.dropFirst().reduce(terms[0]) { try $0.adding($1) }
            return [try sum.expanded(to: Shape.broadcast(xs[0].shape, xs[1].shape))]
        })
    }

    /// (sin x, cos x) computed on raw buffers; backward g0 cos x - g1 sin x with library ops.
    func sinCosOp() throws -> CustomOp {
        try CustomOp(name: "sincos", inputs: 1, outputs: 2, forward: { ctx, xs in
            let x = xs[0]
            let s = try Tensor(x.values.map { Foundation.sin($0) }, shape: x.shape, dtype: x.dtype)
            let c = try Tensor(x.values.map { Foundation.cos($0) }, shape: x.shape, dtype: x.dtype)
            try ctx.save([s, c])
            return [s, c]
        }, backward: { ctx, gs in
            let sc = try ctx.saved()
            return [try gs[0].multiplying(sc[1]).subtracting(gs[1].multiplying(sc[0]))]
        }, jvp: { ctx, _, ts in
            let sc = try ctx.saved()
            return [try ts[0]!.multiplying(sc[1]), try ts[0]!.multiplying(sc[0]).negated()]
        })
    }

    /// exp x, saving its output: the second derivative goes through the saved output.
    func expOp() throws -> CustomOp {
        try CustomOp(name: "my_exp", inputs: 1, outputs: 1, forward: { ctx, xs in
            let y = try xs[0].exp()
            try ctx.save([y])
            return [y]
        }, backward: { ctx, gs in [try gs[0].multiplying(ctx.saved()[0])] },
           jvp: { ctx, _, ts in [try ts[0]!.multiplying(ctx.saved()[0])] })
    }

    /// a * b + c and a - c (three inputs, two outputs, broadcasting).
    func threeInputOp() throws -> CustomOp {
        try CustomOp(name: "fma_and_diff", inputs: 3, outputs: 2, forward: { ctx, xs in
            try ctx.save(xs)
            return [try xs[0].multiplying(xs[1]).adding(xs[2]), try xs[0].subtracting(xs[2])]
        }, backward: { ctx, gs in
            let s = try ctx.saved()
            return [try gs[0].multiplying(s[1]).adding(gs[1]), try gs[0].multiplying(s[0]), try gs[0].subtracting(gs[1])]
        })
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func add() { lock.lock(); n += 1; lock.unlock() }
        var value: Int { lock.lock(); defer { lock.unlock() }; return n }
    }

    func testGradcheckOneToThreeInputsOneAndTwoOutputsWithBroadcasting() throws {
        var rng = TestRNG(17)
        let mul = try multiplyOp(), sc = try sinCosOp(), three = try threeInputOp(), ex = try expOp()
        assertGradCheck([rng.tensor([2, 3]), rng.tensor([3])], "mul broadcast") { xs in try mul.apply(xs)[0] }
        assertGradCheck([rng.tensor([4, 1]), rng.tensor([1, 5])], "mul both broadcast") { xs in try mul.apply(xs)[0] }
        assertGradCheck([rng.tensor([3, 2])], "sincos both outputs") { xs in
            let o = try sc.apply(xs)
            return try o[0].multiplying(Tensor(scalar: 2)).adding(o[1].multiplying(o[1]))
        }
        assertGradCheck([rng.tensor([5])], "sincos second output only") { xs in try sc.apply(xs)[1] }
        assertGradCheck([rng.tensor([2, 3]), rng.tensor([3]), rng.tensor([2, 1])], "three inputs two outputs") { xs in
            let o = try three.apply(xs)
            return try o[0].adding(o[1].multiplying(o[1]))
        }
        assertGradCheck([rng.tensor([4])], "exp saving its output") { xs in try ex.apply(xs)[0] }
    }

    func testSecondDerivativesThroughTheBackwardAgreeWithFiniteDifferences() throws {
        var rng = TestRNG(3)
        let mul = try multiplyOp(), ex = try expOp(), sc = try sinCosOp()
        // d/dx of (dL/dx), L = sum(my_mul(x, y) * x): gradcheck of a gradient built with create_graph.
        // Gradcheck's finite-difference calls pass leaves that do not require grad; the inner
        // gradient needs them to.
        func leaves(_ xs: [Tensor]) throws -> [Tensor] {
            for x in xs where !x.requiresGrad { try x.setRequiresGrad(true) }
            return xs
        }
        assertGradCheck([rng.tensor([2, 3]), rng.tensor([3])], "second derivative of mul") { xs in try GradMode.with(enabled: true) {
            let xs = try leaves(xs)
            let l = try mul.apply(xs)[0].multiplying(xs[0]).sum()
            let g = try Tensor.gradients(of: [l], withRespectTo: xs, createGraph: true)
            return try g[0]!.multiplying(g[0]!).sum().adding(g[1]!.sum())
        } }
        assertGradCheck([rng.tensor([4], -1, 1)], "second derivative of exp through its saved output") { xs in try GradMode.with(enabled: true) {
            let xs = try leaves(xs)
            let g = try Tensor.gradients(of: [ex.apply(xs)[0].sum()], withRespectTo: xs, createGraph: true)
            return g[0]!
        } }
        assertGradCheck([rng.tensor([3])], "second derivative of sincos") { xs in try GradMode.with(enabled: true) {
            let xs = try leaves(xs)
            let o = try sc.apply(xs)
            let g = try Tensor.gradients(of: [o[0].multiplying(o[1]).sum()], withRespectTo: xs, createGraph: true)
            return g[0]!
        } }
        // By hand: d2/dx2 exp(x) = exp(x).
        let x = try Tensor([0.5], shape: [1])
        try x.setRequiresGrad(true)
        let g1 = try Tensor.gradients(of: [ex.apply([x])[0].sum()], withRespectTo: [x], createGraph: true)[0]!
        let g2 = try Tensor.gradients(of: [g1.sum()], withRespectTo: [x])[0]!
        XCTAssertEqual(try g2.item(), Foundation.exp(0.5), accuracy: 1e-15)
    }

    func testSameValuesAndGradientsAsTheCatalogueInBothDTypes() throws {
        for dtype in [DType.float32, .float64] {
            var rng = TestRNG(5)
            let a0 = rng.tensor([3, 4]), b0 = rng.tensor([4]), c0 = rng.tensor([3, 1])
            func leaves() throws -> [Tensor] {
                try [a0, b0, c0].map { t in
                    let l = try t.converted(to: dtype).detach()
                    try l.setRequiresGrad(true)
                    return l
                }
            }
            let xs = try leaves(), ys = try leaves()
            let o = try threeInputOp().apply(xs)
            let custom = try o[0].multiplying(o[1]).sum()
            let reference = try ys[0].multiplying(ys[1]).adding(ys[2]).multiplying(ys[0].subtracting(ys[2])).sum()
            XCTAssertEqual(try custom.item(), try reference.item(), accuracy: dtype == .float32 ? 1e-4 : 1e-12)
            try custom.backward()
            try reference.backward()
            for k in 0..<3 {
                assertValues(xs[k].grad!, ys[k].grad!.values, tol: dtype == .float32 ? 1e-5 : 1e-12, "\(dtype) grad \(k)")
                XCTAssertEqual(xs[k].grad!.dtype, dtype)
            }
        }
    }

    func testForwardModeUsesTheJVP() throws {
        var rng = TestRNG(8)
        let x = rng.tensor([2, 3], requiresGrad: false), y = rng.tensor([3], requiresGrad: false)
        let tx = rng.tensor([2, 3], requiresGrad: false), ty = rng.tensor([3], requiresGrad: false)
        let mul = try multiplyOp()
        let custom = try Transforms.jvp({ try mul.apply($0) }, primals: [x, y], tangents: [tx, ty])
        let reference = try Transforms.jvp({ [try $0[0].multiplying($0[1])] }, primals: [x, y], tangents: [tx, ty])
        assertValues(custom.tangents[0], reference.tangents[0].values, "jvp of my_mul")
        let sc = try sinCosOp()
        let j = try Transforms.jvp({ try sc.apply($0) }, primals: [x], tangents: [tx])
        assertValues(j.tangents[1], zip(x.values, tx.values).map { -Foundation.sin($0) * $1 }, "jvp of cos by hand")
        // Forward over reverse (hvp) through the backward: d2/dx2 sum(exp x) = exp x.
        let ex = try expOp()
        let v = try Tensor.ones([3])
        let h = try Transforms.hvp({ try ex.apply([$0])[0].sum() }, at: try Tensor([0.1, 0.2, 0.3], shape: [3]), vector: v)
        assertValues(h, [0.1, 0.2, 0.3].map { Foundation.exp($0) }, "hvp through the saved output")
        // No JVP: a clear state error.
        let noJVP = try CustomOp(name: "no_jvp", inputs: 1, outputs: 1, forward: { _, xs in [try xs[0].exp()] }, backward: { _, gs in gs })
        XCTAssertThrowsError(try Transforms.jvp({ try noJVP.apply($0) }, primals: [x], tangents: [tx])) { e in
            XCTAssertTrue("\(e)".contains("without a JVP"), "\(e)")
        }
    }

    func testBrokenCallbacksAreErrorsNamingTheOp() throws {
        let x = try Tensor([1, 2], shape: [2])
        try x.setRequiresGrad(true)
        func op(outputs: Int = 1, forward: @escaping CustomOp.Forward, backward: CustomOp.Backward?) throws -> CustomOp {
            try CustomOp(name: "bad", inputs: 1, outputs: outputs, forward: forward, backward: backward)
        }
        let cases: [(String, CustomOp, String)] = [
            ("too many outputs", try op(forward: { _, xs in [xs[0], xs[0]] }, backward: nil), "returned 2 tensors"),
            ("mixed dtypes", try op(outputs: 2, forward: { _, xs in [xs[0], try xs[0].converted(to: .float32)] }, backward: nil), "share one dtype"),
        ]
        for (label, f, fragment) in cases {
            XCTAssertThrowsError(try f.apply([x]), label) { e in
                guard case AutogradError.callback(let m) = e else { return XCTFail("\(label): \(e)") }
                XCTAssertTrue(m.contains(fragment) && m.contains("'bad'"), "\(label): \(m)")
            }
        }
        let backwards: [(String, CustomOp.Backward, String)] = [
            ("count", { _, _ in [] }, "returned 0 gradients"),
            ("dtype", { _, gs in [try gs[0].converted(to: .float32)] }, "as float32"),
            ("shape", { _, _ in [try Tensor.ones([3])] }, "of shape [3] for input 0 of shape [2]"),
            ("throws", { _, _ in throw AutogradError.callback("mine") }, "mine"),
        ]
        for (label, b, fragment) in backwards {
            let f = try op(forward: { _, xs in [try xs[0].exp()] }, backward: b)
            let y = try f.apply([x])[0].sum()
            XCTAssertThrowsError(try y.backward(), label) { e in XCTAssertTrue("\(e)".contains(fragment), "\(label): \(e)") }
        }
        let none = try op(forward: { _, xs in [try xs[0].exp()] }, backward: nil)
        XCTAssertThrowsError(try none.apply([x])[0].sum().backward()) { e in
            guard case AutogradError.state(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("without a backward"), m)
        }
        // A context kept past its callback refuses to work.
        var kept: CustomOpContext? = nil
        let keeper = try op(forward: { ctx, xs in kept = ctx; return [xs[0]] }, backward: nil)
        _ = try keeper.apply([x])
        XCTAssertThrowsError(try kept!.save([x])) { e in XCTAssertTrue("\(e)".contains("after its callback returned"), "\(e)") }
        XCTAssertThrowsError(try CustomOp(name: "", inputs: 1, outputs: 1, forward: { _, xs in xs }, backward: nil))
        XCTAssertThrowsError(try CustomOp(name: "n", inputs: 0, outputs: 1, forward: { _, xs in xs }, backward: nil))
        XCTAssertThrowsError(try op(forward: { _, xs in xs }, backward: nil).apply([x, x]))
    }

    func testUnusedOutputGetsZerosAndIdentityOpsWork() throws {
        // Only the first output used: the backward sees zeros for the second.
        var seen: [Double] = []
        let f = try CustomOp(name: "pair", inputs: 1, outputs: 2, forward: { _, xs in [try xs[0].exp(), try xs[0].sin()] },
                             backward: { _, gs in seen = gs[1].values; return [gs[0]] })
        let x = try Tensor([0.5, 1.5], shape: [2])
        try x.setRequiresGrad(true)
        try f.apply([x])[0].sum().backward()
        XCTAssertEqual(seen, [0, 0])
        XCTAssertEqual(x.grad!.values, [1, 1])
        // An identity forward (returns its input) and backward (returns the gradient).
        let id = try CustomOp(name: "identity", inputs: 1, outputs: 1, forward: { _, xs in xs }, backward: { _, gs in gs })
        let y = try id.apply([x])[0]
        XCTAssertFalse(y === x)
        try y.multiplying(y).sum().backward()
        assertValues(x.grad!, [1 + 2 * 0.5, 1 + 2 * 1.5], "identity then square")
    }

    func testReplayCallsTheCallbacksAgainAndMatchesEager() throws {
        let calls = Counter()
        let mul = try multiplyOp(calls: calls)
        let sc = try sinCosOp()
        let w = try Tensor([0.5, -1, 2], shape: [3])
        try w.setRequiresGrad(true)
        func step(_ x: Tensor) throws -> [Tensor] {
            let o = try sc.apply([try mul.apply([x, w])[0]])
            let loss = try o[0].multiplying(o[1]).sum()
            let g = try Tensor.gradients(of: [loss], withRespectTo: [w])
            return [loss, g[0]!]
        }
        var rng = TestRNG(11)
        let example = rng.tensor([2, 3], requiresGrad: false)
        let f = try CapturedFunction.capture([example]) { try step($0[0]) }
        XCTAssertEqual(calls.value, 1)
        for _ in 0..<2 {
            let x = rng.tensor([2, 3], requiresGrad: false)
            let replayed = try f([x])
            let eager = try step(x)
            for k in 0..<2 { XCTAssertEqual(replayed[k].values, eager[k].values, "output \(k)") }
        }
        XCTAssertEqual(calls.value, 5)  // capture, two replays, two eager runs
        XCTAssertTrue(f.program.rerunNames.contains("my_mul") && f.program.rerunNames.contains("sincos backward"), "\(f.program.rerunNames)")
    }

    func testRecomputeRerunsAOneOutputOp() throws {
        let previous = Recompute.setEnabled(true)
        defer { Recompute.setEnabled(previous) }
        let mul = try multiplyOp()
        let x = try Tensor([2], shape: [1]), y = try Tensor([3], shape: [1])
        try x.setRequiresGrad(true)
        try y.setRequiresGrad(true)
        let z = try mul.apply([x, y])[0]
        try withNoGrad { try x.replaceValues(with: Tensor([4], shape: [1])) }
        try z.recompute()
        XCTAssertEqual(z.values, [12])
        try z.backward()
        XCTAssertEqual(y.grad!.values, [4])
        // Several outputs: refused, clearly.
        let o = try sinCosOp().apply([x])
        XCTAssertThrowsError(try o[0].recompute())
    }

    func testConcurrentApplyAndBackwardOnEightThreads() throws {
        let mul = try multiplyOp(), sc = try sinCosOp()
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            do {
                for i in 0..<50 {
                    let v = Double(t) + Double(i) / 100
                    let x = try Tensor([v, v + 1], shape: [2]), y = try Tensor([2], shape: [1])
                    try x.setRequiresGrad(true)
                    let o = try sc.apply([try mul.apply([x, y])[0]])
                    try o[0].adding(o[1]).sum().backward()
                    // d/dx (sin 2x + cos 2x) = 2 cos 2x - 2 sin 2x.
                    let expected = [v, v + 1].map { 2 * Foundation.cos(2 * $0) - 2 * Foundation.sin(2 * $0) }
                    if zip(x.grad!.values, expected).contains(where: { abs($0 - $1) > 1e-12 }) { failures.add() }
                }
            } catch { failures.add() }
        }
        XCTAssertEqual(failures.value, 0)
    }

    func testGraphPictureNamesTheOpWithItsNameEscaped() throws {
        let f = try CustomOp(name: "say \"hi\"\nthere", inputs: 1, outputs: 2, forward: { _, xs in [try xs[0].exp(), try xs[0].sin()] },
                             backward: { _, gs in [gs[0]] })
        let x = try Tensor([1], shape: [1])
        try x.setRequiresGrad(true)
        let o = try f(x)
        let dot = try o[0].adding(o[1]).graphDOT()
        XCTAssertTrue(dot.contains("label=\"say \\\"hi\\\"\\nthere[0]\\n"), dot)
        XCTAssertTrue(dot.contains("label=\"say \\\"hi\\\"\\nthere\\n[2] float64"), dot)
    }

    func testSavedIntermediatesAndUnusedFirstOutputReplayLikeEager() throws {
        // Saves an intermediate (2x, neither input nor output); only the second output is used.
        let f = try CustomOp(name: "twice_then", inputs: 1, outputs: 2, forward: { ctx, xs in
            let twice = try xs[0].multiplying(Tensor(scalar: 2))
            try ctx.save([twice])
            return [try twice.exp(), try twice.sin()]
        }, backward: { ctx, gs in
            let twice = try ctx.saved()[0]
            // d/dx exp(2x) = 2 exp(2x); d/dx sin(2x) = 2 cos(2x).
            return [try gs[0].multiplying(twice.exp()).adding(gs[1].multiplying(twice.cos())).multiplying(Tensor(scalar: 2))]
        })
        func step(_ x: Tensor) throws -> [Tensor] {
            let leaf = x.detach()
            try leaf.setRequiresGrad(true)
            let y = try f.apply([leaf])[1]
            return [y, try Tensor.gradients(of: [y.sum()], withRespectTo: [leaf])[0]!]
        }
        var rng = TestRNG(21)
        let g = try CapturedFunction.capture([rng.tensor([4], requiresGrad: false)]) { try step($0[0]) }
        for _ in 0..<2 {
            let x = rng.tensor([4], requiresGrad: false)
            let (r, e) = (try g([x]), try step(x))
            XCTAssertEqual(r[0].values, e[0].values)
            XCTAssertEqual(r[1].values, e[1].values)
            assertValues(r[1], x.values.map { 2 * Foundation.cos(2 * $0) }, "by hand")
        }
        // Recompute refuses it (an intermediate would go stale), clearly.
        let previous = Recompute.setEnabled(true)
        defer { Recompute.setEnabled(previous) }
        let x = try Tensor([1], shape: [1])
        try x.setRequiresGrad(true)
        XCTAssertThrowsError(try f.apply([x])[1].recompute()) { e in XCTAssertTrue("\(e)".contains("without its forward"), "\(e)") }
    }

    func testEmptyTensorsFlowThrough() throws {
        let f = try sinCosOp()
        let x = try Tensor([], shape: [0, 3])
        try x.setRequiresGrad(true)
        let o = try f.apply([x])
        XCTAssertEqual(o[0].shape, [0, 3])
        try o[0].adding(o[1]).sum().backward()
        XCTAssertEqual(x.grad!.shape, [0, 3])
    }

    func testAForwardThatAppliesItsOwnOpIsRefusedNotAStackOverflow() throws {
        final class Box { var op: CustomOp? }
        let box = Box()
        box.op = try CustomOp(name: "recursive", inputs: 1, outputs: 1, forward: { _, xs in try box.op!.apply(xs) }, backward: nil)
        XCTAssertThrowsError(try box.op!.apply([try Tensor([1], shape: [1])])) { e in
            guard case AutogradError.state(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("64 custom-op callbacks are running nested"), m)
        }
        // Nesting below the limit works: an op whose forward applies another custom op.
        let inner = try sinCosOp()
        let outer = try CustomOp(name: "outer", inputs: 1, outputs: 1, forward: { _, xs in [try inner.apply(xs)[0]] }, backward: nil)
        XCTAssertEqual(try outer.apply([try Tensor([0], shape: [1])])[0].values, [0])
        box.op = nil
    }

    func testAJVPReadingASavedOutputIsDifferentiableByReverseMode() throws {
        // tangent = t * exp(x) through the saved output; its derivative in x is t * exp(x) (by
        // hand). Before the fix the JVP saw the output without its history: the derivative was 0.
        let ex = try expOp()
        let x = try Tensor([0.25, -0.5], shape: [2])
        try x.setRequiresGrad(true)
        let t = try Tensor([1, 3], shape: [2])
        let (_, tangents) = try Transforms.jvp({ try ex.apply($0) }, primals: [x], tangents: [t])
        let g = try Tensor.gradients(of: [tangents[0].sum()], withRespectTo: [x])[0]!
        assertValues(g, [Foundation.exp(0.25), 3 * Foundation.exp(-0.5)], "d/dx of the tangent")
    }

    func testAJVPThroughASavedOutputLeavesNoCycle() throws {
        // The tangent t·y refers back to the op's node through y; the node must not hold it in
        // turn (found by the C tests: the op's destroy never ran).
        weak var op: CustomOp?
        do {
            let ex = try expOp()
            op = ex
            let x = try Tensor([0.25], shape: [1])
            try x.setRequiresGrad(true)
            _ = try Transforms.jvp({ try ex.apply($0) }, primals: [x], tangents: [try Tensor.ones([1])])
        }
        XCTAssertNil(op, "the op, its graph and the tangent are all released")
    }

    func testStateOfAnApplicationReachesItsBackwardAndLivesWithItsGraph() throws {
        final class Power { let k: Double; let gone: Counter; init(_ k: Double, _ gone: Counter) { self.k = k; self.gone = gone }; deinit { gone.add() } }
        let gone = Counter()
        // x^k with k chosen per application, kept as the application's state.
        let f = try CustomOp(name: "power", inputs: 1, outputs: 1, forward: { ctx, xs in
            let k = xs[0].values.count > 1 ? 3.0 : 2.0
            try ctx.setState(Power(k, gone))
            try ctx.save(xs)
            return [try xs[0] ** k]
        }, backward: { ctx, gs in
            let k = try XCTUnwrap(ctx.state() as? Power).k
            return [try gs[0] * k * (ctx.saved()[0] ** (k - 1))]
        })
        do {
            let x = try Tensor([2], shape: [1]), y = try Tensor([2, 1], shape: [2])
            try x.setRequiresGrad(true)
            try y.setRequiresGrad(true)
            let lx = try f.apply([x])[0].sum(), ly = try f.apply([y])[0].sum()
            XCTAssertEqual(gone.value, 0, "each graph keeps its application's state")
            try lx.backward(retainGraph: true)
            try ly.backward(retainGraph: true)
            XCTAssertEqual(x.grad!.values, [4])       // 2x
            XCTAssertEqual(y.grad!.values, [12, 3])   // 3y²
            XCTAssertEqual(gone.value, 0)
        }
        XCTAssertEqual(gone.value, 2, "released with the graphs")
        // Not recorded: released when the op returns. Set outside the forward: refused.
        _ = try f.apply([try Tensor([1], shape: [1])])
        XCTAssertEqual(gone.value, 3)
        let x = try Tensor([1.5], shape: [1])
        try x.setRequiresGrad(true)
        let setter = try CustomOp(name: "late", inputs: 1, outputs: 1, forward: { _, xs in [try xs[0] * 1] },
                                  backward: { ctx, gs in try ctx.setState(nil); return gs })
        XCTAssertThrowsError(try setter.apply([x])[0].sum().backward()) { e in XCTAssertTrue("\(e)".contains("forward callback only"), "\(e)") }
        // In a capture each replay's forward sets the state its backward reads.
        let g = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { ins in
            let leaf = ins[0].detach()
            try leaf.setRequiresGrad(true)
            return [try Tensor.gradients(of: [f.apply([leaf])[0].sum()], withRespectTo: [leaf])[0]!]
        }
        XCTAssertEqual(try g([try Tensor([2, -1], shape: [2])])[0].values, [12, 3])
    }

    func testAReplayWhoseCallbacksChangeShapeOrDTypeIsACallbackError() throws {
        // Found by the fuzzer: both ended in AG_ERR_INTERNAL (the replay's planned bytes).
        var calls = 0
        // The backward gives its gradient in the input's shape at the capture, then in a
        // broadcast shape (legal: summed back), then none.
        let twice = try CustomOp(name: "twice", inputs: 1, outputs: 1, forward: { _, xs in [try xs[0] * 2] }, backward: { _, gs in
            calls += 1
            switch calls {
            case 1: return [try gs[0] * 2]
            case 2: return [try (gs[0] * 2).expanded(to: [3]) / 3]
            default: return [nil]
            }
        })
        let x = try Tensor(scalar: 1.5)
        let f = try CapturedFunction.capture([x]) { ins in
            let leaf = ins[0].detach()
            try leaf.setRequiresGrad(true)
            return [try Tensor.gradients(of: [twice.apply([leaf])[0]], withRespectTo: [leaf])[0]!]
        }
        XCTAssertEqual(try f([x])[0].values[0], 2, accuracy: 1e-15)
        XCTAssertEqual(try f([x])[0].values, [0])
        var forwards = 0
        let retype = try CustomOp(name: "retype", inputs: 1, outputs: 1, forward: { _, xs in
            forwards += 1
            return [forwards == 1 ? try xs[0] * 2 : try xs[0].converted(to: .float32)]
        }, backward: nil)
        let g = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { ins in try retype.apply(ins) }
        XCTAssertThrowsError(try g([try Tensor([1, 2], shape: [2])])) { e in
            guard case AutogradError.callback(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("dtypes [float32], at the capture [float64]"), m)
        }
    }
}
