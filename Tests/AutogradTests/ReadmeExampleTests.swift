import XCTest
import Autograd

/// The Swift snippet of the README, kept compiling and correct.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeSwiftSnippet() throws {
        let x = try Tensor([1, -2, 3, 0.5, 1, -1], shape: [2, 3])
        let w = try Tensor([1, 2, -1, 0.5, 2, -3], shape: [3, 2])
        try x.setRequiresGrad(true)
        try w.setRequiresGrad(true)
        let f = try (x.matmul(w).relu() * 2).sum()
        try f.backward()
        XCTAssertEqual(w.grad!.values, [2, 1, -4, 2, 6, -2])  // xᵀ(2·mask), by hand

        let y = try (x ** 3 + 2 * x).sum()
        let g = try Tensor.gradients(of: [y], withRespectTo: [x], createGraph: true)[0]!
        XCTAssertEqual(g.values, [1, -2, 3, 0.5, 1, -1].map { 3 * $0 * $0 + 2 })  // 3x² + 2
    }
}
