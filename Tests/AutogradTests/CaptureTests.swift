import XCTest
@testable import AutogradEngine

/// Reusable graphs: values set in place, recompute, capture and replay (issue 16). Expected
/// values: hand derivation for the notebook example; for replays, the eager function run on the
/// same inputs, compared bit for bit (the replay must run the same arithmetic).
final class CaptureTests: XCTestCase {
    /// The bits of a tensor's values, for exact comparison (nan-safe).
    func bits(_ t: Tensor) -> [UInt64] { t.values.map { $0.bitPattern } }

    func testNotebookExampleRecomputesInPlace() throws {
        let previous = Recompute.setEnabled(true)
        defer { Recompute.setEnabled(previous) }
        let x = try Tensor(scalar: 3), y = try Tensor(scalar: 5)
        try x.setRequiresGrad(true)
        try y.setRequiresGrad(true)
        let z1 = try x.adding(y), z2 = try z1.multiplying(y)
        XCTAssertEqual(try z2.item(), 40)
        // dz2/dy = x + 2y, dz2/dx = y (hand derivation).
        var g = try Tensor.gradients(of: [z2], withRespectTo: [x, y], retainGraph: true)
        XCTAssertEqual(try g[1]!.item(), 13)
        try withNoGrad { try x.replaceValues(with: Tensor(scalar: 4)) }
        // Stale: the graph saved y and z1 for backward; z1 was computed from the old x.
        try Recompute.run(z2)
        XCTAssertEqual(try z1.item(), 9)
        XCTAssertEqual(try z2.item(), 45)
        g = try Tensor.gradients(of: [z2], withRespectTo: [x, y], retainGraph: true)
        XCTAssertEqual(try g[0]!.item(), 5)
        XCTAssertEqual(try g[1]!.item(), 14)
        // Any node with respect to any node: dz2/dz1 = y.
        XCTAssertEqual(try Tensor.gradients(of: [z2], withRespectTo: [z1], retainGraph: true)[0]!.item(), 5)
    }

    /// Max pooling's rule reads the indices its forward found: a recompute renews them (the
    /// node's forward writes them again), so the gradient goes to the new maximum.
    func testRecomputeRenewsPoolIndices() throws {
        let previous = Recompute.setEnabled(true)
        defer { Recompute.setEnabled(previous) }
        // max_pool2d over one 2x2 window: the gradient goes to the (new) maximum.
        let p = try Tensor([1, 4, 2, 3], shape: [1, 1, 2, 2])
        try p.setRequiresGrad(true)
        let m = try p.multiplying(Tensor(scalar: 2)).maxPool2d(kernel: (2, 2)).sum()
        try withNoGrad { try p.replaceValues(with: Tensor([5, 4, 2, 3], shape: [1, 1, 2, 2])) }
        try Recompute.run(m)
        XCTAssertEqual(try m.item(), 10)
        let g = try Tensor.gradients(of: [m], withRespectTo: [p], retainGraph: true)
        XCTAssertEqual(g[0]!.values, [2, 0, 0, 0])
    }

    func testRecomputeRefusesNodesWithoutTheirForward() throws {
        let x = try Tensor(scalar: 3)
        try x.setRequiresGrad(true)
        let z = try x.exp()
        XCTAssertThrowsError(try Recompute.run(z)) { e in
            XCTAssertTrue("\(e)".contains("recorded without its forward"), "\(e)")
        }
    }

    /// B1's chain (add leaf, mul leaf, tanh, relu) and its gradients, eager.
    func chain(_ x: [Tensor], cycles: Int) throws -> [Tensor] {
        var v = x[0]
        for i in 0..<cycles {
            v = try v.adding(x[i % 4]).multiplying(x[(i + 1) % 4]).tanh().relu()
        }
        return try Tensor.gradients(of: [v], withRespectTo: x).map { $0! } + [v]
    }

