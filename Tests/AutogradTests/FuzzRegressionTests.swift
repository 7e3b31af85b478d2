import XCTest
@testable import AutogradEngine

/// Findings of the C-API fuzzer (bindings/fuzz/regressions), pinned at the engine level.
final class FuzzRegressionTests: XCTestCase {
    func testArangeWithAHugeNegativeSpanIsEmptyNotATrap() throws {
        XCTAssertEqual(try Tensor.arange(start: 0, stop: -1e300, step: 1).shape, [0])
        XCTAssertEqual(try Tensor.arange(start: 1e300, stop: -1e300, step: 1).shape, [0])
    }

    func testALeafSeedingItsOwnBackwardWithCreateGraphLeavesNoCycle() throws {
        weak var weakLeaf: Tensor?
        do {
            let x = try Tensor([1, 2], shape: [2])
            try x.setRequiresGrad(true)
            weakLeaf = x
            try x.backward(seed: x, createGraph: true)
            XCTAssertFalse(x.grad === x, ".grad must not be the leaf itself")
            assertValues(x.grad!, [1, 2])
        }
        XCTAssertNil(weakLeaf, "the leaf outlived every reference: a leaf -> grad -> leaf cycle")
    }

    /// bindings/fuzz/regressions/leaf-requires-grad-dropped-then-create-graph-leaks: a leaf used
    /// while requiring grad, then switched off, was saved strongly by the create_graph backward
    /// rules that built its own `.grad`: leaf -> .grad -> node -> leaf.
    func testALeafThatStoppedRequiringGradLeavesNoCycleThroughItsGrad() throws {
        weak var weakLeaf: Tensor?
        do {
            let x = try Tensor.ones([2, 2])
            try x.setRequiresGrad(true)
            weakLeaf = x
            let x2 = try x.matmul(x)
            let y = try x2.matmul(x2).sum()
            try x.setRequiresGrad(false)
            try y.backward(createGraph: true)
            // d/dX sum(X^4) = sum over k of (X^T)^k J (X^T)^(3-k); with X = J (all ones, 2x2),
            // J^k = 2^(k-1) J, every term is 8 J: 32 everywhere.
            assertValues(x.grad!, [32, 32, 32, 32])
        }
        XCTAssertNil(weakLeaf, "the leaf outlived every reference: a leaf -> grad -> node -> leaf cycle")
    }

    func testNoOpShapeOpsReturnANewTensor() throws {
        let x = try Tensor([1, 2, 3], shape: [3])
        XCTAssertFalse(try x.reshaped([3]) === x)
        XCTAssertFalse(try x.expanded(to: [3]) === x)
        XCTAssertFalse(try x.permuted([0]) === x)
        XCTAssertFalse(try x.squeezed() === x)
        let y = try x.reshaped([3])
        try y.setRequiresGrad(true)
        XCTAssertFalse(x.requiresGrad, "changing the result must not change its input")
    }
}

extension FuzzRegressionTests {
    func testSliceOfAnEmptyTensorWithAHugeAxisDoesNotListIndices() throws {
        let x = try Tensor.zeros([0, 1 << 40])
        let y = try x.slice(axis: 1, start: 0, stop: Int.max, step: 3)
        XCTAssertEqual(y.shape, [0, ((1 << 40) - 1) / 3 + 1])
        XCTAssertEqual(try Tensor.zeros([2, 0]).slice(axis: 0, start: 0, stop: 2, step: 1).shape, [2, 0])
    }
}

extension FuzzRegressionTests {
    func testLogSumExpOverAnEmptyAxisIsMinusInfinity() throws {
        let x = try Tensor.zeros([2, 0])
        let l = try x.logSumExp(axes: [1])
        XCTAssertEqual(l.shape, [2])
        XCTAssertEqual(l.values, [-Double.infinity, -Double.infinity])  // log of an empty sum
        XCTAssertEqual(try x.softmax(axis: 1).shape, [2, 0])
        XCTAssertTrue(try Tensor.zeros([0, 0]).crossEntropy(labels: []).item().isNaN)  // mean of nothing
    }
}

extension FuzzRegressionTests {
    func testConcatExtentsThatAddPastInt64AreRefused() throws {
        let a = try Tensor.zeros([0, Int.max]), b = try Tensor.zeros([0, 2])
        XCTAssertThrowsError(try Tensor.concat([a, b], axis: 1)) { error in
            guard case AutogradError.shape = error else { return XCTFail("expected a shape error, got \(error)") }
        }
    }
}

extension FuzzRegressionTests {
    func testXavierFansThatAddPastInt64AreAnAllocationErrorNotATrap() {
        // fan_in + fan_out = 1 + Int.max: summed in Double; the allocation then fails cleanly.
        XCTAssertThrowsError(try Initializer.make(.xavierUniform, shape: [Int.max, 1], seed: 1)) { error in
            guard case AutogradError.outOfMemory = error else { return XCTFail("expected out of memory, got \(error)") }
        }
    }
}
