import XCTest
@testable import AutogradEngine

final class SemanticsTests: XCTestCase {
    func testGradientsAccumulateOverPathsAndCallsUntilZeroGrad() throws {
        let x = try Tensor([1, 2, 3], shape: [3])
        try x.setRequiresGrad(true)
        // y = sum(x*x + x): dy/dx = 2x + 1, reached by three paths into x.
        let y = try (x * x + x).sum()
        try y.backward(retainGraph: true)
        assertValues(x.grad!, [3, 5, 7])
        try y.backward()
        assertValues(x.grad!, [6, 10, 14])
        x.zeroGrad()
        XCTAssertNil(x.grad)
        let z = try (x * 3).sum()
        try z.backward()
        assertValues(x.grad!, [3, 3, 3])
    }

    func testNonScalarRootNeedsASeed() throws {
        let x = try Tensor([1, 2], shape: [2])
        try x.setRequiresGrad(true)
        let y = try x * x
        XCTAssertThrowsError(try y.backward()) { error in
            guard case AutogradError.state = error else { return XCTFail("expected a state error, got \(error)") }
        }
        try y.backward(seed: Tensor([1, 10], shape: [2]))
        assertValues(x.grad!, [2, 40])
        XCTAssertThrowsError(try (x * 2).backward(seed: Tensor([1, 2, 3], shape: [3])))
    }

    func testSecondBackwardThroughAReleasedGraphIsAStateError() throws {
        let x = try Tensor([2], shape: [])
        try x.setRequiresGrad(true)
        let y = try x.exp() * x
        try y.backward()
        XCTAssertThrowsError(try y.backward()) { error in
            guard case AutogradError.state(let message) = error else { return XCTFail("got \(error)") }
            XCTAssertTrue(message.contains("retain"))
        }
    }

    func testOpsOnConstantsRecordNothing() throws {
        let a = try Tensor([1, 2], shape: [2]), b = try Tensor([3, 4], shape: [2])
        let c = try a * b + a
        XCTAssertFalse(c.requiresGrad)
        XCTAssertNil(c.gradFn)
        XCTAssertThrowsError(try c.sum().backward())
    }

    func testNoGradRecordsNothingAndIsPerThread() throws {
        let x = try Tensor([1], shape: [1])
        try x.setRequiresGrad(true)
        let y = try withNoGrad { try x * 2 }
        XCTAssertFalse(y.requiresGrad)
        XCTAssertTrue(GradMode.isEnabled)
        final class Seen: @unchecked Sendable { var enabled = false }
        let seen = Seen()
        try withNoGrad {
            let done = DispatchSemaphore(value: 0)
            Thread { seen.enabled = GradMode.isEnabled; done.signal() }.start()
            done.wait()
            XCTAssertFalse(GradMode.isEnabled)
            XCTAssertFalse(try (x + 1).requiresGrad)
        }
        XCTAssertTrue(seen.enabled, "grad mode leaked from one thread into another")
    }

    func testRequiresGradOnlyChangesOnLeaves() throws {
        let x = try Tensor([1], shape: [1])
        try x.setRequiresGrad(true)
        let y = try x * 2
        XCTAssertThrowsError(try y.setRequiresGrad(false))
        let d = y.detach()
        XCTAssertFalse(d.requiresGrad)
        XCTAssertTrue(d.isLeaf)
        assertValues(d, [2])
    }

    func testBackwardFromALeafAddsTheSeed() throws {
        let x = try Tensor([5], shape: [])
        try x.setRequiresGrad(true)
        try x.backward()
        assertValues(x.grad!, [1])
    }

    func testCreateGraphGivesSecondDerivatives() throws {
        // y = x^3: dy/dx = 3x^2, d2y/dx2 = 6x.
        let x = try Tensor([1.5], shape: [])
        try x.setRequiresGrad(true)
        let y = try x * x * x
        try y.backward(createGraph: true)
        let g = x.grad!
        assertValues(g, [3 * 1.5 * 1.5])
        XCTAssertTrue(g.requiresGrad)
        x.zeroGrad()
        try g.backward()
        assertValues(x.grad!, [6 * 1.5])
    }

    func testDeepChainBackwardAndTeardownDoNotRecurse() throws {
        let x = try Tensor([0.5], shape: [])
        try x.setRequiresGrad(true)
        var y = x
        let n = 200_000
        for _ in 0..<n { y = try y * 1.0 + 0.0 }
        try y.backward()
        assertValues(x.grad!, [1])
        y = x  // drops the whole chain; must not overflow the stack
        XCTAssertTrue(y === x)
    }

    func testFreeingGraphReleasesSavedTensors() throws {
        weak var weakSaved: Tensor?
        do {
            let x = try Tensor([1, 2], shape: [2])
            try x.setRequiresGrad(true)
            let h = try x.exp()
            weakSaved = h
            let y = try (h * h).sum()
            try y.backward()
            _ = y
        }
        XCTAssertNil(weakSaved, "the graph kept a saved tensor alive after every reference was dropped")
    }
}