    func testReplayOfAScalarChainIsBitIdenticalToEager() throws {
        for dtype in [DType.float64, .float32] {
            let make = { (vals: [Double]) -> [Tensor] in
                try vals.map { v in let t = try Tensor(scalar: v, dtype: dtype); try t.setRequiresGrad(true); return t }
            }
            let f = try CapturedFunction.capture(try make([0.5, -0.3, 0.8, 1.2])) { try self.chain($0, cycles: 50) }
            XCTAssertGreaterThan(f.stats.fusedSteps, 100, "\(f.stats)")
            var rng = TestRNG(7)
            for _ in 0..<5 {
                let vals = (0..<4).map { _ in rng.uniform(-1.5, 1.5) }
                let replayed = try f(try make(vals))
                let eager = try chain(try make(vals), cycles: 50)
                XCTAssertEqual(replayed.map(bits), eager.map(bits), "\(dtype) at \(vals)")
            }
        }
    }

    func testReplayOfAnMLPTrainingStepTrainsBitForBit() throws {
        for dtype in [DType.float64, .float32] {
            func model() throws -> [Tensor] {
                var rng = TestRNG(3)
                return [rng.tensor([8, 5]), rng.tensor([8]), rng.tensor([3, 8]), rng.tensor([3])].map { t in
                    let c = try! t.converted(to: dtype); try! c.setRequiresGrad(true); return c
                }
            }
            var rng = TestRNG(11)
            let batches = try (0..<6).map { _ in
                (try rng.tensor([4, 5], requiresGrad: false).converted(to: dtype), try rng.tensor([4, 3], requiresGrad: false).converted(to: dtype))
            }
            func step(_ p: [Tensor], _ opt: Optimizer, _ x: Tensor, _ y: Tensor) throws -> Tensor {
                let h = try x.linear(weight: p[0], bias: p[1]).relu()
                let loss = try h.linear(weight: p[2], bias: p[3]).tanh().mseLoss(y)
                try loss.backward()
                try opt.step()
                opt.zeroGrad()
                return loss
            }
            // Eager.
            let pe = try model()
            let oe = try Adam(parameters: pe, learningRate: 0.01)
            var eagerLosses: [[UInt64]] = []
            for (x, y) in batches { eagerLosses.append(bits(try step(pe, oe, x, y))) }
            // Captured on the first batch (its step happens then), replayed on the rest.
            let pr = try model()
            let or = try Adam(parameters: pr, learningRate: 0.01)
            var capturedLoss: Tensor?
            let f = try CapturedFunction.capture([batches[0].0, batches[0].1]) { ins in
                let l = try step(pr, or, ins[0], ins[1]); capturedLoss = l; return [l]
            }
            var replayLosses = [bits(capturedLoss!)]
            for (x, y) in batches.dropFirst() { replayLosses.append(bits(try f([x, y])[0])) }
            XCTAssertEqual(replayLosses, eagerLosses, "\(dtype)")
            XCTAssertEqual(pr.map(bits), pe.map(bits), "\(dtype): weights after training")
        }
    }
}

extension CaptureTests {
    /// A classifier's training step (linear, relu, cross-entropy, SGD) replays with a kernel for
    /// every step: no op is rerun (which would allocate per call).
    func testATrainingStepWithCrossEntropyRunsNoOpAgain() throws {
        var rng = TestRNG(1)
        let x = try rng.tensor([8, 20], requiresGrad: false).converted(to: .float32)
        let w = try rng.tensor([6, 20]).converted(to: .float32), b = try rng.tensor([6]).converted(to: .float32)
        try w.setRequiresGrad(true)
        try b.setRequiresGrad(true)
        let opt = try SGD(parameters: [w, b], learningRate: 0.01)
        let f = try CapturedFunction.capture([x]) { ins in
            let loss = try ins[0].linear(weight: w, bias: b).relu().crossEntropy(labels: [0, 1, 2, 3, 4, 5, 0, 1])
            try loss.backward()
            try opt.step()
            opt.zeroGrad()
            return [loss]
        }
        XCTAssertEqual(f.program.rerunNames, [])
        XCTAssertGreaterThan(f.stats.fusedGroups, 0)
    }
}

