import XCTest
@testable import AutogradEngine

/// In-place writes (Tensor.replaceValues, optimizer steps) against version counters, and
/// gradients that own their memory (issue 14, items 11 and 12). Expected values by hand.
final class InPlaceTests: XCTestCase {
    private func stateMessage(_ body: () throws -> Void) -> String? {
        do { try body() } catch let AutogradError.state(message) { return message } catch { return "other error: \(error)" }
        return nil
    }

    /// sum(x * x) at x = 1, 2, 3; SGD with lr 1 moves x to -x; the retained graph must refuse.
    func testRetainedGraphRefusesAfterOptimizerStep() throws {
        for n in [3, 5000] {
            let x = try Tensor((0..<n).map { Double($0 % 3 + 1) }, shape: [n])
            try x.setRequiresGrad(true)
            let loss = try (x * x).sum()
            try loss.backward(retainGraph: true)
            let opt = try SGD(parameters: [x], learningRate: 1)
            try opt.step()
            XCTAssertEqual(Array(x.values.prefix(3)), [-1, -2, -3])
            let message = stateMessage { try loss.backward(retainGraph: true) }
            XCTAssertNotNil(message, "n = \(n): the stale backward ran")
            XCTAssertTrue(message?.contains("'mul'") ?? false, message ?? "")
            XCTAssertEqual(Array(x.grad!.values.prefix(3)), [2, 4, 6], "nothing accumulated by the refused pass")
            XCTAssertNotNil(stateMessage { _ = try Tensor.gradients(of: [loss], withRespectTo: [x], retainGraph: true) })
        }
    }

    func testReplaceValues() throws {
        let m = try Tensor.zeros([2, 2])
        let alias = m.detach()
        try m.replaceValues(with: try Tensor([1, 2], shape: [2]))
        XCTAssertEqual(alias.values, [1, 2, 1, 2])
        XCTAssertEqual(m.storage.version, 1)
        XCTAssertThrowsError(try m.replaceValues(with: try Tensor([1, 2, 3], shape: [3])))
        XCTAssertThrowsError(try m.replaceValues(with: try Tensor.zeros([2, 2], dtype: .float32)))
        XCTAssertEqual(m.storage.version, 1, "a refused write bumps nothing")
        let w = try Tensor([1, 2], shape: [2])
        try w.setRequiresGrad(true)
        XCTAssertNotNil(stateMessage { try w.replaceValues(with: try Tensor([0, 0], shape: [2])) })
        try withNoGrad { try w.replaceValues(with: try Tensor([5, 6], shape: [2])) }
        XCTAssertEqual(w.values, [5, 6])
        let y = try w * 2
        XCTAssertNotNil(stateMessage { try withNoGrad { try y.replaceValues(with: try Tensor([0, 0], shape: [2])) } })
    }

    /// A gradient that passes through unchanged (reshape) with the parameter as the seed: .grad
    /// must have memory of its own, so an optimizer step leaves it as it was.
    func testGradDoesNotAliasSeedOrParameter() throws {
        let p = try Tensor([2, 4], shape: [2])
        try p.setRequiresGrad(true)
        try p.reshaped([2]).backward(seed: p)
        let g = p.grad!
        XCTAssertFalse(g.storage === p.storage)
        try SGD(parameters: [p], learningRate: 0.5).step()
        XCTAssertEqual(p.values, [1, 2])
        XCTAssertEqual(g.values, [2, 4])
        let a = try Tensor([1, 2], shape: [2]), b = try Tensor([3, 4], shape: [2])
        try a.setRequiresGrad(true)
        try b.setRequiresGrad(true)
        let seed = try Tensor([10, 20], shape: [2])
        try (a + b).backward(seed: seed)
        XCTAssertFalse(a.grad!.storage === b.grad!.storage)
        XCTAssertFalse(a.grad!.storage === seed.storage)
    }
}
