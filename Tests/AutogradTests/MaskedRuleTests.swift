import XCTest
@testable import AutogradEngine

/// Rules that mask (the gradient reaches some elements and not others) select: an infinite or
/// nan incoming gradient stays out of the elements it does not reach, as in PyTorch (issue 14,
/// item 15). And pow's derivatives at base 0 and exponent 0, to second order (item 17).
/// Expected values are derived by hand (and agree with PyTorch 2.13 float64 where noted).
final class MaskedRuleTests: XCTestCase {
    /// The ways a backward pass runs a rule: backward and capture (the fused loop, where the
    /// op has one) and create_graph (the derivative over tensors).
    enum Path: String, CaseIterable { case backward, capture, createGraph }

    /// The gradients of f's inputs (leaves of `values` and `shapes`) for the seed `g`, along `path`.
    func gradients(_ values: [[Double]], shapes: [[Int]]? = nil, seed g: [Double], dtype: DType = .float64, _ path: Path,
                   _ f: ([Tensor]) throws -> Tensor) throws -> [[Double]] {
        let xs = try values.enumerated().map { k, v -> Tensor in
            let t = try Tensor(v, shape: shapes?[k] ?? [v.count], dtype: dtype)
            try t.setRequiresGrad(true)
            return t
        }
        let out = try f(xs)
        let seed = try Tensor(g, shape: out.shape, dtype: dtype)
        switch path {
        case .backward:
            try out.backward(seed: seed)
            return xs.map { $0.grad?.values ?? [] }
        case .capture, .createGraph:
            return try Tensor.gradients(of: [out], withRespectTo: xs, seeds: [seed], createGraph: path == .createGraph)
                .map { $0!.values }
        }
    }

    /// Exact equality with `expected` rounded to `dtype`, nan equal to nan.
    func assertSame(_ got: [Double], _ expected: [Double], _ dtype: DType, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        let rounded = expected.map { dtype == .float32 ? Double(Float($0)) : $0 }
        let same = got.count == rounded.count && zip(got, rounded).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
        XCTAssertTrue(same, "\(label): got \(got), expected \(expected)", file: file, line: line)
    }

    /// Runs f on every path and dtype and compares each input's gradient with `expected`.
    func check(_ name: String, _ values: [[Double]], shapes: [[Int]]? = nil, seed: [Double], expected: [[Double]],
               file: StaticString = #filePath, line: UInt = #line, _ f: @escaping ([Tensor]) throws -> Tensor) throws {
        for dtype in [DType.float32, .float64] {
            for path in Path.allCases {
                let got = try gradients(values, shapes: shapes, seed: seed, dtype: dtype, path, f)
                for k in expected.indices {
                    assertSame(got[k], expected[k], dtype, "\(name) \(dtype) \(path.rawValue): d/d input \(k)", file: file, line: line)
                }
            }
        }
    }

    static let inf = Double.infinity, nan = Double.nan

    // MARK: - Item 15

    /// The cases: sqrt'(0) = inf reaches the masked elements as 0 (PyTorch: [0, 0.25]).
    func testSqrtOfAMaskedValueGivesZeroToTheElementsNotSelected() throws {
        try check("sqrt(maximum(x, 0))", [[-1, 4]], seed: [1, 1], expected: [[0, 0.25]]) { x in
            try x[0].maximum(x[0].constant(0)).sqrt()
        }
        try check("sqrt(where(x > 0, x, 0))", [[-1, 4]], seed: [1, 1], expected: [[0, 0.25]]) { x in
            try Tensor.where(withNoGrad { try x[0].gt(x[0].constant(0)) }, x[0], x[0].constant(0)).sqrt()
        }
        try check("sqrt(relu(x))", [[-1, 4]], seed: [1, 1], expected: [[0, 0.25]]) { x in try x[0].relu().sqrt() }
        try check("sqrt(-minimum(x, 0))", [[1, -4]], seed: [1, 1], expected: [[0, -0.25]]) { x in
            try x[0].minimum(x[0].constant(0)).negated().sqrt()
        }
        // The maximum is 0, where sqrt' is inf: it goes to the maximum's element only. (-min(x) is
        // -0 here, where sqrt' is -inf, so the minimum's element gets +inf; PyTorch the same.)
        try check("sqrt(max(x))", [[-1, 0]], seed: [1], expected: [[0, .infinity]]) { x in try x[0].max().sqrt() }
        try check("sqrt(-min(x))", [[1, 0]], seed: [1], expected: [[0, .infinity]]) { x in try x[0].min().negated().sqrt() }
    }