/// What a capture refuses, and what a call checks.
final class CaptureErrorTests: XCTestCase {
    func scalar(_ v: Double, grad: Bool = true) throws -> Tensor {
        let t = try Tensor(scalar: v)
        try t.setRequiresGrad(grad)
        return t
    }

    func message(_ body: () throws -> Void) -> String {
        do { try body(); return "no error" } catch { return "\(error)" }
    }

    func testHooksInACapturedBackwardAreRefused() throws {
        let w = try scalar(2)
        try w.registerHook(GradHook(id: 1) { g in try g.multiplying(g.constant(2)) })
        let m = message { _ = try CapturedFunction.capture([try self.scalar(3)]) { x in
            let y = try x[0].multiplying(w)
            try y.backward()
            return [y]
        } }
        XCTAssertTrue(m.contains("hooks run user code on each backward and cannot be replayed"), m)
    }

    func testGradReadyHooksInACapturedBackwardAreRefused() throws {
        let w = try scalar(2)
        try w.registerPostAccumulateGradHook(GradReadyHook(id: 1) { _ in })
        let m = message { _ = try CapturedFunction.capture([try self.scalar(3)]) { x in
            let y = try x[0].multiplying(w)
            try y.backward()
            return [y]
        } }
        XCTAssertTrue(m.contains("hooks run user code on each backward and cannot be replayed"), m)
    }

    func testCallsAreChecked() throws {
        let f = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { x in [try x[0].exp()] }
        XCTAssertTrue(message { _ = try f([]) }.contains("0 inputs for a function captured with 1"))
        XCTAssertTrue(message { _ = try f([try Tensor([1, 2, 3], shape: [3])]) }.contains("shapes are fixed per capture"))
        XCTAssertTrue(message { _ = try f([try Tensor([1, 2], shape: [2], dtype: .float32)]) }.contains("capture again for other dtypes"))
        let out = try Tensor([0, 0], shape: [2])
        try f.call([try Tensor([0, 1], shape: [2])], into: [out])
        XCTAssertEqual(out.values, [1, Foundation.exp(1.0)])
        let wrong = message { try f.call([out], into: [try Tensor([0], shape: [1])]) }
        XCTAssertTrue(wrong.contains("output 0 is float64 [1]"), wrong)
        let recorded = out.detach()
        try recorded.setRequiresGrad(true)
        let notLeaf = message { try f.call([out], into: [try recorded.exp()]) }
        XCTAssertTrue(notLeaf.contains("only leaves can be written in place"), notLeaf)
    }

    func testCapturesDoNotNestAndAFunctionIsNotCalledInsideOne() throws {
        let f = try CapturedFunction.capture([try Tensor([1], shape: [1])]) { x in [try x[0].exp()] }
        XCTAssertTrue(message { _ = try CapturedFunction.capture([try Tensor([1], shape: [1])]) { x in
            _ = try CapturedFunction.capture(x) { y in [y[0]] }
            return [x[0]]
        } }.contains("capture cannot be nested"))
        XCTAssertTrue(message { _ = try CapturedFunction.capture([try Tensor([1], shape: [1])]) { x in try f(x) } }
            .contains("cannot be called inside a capture"))
    }

