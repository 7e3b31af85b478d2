import XCTest
@testable import AutogradEngine

/// Every op's gradient against central finite differences, broadcast patterns included.
final class GradientTests: XCTestCase {
    var rng = TestRNG(42)

    func testBinaryOpsWithBroadcasting() {
        let ops: [(String, (Tensor, Tensor) throws -> Tensor)] = [
            ("add", { try $0 + $1 }), ("sub", { try $0 - $1 }),
            ("mul", { try $0 * $1 }), ("div", { try $0 / $1 }),
        ]
        let shapes: [([Int], [Int])] = [([3, 4], [3, 4]), ([3, 1], [1, 4]), ([2, 3], [3]), ([2, 3, 4], [4]),
                                        ([], [2, 3]), ([2, 3], []), ([], [])]
        for (name, op) in ops {
            for (sa, sb) in shapes {
                let a = rng.tensor(sa), b = rng.tensor(sb, gap: 0.5)
                assertGradCheck([a, b], "\(name) \(sa) with \(sb)") { try op($0[0], $0[1]) }
            }
        }
    }

    func testGradientOnlyToInputsThatRequireIt() throws {
        let a = rng.tensor([3]), b = rng.tensor([3], requiresGrad: false)
        assertGradCheck([a, b], "mul with a constant") { try $0[0] * $0[1] }
        let y = try (a * b).sum()
        try y.backward()
        XCTAssertNil(b.grad)
        assertValues(a.grad!, b.values)
    }

    func testScalarOperands() {
        let x = rng.tensor([2, 3], gap: 0.5)
        assertGradCheck([x], "x * 2 + 1") { try $0[0] * 2 + 1 }
        assertGradCheck([x], "3 - x / 4") { try 3 - $0[0] / 4 }
        assertGradCheck([x], "2 / x") { try 2 / $0[0] }
    }

    func testUnaryOps() {
        let x = rng.tensor([3, 4])
        let positive = rng.tensor([3, 4], 0.2, 3)
        assertGradCheck([x], "neg") { try -$0[0] }
        assertGradCheck([x], "exp") { try $0[0].exp() }
        assertGradCheck([positive], "log") { try $0[0].log() }
        assertGradCheck([x], "relu") { try $0[0].relu() }
    }

    func testReductionsOverEveryAxisSubsetOfARank3Tensor() {
        let x = rng.tensor([2, 3, 4])
        let subsets: [[Int]] = [[], [0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2], [-1], [-3, -1]]
        for axes in subsets {
            for keep in [false, true] {
                assertGradCheck([x], "sum \(axes) keepdims \(keep)") { try $0[0].sum(axes: axes, keepDims: keep) }
                assertGradCheck([x], "mean \(axes) keepdims \(keep)") { try $0[0].mean(axes: axes, keepDims: keep) }
            }
        }
    }

    func testShapeOps() {
        let x = rng.tensor([2, 3, 4])
        assertGradCheck([x], "reshape") { try $0[0].reshaped([6, 4]) }
        assertGradCheck([x], "permute") { try $0[0].permuted([2, 0, 1]) }
        assertGradCheck([x], "transpose") { try $0[0].transposed(0, 2) }
        let y = rng.tensor([3, 1])
        assertGradCheck([y], "expand") { try $0[0].expanded(to: [2, 3, 5]) }
    }

    func testMatmul() {
        let a = rng.tensor([4, 3]), b = rng.tensor([3, 5])
        assertGradCheck([a, b], "matmul") { try $0[0].matmul($0[1]) }
        assertGradCheck([a, b], "matmul into relu") { try $0[0].matmul($0[1]).relu().sum(axes: [1]) }
    }

    func testCompositeGraphWithSharedSubexpressions() {
        let x = rng.tensor([2, 3]), w = rng.tensor([3, 2]), c = rng.tensor([2])
        assertGradCheck([x, w, c], "mlp-like") { t in
            let h = try t[0].matmul(t[1]) + t[2]
            let y = try (h * h).exp() / (h.relu() + 1)
            return try (y + h).mean(axes: [0])
        }
    }

    func testExampleFromTheIssueByHand() throws {
        // f(x, W) = sum(relu(x @ W) * 2): df/dW = xᵀ (2·mask), df/dx = (2·mask) Wᵀ.
        let x = try Tensor([1, -2, 3, 0.5, 1, -1], shape: [2, 3])
        let w = try Tensor([1, 2, -1, 0.5, 2, -3], shape: [3, 2])
        try x.setRequiresGrad(true)
        try w.setRequiresGrad(true)
        let f = try ((x.matmul(w)).relu() * 2).sum()
        XCTAssertEqual(try f.item(), 27)  // x@W = [[9, -8], [-2.5, 4.5]]
        try f.backward()
        assertValues(w.grad!, [2, 1, -4, 2, 6, -2])
        assertValues(x.grad!, [2, -2, 4, 4, 1, -6])
    }
}
