import XCTest
@testable import AutogradEngine

/// A deterministic pseudo-random generator for test inputs (SplitMix64).
struct TestRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
    }
    /// A float64 leaf of `shape` requiring grad, values in [lo, hi) and at least `gap` from 0
    /// (keeps relu/abs away from their kinks and log/div away from poles).
    mutating func tensor(_ shape: [Int], _ lo: Double = -2, _ hi: Double = 2, gap: Double = 0.1, requiresGrad: Bool = true) -> Tensor {
        let n = shape.reduce(1, *)
        let values = (0..<n).map { _ -> Double in
            var v = uniform(lo, hi)
            while abs(v) < gap { v = uniform(lo, hi) }
            return v
        }
        let t = try! Tensor(values, shape: shape)
        try! t.setRequiresGrad(requiresGrad)
        return t
    }
}

/// Asserts that gradcheck passes for f at inputs.
func assertGradCheck(_ inputs: [Tensor], _ label: String, file: StaticString = #filePath, line: UInt = #line,
                     _ f: ([Tensor]) throws -> Tensor) {
    do {
        let r = try GradCheck.check(inputs, f)
        XCTAssertTrue(r.passed, "\(label): \(r)", file: file, line: line)
    } catch {
        XCTFail("\(label): threw \(error)", file: file, line: line)
    }
}

func assertValues(_ t: Tensor, _ expected: [Double], tol: Double = 1e-12, _ label: String = "",
                  file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(t.count, expected.count, "\(label): element count", file: file, line: line)
    for (i, (a, b)) in zip(t.values, expected).enumerated() {
        XCTAssertEqual(a, b, accuracy: tol * max(1, abs(b)), "\(label): element \(i)", file: file, line: line)
    }
}