    /// Concurrent calls of one function run one at a time: each thread's results are those of
    /// its own inputs (eager reference).
    func testConcurrentCallsOfOneFunctionGiveEachCallersResults() throws {
        let f = try CapturedFunction.capture([try Tensor([0.5, 1, 1.5], shape: [3])]) { x in
            [try x[0].multiplying(x[0]).sin().sum(), try x[0].tanh()]
        }
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            do {
                for k in 0..<50 {
                    let v = Double(i) + Double(k) / 100
                    let x = try Tensor([v, v + 1, v + 2], shape: [3])
                    let got = try f([x])
                    let want = [try x.multiplying(x).sin().sum(), try x.tanh()]
                    if got.map(\.values) != want.map(\.values) { failures.add("thread \(i) step \(k)") }
                }
            } catch { failures.add("\(error)") }
        }
        XCTAssertEqual(failures.all, [])
    }

    func testParametersAreReadInPlaceAndConstantsKeepTheirCaptureValues() throws {
        let w = try Tensor([2], shape: [1])
        let f = try CapturedFunction.capture([try Tensor([1], shape: [1])]) { x in
            [try x[0].multiplying(w).adding(Tensor([10], shape: [1]))]
        }
        XCTAssertEqual(try f([try Tensor([3], shape: [1])])[0].values, [16])
        try w.replaceValues(with: Tensor([5], shape: [1]))
        XCTAssertEqual(try f([try Tensor([3], shape: [1])])[0].values, [25])
    }
}

/// Collects failure texts from several threads.
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return list }
}

extension CaptureTests {
    /// Inputs are read where the caller's tensors are; a function that writes into its input
    /// (copy_) writes the caller's tensor at each call, as the eager function does.
    func testInputsReadInPlaceAndWrittenInputs() throws {
        let f = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { x in [try x[0].multiplying(x[0]).exp()] }
        for v in [0.5, -1.0, 2.0, 0.5] {
            let x = try Tensor([v, v + 1], shape: [2])
            XCTAssertEqual(try f([x])[0].values, try x.multiplying(x).exp().values)
        }
        let g = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { x in
            let doubled = try withNoGrad { try x[0].multiplying(x[0].constant(2)) }
            try x[0].replaceValues(with: doubled)
            return [try x[0].adding(x[0].constant(1))]
        }
        let x = try Tensor([3, 4], shape: [2])
        XCTAssertEqual(try g([x])[0].values, [7, 9])
        XCTAssertEqual(x.values, [6, 8])
    }
}

extension CaptureTests {
    /// A fused group as large as the eager kernels split over threads is split too (each chunk
    /// with its own scratch); the bits are the eager ones at 1 and 2 threads.
    func testLargeFusedGroupsSplitOverThreads() throws {
        let before = Parallel.threadCount
        defer { try? Parallel.setThreadCount(before) }
        let n = Parallel.minimumParallelCount + 3000
        var rng = TestRNG(5)
        let values = (0..<n).map { _ in rng.uniform(-2, 2) }
        for threads in [1, 2] {
            try Parallel.setThreadCount(threads)
            for dtype in [DType.float64, .float32] {
                let x = try Tensor(values, shape: [n], dtype: dtype)
                try x.setRequiresGrad(true)
                let body = { (x: [Tensor]) throws -> [Tensor] in
                    let y = try (x[0] * x[0]).tanh().exp().relu() - x[0]
                    return [y] + (try Tensor.gradients(of: [y.sum()], withRespectTo: x).map { $0! })
                }
                let f = try CapturedFunction.capture([x], body)
                XCTAssertGreaterThan(f.stats.fusedSteps, 3)
                let x2 = try x.multiplying(x.constant(0.5)).detach()
                try x2.setRequiresGrad(true)
                XCTAssertEqual(try f([x2]).map { $0.values.map(\.bitPattern) }, try body([x2]).map { $0.values.map(\.bitPattern) }, "\(threads) threads, \(dtype)")
            }
        }
    }
}

extension CaptureTests {
    /// An optimizer step with no gradient to apply (found by the fuzzer: it trapped while
    /// recording) captures, and its replays count steps as the eager ones do.
    func testAnOptimizerStepWithoutGradientsInACapture() throws {
        let w = try Tensor([1, 2], shape: [2])
        try w.setRequiresGrad(true)
        let opt = try Adam(parameters: [w])
        let f = try CapturedFunction.capture([try Tensor([1], shape: [1])]) { x in
            try opt.step()
            return [try x[0].exp()]
        }
        _ = try f([try Tensor([2], shape: [1])])
        XCTAssertEqual(opt.steps, 2)
        XCTAssertEqual(w.values, [1, 2])
    }
}
