import XCTest
@testable import AutogradEngine

/// Tensors over caller memory (Tensor(borrowing:)), version counters for writes the engine
/// cannot see (markModified), writable pointers (mutableDataPointer) and read-only memory
/// (issue 19, parts 3 and 4). Expected values by hand.
final class SharedMemoryTests: XCTestCase {
    private func stateMessage(_ body: () throws -> Void) -> String? {
        do { try body() } catch let AutogradError.state(message) { return message } catch { return "other error: \(error)" }
        return nil
    }

    /// A release counter shared with onRelease closures.
    private final class Counter: @unchecked Sendable { var count = 0 }

    func testBorrowingSharesTheBuffer() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 4)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2, 3, 4], count: 4)
        let released = Counter()
        do {
            let t = try Tensor(borrowing: buf, shape: [2, 2], dtype: .float64, onRelease: { released.count += 1 })
            XCTAssertEqual(t.unsafeDataPointer, UnsafeRawPointer(buf))
            XCTAssertTrue(t.isBorrowedMemory)
            XCTAssertFalse(t.isReadOnly)
            buf[0] = 10
            XCTAssertEqual(t.values, [10, 2, 3, 4])
            XCTAssertEqual(try (t * t).values, [100, 4, 9, 16])
            XCTAssertEqual(t.version, 0)
            try t.replaceValues(with: Tensor([5, 6, 7, 8], shape: [2, 2]))
            XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: 4)), [5, 6, 7, 8])
            XCTAssertEqual(t.version, 1)
            t.markModified()
            XCTAssertEqual(t.version, 2)
            XCTAssertEqual(released.count, 0)
        }
        XCTAssertEqual(released.count, 1, "onRelease runs once, when the last tensor goes")
    }

    func testGraphKeepsTheMemoryUntilItGoes() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 3)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2, 3], count: 3)
        let released = Counter()
        let w = try Tensor([4, 5, 6], shape: [3])
        try w.setRequiresGrad(true)
        var loss: Tensor? = try w.multiplying(Tensor(borrowing: buf, shape: [3], dtype: .float64, onRelease: { released.count += 1 })).sum()
        XCTAssertEqual(released.count, 0, "the graph saved the borrowed tensor")
        try loss!.backward()
        XCTAssertEqual(w.grad?.values, [1, 2, 3])
        loss = nil
        XCTAssertEqual(released.count, 1)
    }

    func testMarkModifiedRefusesAStaleBackward() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 3)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2, 3], count: 3)
        let x = try Tensor(borrowing: buf, shape: [3], dtype: .float64)
        let w = try Tensor([4, 5, 6], shape: [3])
        try w.setRequiresGrad(true)
        let loss = try (w * x).sum()
        buf[1] = 20
        x.markModified()
        let message = stateMessage { try loss.backward() }
        XCTAssertTrue(message?.contains("'mul'") ?? false, message ?? "the stale backward ran")
    }

    func testMutableDataPointer() throws {
        let x = try Tensor([1, 2], shape: [2])
        let v = x.version
        let p = try x.mutableDataPointer()
        XCTAssertEqual(UnsafeRawPointer(p), x.unsafeDataPointer)
        XCTAssertEqual(x.version, v + 1)
        p!.assumingMemoryBound(to: Double.self)[1] = 7
        XCTAssertEqual(x.values, [1, 7])
        let w = try Tensor([1, 2], shape: [2])
        try w.setRequiresGrad(true)
        XCTAssertTrue(stateMessage { _ = try w.mutableDataPointer() }?.contains("requires grad") ?? false)
        XCTAssertTrue(stateMessage { _ = try (w * w).mutableDataPointer() }?.contains("result of 'mul'") ?? false)
        XCTAssertNil(stateMessage { _ = try withNoGrad { try w.mutableDataPointer() } })
        XCTAssertNil(try Tensor.zeros([0, 2]).mutableDataPointer())
    }

    func testReadOnlyMemoryIsNeverWritten() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 3)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2, 3], count: 3)
        let t = try Tensor(borrowing: buf, shape: [3], dtype: .float64, readOnly: true)
        XCTAssertTrue(t.isReadOnly)
        XCTAssertTrue(stateMessage { try t.replaceValues(with: Tensor([9, 9, 9], shape: [3])) }?.contains("read-only") ?? false)
        XCTAssertTrue(stateMessage { _ = try t.mutableDataPointer() }?.contains("read-only") ?? false)
        XCTAssertTrue(stateMessage { try t.detach().replaceValues(with: Tensor([9, 9, 9], shape: [3])) }?.contains("read-only") ?? false,
                      "an alias shares the flag")
        let x = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        let other = try Tensor.ones([3])
        XCTAssertTrue(stateMessage { _ = try x.batchNorm(runningMean: t, runningVar: other, training: true) }?.contains("running_mean") ?? false)
        try t.setRequiresGrad(true)
        XCTAssertTrue(stateMessage { _ = try SGD(parameters: [t], learningRate: 0.1) }?.contains("parameter 0 is read-only") ?? false)
        XCTAssertTrue(stateMessage { _ = try Adam(parameters: [t]) }?.contains("parameter 0 is read-only") ?? false)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: 3)), [1, 2, 3])
        XCTAssertEqual(t.version, 0)
    }

    /// A gradient over a caller's buffer that backward alone holds (a hook's replacement):
    /// backward must not reuse the buffer for the gradient it passes on (mul's fused rule
    /// computes dx = g * 3 in place into a gradient it owns alone) nor hand it out as x's .grad.
    func testBorrowedGradientIsNotWritten() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 3)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2, 3], count: 3)
        let released = Counter()
        let x = try Tensor([1, 1, 1], shape: [3])
        try x.setRequiresGrad(true)
        let y = try x * Tensor([3, 3, 3], shape: [3])
        try y.registerHook(GradHook(id: 1) { _ in
            try Tensor(borrowing: buf, shape: [3], dtype: .float64, onRelease: { released.count += 1 })
        })
        try y.sum().backward()
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: 3)), [1, 2, 3])
        XCTAssertEqual(x.grad?.values, [3, 6, 9])
        XCTAssertNotEqual(x.grad?.unsafeDataPointer, UnsafeRawPointer(buf))
        XCTAssertEqual(released.count, 1, "the replacement is gone with the pass")
    }

    /// A borrowed seed: unchanged, dx = seed * 3.
    func testBorrowedSeedIsNotWritten() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 3)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2, 3], count: 3)
        let x = try Tensor([1, 1, 1], shape: [3])
        try x.setRequiresGrad(true)
        let y = try x * Tensor([3, 3, 3], shape: [3])
        try y.backward(seed: Tensor(borrowing: buf, shape: [3], dtype: .float64))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: 3)), [1, 2, 3])
        XCTAssertEqual(x.grad?.values, [3, 6, 9])
    }

    func testFailuresDoNotRelease() throws {
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 4)
        defer { buf.deallocate() }
        let released = Counter()
        XCTAssertThrowsError(try Tensor(borrowing: UnsafeMutableRawPointer(buf) + 4, shape: [2], dtype: .float64,
                                        onRelease: { released.count += 1 }))
        XCTAssertThrowsError(try Tensor(borrowing: nil, shape: [2], dtype: .float32, onRelease: { released.count += 1 }))
        XCTAssertThrowsError(try Tensor(borrowing: buf, shape: [-1], dtype: .float64, onRelease: { released.count += 1 }))
        XCTAssertEqual(released.count, 0)
        // Accepted: no element, no pointer.
        let e = try Tensor(borrowing: nil, shape: [0, 3], dtype: .float64)
        XCTAssertNil(e.unsafeDataPointer)
    }

    /// Bool values over a caller's memory may hold bytes other than 0 and 1: non-zero is true
    /// everywhere (logical_not computed 1 - byte, which traps on 2).
    func testBoolBytesOtherThanOne() throws {
        let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: 3)
        defer { bytes.deallocate() }
        bytes.initialize(from: [1, 0, 2], count: 3)
        let b = try Tensor(borrowing: bytes, shape: [3], dtype: .bool)
        XCTAssertEqual(try b.logicalNot().values, [0, 1, 0])
        XCTAssertEqual(try b.logicalAnd(Tensor.ones([3], dtype: .bool)).values, [1, 0, 1])
        XCTAssertEqual(try b.sum().values, [2])
    }

    /// Captured functions: a write through a pointer cannot be replayed (refused while
    /// capturing); a replay that writes an input in place, or writes into an output, refuses
    /// read-only memory before anything runs.
    func testCapturedFunctionsRefuseReadOnlyMemory() throws {
        let refusedPointer = stateMessage {
            _ = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { ins in
                _ = try ins[0].mutableDataPointer()
                return [try ins[0].exp()]
            }
        }
        XCTAssertTrue(refusedPointer?.contains("captured") ?? false, refusedPointer ?? "the capture took a writable pointer")

        let buf = UnsafeMutablePointer<Double>.allocate(capacity: 2)
        defer { buf.deallocate() }
        buf.initialize(from: [1, 2], count: 2)
        let readOnly = try Tensor(borrowing: buf, shape: [2], dtype: .float64, readOnly: true)
        // f(x) writes exp(x) into x and returns x + 1.
        let f = try CapturedFunction.capture([try Tensor([0, 0], shape: [2])]) { ins in
            try ins[0].replaceValues(with: ins[0].exp())
            return [try ins[0] + Tensor([1, 1], shape: [2])]
        }
        let input = stateMessage { _ = try f([readOnly]) }
        XCTAssertTrue(input?.contains("input 0 (the function writes it in place) is read-only") ?? false, input ?? "the replay wrote read-only memory")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: 2)), [1, 2])

        let g = try CapturedFunction.capture([try Tensor([1, 2], shape: [2])]) { x in [try x[0].exp()] }
        let output = stateMessage { try g.call([try Tensor([0, 1], shape: [2])], into: [readOnly]) }
        XCTAssertTrue(output?.contains("output 0 is read-only") ?? false, output ?? "call(into:) wrote read-only memory")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buf, count: 2)), [1, 2])
        XCTAssertEqual(readOnly.version, 0)
    }
}