    func testReluAndAbsSelect() throws {
        let inf = MaskedRuleTests.inf, nan = MaskedRuleTests.nan
        // relu(nan) is nan and passes its gradient on (PyTorch: threshold_backward, x <= 0 ? 0 : g).
        try check("relu", [[-1, 0, 2, -3, 5, nan]], seed: [inf, nan, 5, -inf, nan, 3], expected: [[0, 0, 5, 0, nan, 3]]) { try $0[0].relu() }
        for dtype in [DType.float32, .float64] {
            XCTAssertTrue(try Tensor([nan, -1, 2], shape: [3], dtype: dtype).relu().values[0].isNaN, "relu(nan), \(dtype)")
        }
        // abs'(0) = 0 by selection (PyTorch multiplies by sgn(0) = 0 and gives nan for an infinite g).
        try check("abs", [[0, -2, 3, 0, -1]], seed: [inf, 4, nan, nan, -inf], expected: [[0, -4, nan, 0, inf]]) { try $0[0].abs() }
    }

    func testMaximumAndMinimumSelectAndSplitTiesEvenly() throws {
        let inf = MaskedRuleTests.inf, nan = MaskedRuleTests.nan
        // Ties give g / 2 to each side (PyTorch: where(a == b, g / 2, g), masked where the other wins).
        // A nan operand gives g to both sides (neither compares less), as PyTorch.
        try check("maximum", [[1, 2, 3, 4, nan], [2, 2, 1, 4, 1]], seed: [inf, inf, nan, 3, 5],
                  expected: [[0, inf, nan, 1.5, 5], [inf, inf, 0, 1.5, 5]]) { try $0[0].maximum($0[1]) }
        try check("minimum", [[1, 2, 3, 4, nan], [2, 2, 1, 4, 1]], seed: [nan, -inf, inf, 3, 5],
                  expected: [[nan, -inf, 0, 1.5, 5], [0, -inf, inf, 1.5, 5]]) { try $0[0].minimum($0[1]) }
        // Broadcast: b's gradient is the sum over the elements of a it met.
        try check("maximum broadcast", [[1, 5, 3], [3]], shapes: [[3], []], seed: [inf, 1, 2],
                  expected: [[0, 1, 1], [inf]]) { try $0[0].maximum($0[1]) }
    }

    func testWhereSelects() throws {
        let inf = MaskedRuleTests.inf, nan = MaskedRuleTests.nan
        try check("where", [[1, 2, 3, 4], [5, 6, 7, 8]], seed: [inf, nan, -inf, 2], expected: [[inf, 0, -inf, 0], [0, nan, 0, 2]]) { x in
            try Tensor.where(Tensor([1, 0, 1, 0], shape: [4]), x[0], x[1])
        }
    }

    func testMaxAndMinReductionsSelect() throws {
        let inf = MaskedRuleTests.inf
        try check("max", [[1, 3, 3, 2]], seed: [inf], expected: [[0, inf, inf, 0]]) { try $0[0].max() }
        try check("min over axis 1", [[1, 3, 4, 2]], shapes: [[2, 2]], seed: [-inf, inf], expected: [[-inf, 0, 0, inf]]) {
            try $0[0].min(axes: [1])
        }
    }

    // MARK: - pow at base 0 and exponent 0 (items 15 and 17)

    /// First derivatives: d/da = 0 where b == 0 (any g); d/db = 0 where a == 0 and b >= 0 (any g),
    /// ln(0)·0^b = -inf where a == 0 and b < 0 (PyTorch: the same, by its mask a == 0 & b >= 0).
    func testPowFirstDerivativesAtZero() throws {
        let inf = MaskedRuleTests.inf
        try check("pow", [[0, 0, 0, 2, 0], [0, 2, -1, 0, 1]], seed: [inf, inf, 1, 1, 1],
                  expected: [[0, .nan, -inf, 0, 1], [0, 0, -inf, log(2), 0]]) { try $0[0].pow($0[1]) }
    }

