import XCTest
@testable import AutogradEngine

/// Checkpoints: a run stopped, saved, restored into fresh tensors and optimizers, and resumed ends
/// with the weights of the run that never stopped, bit for bit; a checkpoint that does not fit
/// changes nothing. The reference is the uninterrupted run (the same arithmetic, not restated).
final class CheckpointTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/ag-checkpoint-XXXXXX".utf8CString)
        let made: String? = template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
        }
        directory = try XCTUnwrap(made)
    }

    override func tearDownWithError() throws {
        for name in ["c.safetensors"] { unlink(directory + "/" + name) }
        rmdir(directory)
    }

    /// Two float32 parameters of a least-squares fit, made from fixed values.
    private func model() throws -> (w: Tensor, b: Tensor) {
        let w = try Tensor((0..<6).map { Double($0) * 0.37 - 1 }, shape: [3, 2], dtype: .float32)
        let b = try Tensor([0.5, -0.25], shape: [2], dtype: .float32)
        try w.setRequiresGrad(true)
        try b.setRequiresGrad(true)
        return (w, b)
    }

    private func train(_ steps: Range<Int>, _ w: Tensor, _ b: Tensor, _ opt: Optimizer) throws {
        let x = try Tensor((0..<24).map { sin(Double($0)) }, shape: [8, 3], dtype: .float32)
        let y = try Tensor((0..<16).map { cos(Double($0) * 0.7) }, shape: [8, 2], dtype: .float32)
        for step in steps {
            opt.learningRate = 0.05 / Double(1 + step)  // a schedule: the restored rate must not matter
            opt.zeroGrad()
            let r = try x.matmul(w) + b - y
            try (r * r).mean().backward()
            try opt.step()
        }
    }

    private func bits(_ t: Tensor) -> [UInt32] { t.values.map { Float($0).bitPattern } }

    private func checkResume(_ make: ([Tensor]) throws -> Optimizer, file: StaticString = #filePath, line: UInt = #line) throws {
        let whole = try model()
        let opt = try make([whole.w, whole.b])
        try train(0..<12, whole.w, whole.b, opt)

        let first = try model()
        let opt1 = try make([first.w, first.b])
        try train(0..<5, first.w, first.b, opt1)
        let path = directory + "/c.safetensors"
        try Checkpoint.save(to: path, parameters: [("w", first.w), ("b", first.b)], optimizer: opt1, metadata: [("step", "5")])

        let second = try model()
        try withNoGrad { try second.w.replaceValues(with: Tensor.zeros([3, 2], dtype: .float32)) }  // other values to restore over
        let opt2 = try make([second.w, second.b])
        try Checkpoint.load(from: path, parameters: [("w", second.w), ("b", second.b)], optimizer: opt2)
        XCTAssertEqual(opt2.steps, 5, file: file, line: line)
        XCTAssertEqual(bits(second.w), bits(first.w), "restored weights", file: file, line: line)
        try train(5..<12, second.w, second.b, opt2)
        XCTAssertEqual(bits(second.w), bits(whole.w), "resumed w equals the uninterrupted run's", file: file, line: line)
        XCTAssertEqual(bits(second.b), bits(whole.b), "resumed b equals the uninterrupted run's", file: file, line: line)
        // And the check can fail: without the optimizer's state the run ends elsewhere.
        let third = try model()
        let opt3 = try make([third.w, third.b])
        try Checkpoint.load(from: path, parameters: [("w", third.w), ("b", third.b)], optimizer: nil)
        try train(5..<12, third.w, third.b, opt3)
        if !opt3.stateSlotNames.isEmpty {
            XCTAssertNotEqual(bits(third.w), bits(whole.w), "a resume without the optimizer state differs", file: file, line: line)
        }
    }

    func testAdamResumesBitForBit() throws {
        try checkResume { try Adam(parameters: $0, learningRate: 0.05) }
    }

    func testAdamWResumesBitForBit() throws {
        try checkResume { try Adam.adamW(parameters: $0, learningRate: 0.05, weightDecay: 0.1) }
    }

    func testSGDWithMomentumResumesBitForBit() throws {
        try checkResume { try SGD(parameters: $0, learningRate: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01) }
    }

    func testPlainSGDResumesBitForBit() throws {
        try checkResume { try SGD(parameters: $0, learningRate: 0.05) }
    }

    func testACheckpointThatDoesNotFitChangesNothing() throws {
        let (w, b) = try model()
        let adam = try Adam(parameters: [w, b], learningRate: 0.05)
        try train(0..<2, w, b, adam)
        let path = directory + "/c.safetensors"
        try Checkpoint.save(to: path, parameters: [("w", w), ("b", b)], optimizer: adam)

        let (w2, b2) = try model()
        let before = bits(w2)
        let sgd = try SGD(parameters: [w2, b2], learningRate: 0.1, momentum: 0.5)
        XCTAssertThrowsError(try Checkpoint.load(from: path, parameters: [("w", w2), ("b", b2)], optimizer: sgd)) {
            XCTAssertEqual(($0 as? AutogradError).map { if case .argument = $0 { true } else { false } }, true, "\($0)")
            XCTAssertTrue("\($0)".contains("'adam'"), "\($0)")
        }
        XCTAssertEqual(bits(w2), before, "nothing written")
        let otherBetas = try Adam(parameters: [w2, b2], learningRate: 0.05, beta1: 0.8)
        XCTAssertThrowsError(try Checkpoint.load(from: path, parameters: [("w", w2), ("b", b2)], optimizer: otherBetas)) {
            XCTAssertTrue("\($0)".contains("beta1"), "\($0)")
        }
        XCTAssertEqual(bits(w2), before, "nothing written")
        let wide = try Tensor.zeros([3, 3], dtype: .float32)
        XCTAssertThrowsError(try Checkpoint.load(from: path, parameters: [("w", wide)], optimizer: nil)) {
            XCTAssertEqual($0 as? AutogradError, .shape("checkpoint: 'w' is saved with shape [3, 2], but the parameter has shape [3, 3]"))
        }
        XCTAssertThrowsError(try Checkpoint.load(from: path, parameters: [("v", w2)], optimizer: nil)) {
            XCTAssertEqual($0 as? AutogradError, .argument("checkpoint: no tensor named 'v' in the file"))
        }
        XCTAssertThrowsError(try Checkpoint.save(to: path, parameters: [("w", w)], optimizer: adam)) {
            XCTAssertTrue("\($0)".contains("parameter 1"), "b is missing from the names: \($0)")
        }
        XCTAssertThrowsError(try Checkpoint.save(to: path, parameters: [("w", w), ("b", b)], optimizer: nil,
                                                 metadata: [("autograd.x", "1")])) {
            XCTAssertTrue("\($0)".contains("autograd."), "\($0)")
        }
    }

    func testTheCheckpointIsASafetensorsFileWithTheOptimizersState() throws {
        let (w, b) = try model()
        let adam = try Adam(parameters: [w, b], learningRate: 0.05)
        try train(0..<3, w, b, adam)
        let path = directory + "/c.safetensors"
        try Checkpoint.save(to: path, parameters: [("w", w), ("b", b)], optimizer: adam, metadata: [("epoch", "2")])
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(Set(file.entries.map(\.name)), ["w", "b", "optimizer.w.exp_avg", "optimizer.w.exp_avg_sq", "optimizer.w.step",
                                                       "optimizer.b.exp_avg", "optimizer.b.exp_avg_sq", "optimizer.b.step"])
        XCTAssertEqual(file.metadataValue(forKey: "epoch"), "2")
        XCTAssertEqual(file.metadataValue(forKey: "autograd.optimizer"), "adam")
        XCTAssertEqual(file.metadataValue(forKey: "autograd.optimizer.beta2"), "0.999")
        XCTAssertEqual(try file.tensor(named: "optimizer.b.step").int64Values, [3])
        XCTAssertEqual(file.entry(named: "optimizer.w.exp_avg")?.dtype, .float64)
    }
}
