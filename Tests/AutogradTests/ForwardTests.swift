import XCTest
@testable import AutogradEngine

/// Forward values against hand-computed results.
final class ForwardTests: XCTestCase {
    func testElementwiseOpsWithBroadcasting() throws {
        let a = try Tensor([1, 2, 3], shape: [3, 1])
        let b = try Tensor([10, 20, 30, 40], shape: [1, 4])
        let s = try a + b
        XCTAssertEqual(s.shape, [3, 4])
        assertValues(s, [11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43])
        assertValues(try a - b, [-9, -19, -29, -39, -8, -18, -28, -38, -7, -17, -27, -37])
        let m = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3]) * Tensor([2, 0.5, -1], shape: [3])
        assertValues(m, [2, 1, -3, 8, 2.5, -6])
        assertValues(try Tensor([1, 4], shape: [2]) / 2.0, [0.5, 2])
        assertValues(try 1.0 / Tensor([4, -8], shape: [2]), [0.25, -0.125])
        assertValues(try -Tensor([1, -2], shape: [2]), [-1, 2])
    }

    func testUnaryOps() throws {
        let x = try Tensor([-1, 0, 0.5, 2], shape: [4])
        assertValues(try x.exp(), [0.36787944117144233, 1, 1.6487212707001282, 7.38905609893065])
        assertValues(try x.relu(), [0, 0, 0.5, 2])
        assertValues(try Tensor([1, 2.718281828459045, 10], shape: [3]).log(), [0, 1, 2.302585092994046])
        let y = try Tensor([-1, 0.5], shape: [2], dtype: .float32).exp()
        XCTAssertEqual(y.dtype, .float32)
        assertValues(y, [0.36787944117144233, 1.6487212707001282], tol: 1e-6)
    }

    func testReductionsOverAxes() throws {
        let x = try Tensor((0..<24).map(Double.init), shape: [2, 3, 4])
        assertValues(try x.sum(), [276])
        let s0 = try x.sum(axes: [0])
        XCTAssertEqual(s0.shape, [3, 4])
        assertValues(s0, (0..<12).map { Double($0 + $0 + 12) })
        let s12 = try x.sum(axes: [1, 2], keepDims: true)
        XCTAssertEqual(s12.shape, [2, 1, 1])
        assertValues(s12, [66, 210])
        let sNeg = try x.sum(axes: [-2])
        XCTAssertEqual(sNeg.shape, [2, 4])
        assertValues(sNeg, [12, 15, 18, 21, 48, 51, 54, 57])
        let m = try x.mean(axes: [0, 2])
        XCTAssertEqual(m.shape, [3])
        assertValues(m, [7.5, 11.5, 15.5])  // e.g. (0+1+2+3+12+13+14+15)/8
        XCTAssertTrue(try Tensor([], shape: [0]).mean().values[0].isNaN)
    }

    func testMatmulMatchesPlainLoops() throws {
        var rng = TestRNG(7)
        for dtype in [DType.float64, .float32] {
            let (m, k, n) = (5, 7, 3)
            let av = (0..<m * k).map { _ in rng.uniform(-1, 1) }
            let bv = (0..<k * n).map { _ in rng.uniform(-1, 1) }
            var expected = [Double](repeating: 0, count: m * n)
            for i in 0..<m { for j in 0..<n { for p in 0..<k { expected[i * n + j] += av[i * k + p] * bv[p * n + j] } } }
            let c = try Tensor(av, shape: [m, k], dtype: dtype).matmul(Tensor(bv, shape: [k, n], dtype: dtype))
            XCTAssertEqual(c.shape, [m, n])
            assertValues(c, expected, tol: dtype == .float64 ? 1e-12 : 1e-5)
        }
        XCTAssertThrowsError(try Tensor.zeros([2, 3]).matmul(Tensor.zeros([4, 5])))
        XCTAssertThrowsError(try Tensor.zeros([3]).matmul(Tensor.zeros([4, 2])))
        XCTAssertThrowsError(try Tensor.zeros([]).matmul(Tensor.zeros([4, 2])))
        assertValues(try Tensor.zeros([2, 0]).matmul(Tensor.zeros([0, 3])), [0, 0, 0, 0, 0, 0])
    }

    func testDTypeMismatchIsAnError() {
        XCTAssertThrowsError(try Tensor([1], shape: [1], dtype: .float32) + Tensor([1], shape: [1])) { error in
            guard case AutogradError.dtype = error else { return XCTFail("expected a dtype error, got \(error)") }
        }
    }
}