    /// A derivative taken as 0 stays 0 at second order even when the seed is infinite: the seed
    /// is selected away before it meets the formula (PyTorch: nan at both orders).
    func testPowMaskedDerivativesStayZeroForAnInfiniteSeed() throws {
        for dtype in [DType.float32, .float64] {
            for (base, exponent) in [(0.0, 1.0), (0.0, 0.0), (3.0, 0.0)] {
                let a = try Tensor(scalar: base, dtype: dtype), b = try Tensor(scalar: exponent, dtype: dtype)
                try a.setRequiresGrad(true); try b.setRequiresGrad(true)
                let seed = try Tensor(scalar: .infinity, dtype: dtype)
                // d/db where a == 0 (b >= 0), d/da where b == 0.
                let k = base == 0 && exponent > 0 ? 1 : 0
                let first = try Tensor.gradients(of: [a.pow(b)], withRespectTo: [a, b], seeds: [seed], createGraph: true)[k]!
                XCTAssertEqual(try first.item(), 0, "(\(base)) ** (\(exponent)), \(dtype): first derivative \(k)")
                if base == 0 && exponent == 0 {
                    XCTAssertEqual(try Tensor.gradients(of: [a.pow(b)], withRespectTo: [b], seeds: [seed])[0]!.item(), 0)
                }
                let second = try Tensor.gradients(of: [first], withRespectTo: [a, b], allowUnused: true)
                for (j, d) in second.enumerated() {
                    XCTAssertEqual(try d?.item() ?? 0, 0, "(\(base)) ** (\(exponent)), \(dtype): d/d input \(j) of derivative \(k)")
                }
            }
        }
    }

    /// d²/dx² of x ** p at x = 0 through grad(create_graph) twice, against the hand values
    /// (PyTorch float64 gives the same: 0, 0, 2, 0, -inf, inf).
    func testPowScalarSecondDerivativesAtZero() throws {
        for dtype in [DType.float32, .float64] {
            for (p, d1, d2) in [(0.0, 0.0, 0.0), (1, 1, 0), (2, 0, 2), (3, 0, 0), (0.5, .infinity, -.infinity), (-1, -.infinity, .infinity)] {
                let x = try Tensor(scalar: 0, dtype: dtype)
                try x.setRequiresGrad(true)
                let first = try Tensor.gradients(of: [x ** p], withRespectTo: [x], createGraph: true)[0]!
                XCTAssertEqual(try first.item(), d1, "d/dx x ** \(p) at 0, \(dtype)")
                let second = try Tensor.gradients(of: [first], withRespectTo: [x], allowUnused: true)[0]
                XCTAssertEqual(try second?.item() ?? 0, d2, "d²/dx² x ** \(p) at 0, \(dtype)")
            }
        }
        // sqrt at 0: d = inf, d² = -inf (PyTorch the same).
        let x = try Tensor(scalar: 0)
        try x.setRequiresGrad(true)
        let first = try Tensor.gradients(of: [x.sqrt()], withRespectTo: [x], createGraph: true)[0]!
        XCTAssertEqual(try first.item(), .infinity)
        XCTAssertEqual(try Tensor.gradients(of: [first], withRespectTo: [x])[0]!.item(), -.infinity)
    }

    /// Second derivatives of a ** b with both as tensors, at a = 0. A derivative taken as the
    /// constant 0 by convention (d/da where b == 0, d/db where a == 0 and b >= 0) has derivative 0
    /// (PyTorch gives nan there, from 0·inf inside its formulas); elsewhere the hand values, which
    /// PyTorch float64 matches.
    func testPowTensorSecondDerivativesAtBaseZero() throws {
        // (a, b): [d(da)/da, d(da)/db, d(db)/da, d(db)/db]
        let cases: [(Double, Double, [Double])] = [
            (0, 0, [0, 0, 0, 0]),
            (0, 1, [0, 1, 0, 0]),
            (0, 2, [2, 0, 0, 0]),
            (0, 3, [0, 0, 0, 0]),
            // d/da is taken as 0 where b == 0 (PyTorch's mask), so its derivative along b is 0 too
            // (PyTorch: 0, where b·a^(b-1) would give 1/a).
            (2, 0, [0, 0, 0.5, log(2) * log(2)]),
        ]
        for dtype in [DType.float32, .float64] {
            for (a0, b0, expected) in cases {
                let a = try Tensor(scalar: a0, dtype: dtype), b = try Tensor(scalar: b0, dtype: dtype)
                try a.setRequiresGrad(true); try b.setRequiresGrad(true)
                let first = try Tensor.gradients(of: [a.pow(b)], withRespectTo: [a, b], createGraph: true)
                var got: [Double] = []
                for d in first {
                    let second = try Tensor.gradients(of: [d!], withRespectTo: [a, b], retainGraph: true, allowUnused: true)
                    got += try second.map { try $0?.item() ?? 0 }
                }
                let tol = dtype == .float32 ? 1e-6 : 1e-15
                for k in 0..<4 {
                    XCTAssertEqual(got[k], expected[k], accuracy: tol, "a ** b at (\(a0), \(b0)), \(dtype): second derivative \(k) = \(got), expected \(expected)")
                }
            }
        }
    }
}
