import XCTest
@testable import AutogradEngine

/// Every fused path against the recorded rule, both made from one statement of the op's
/// derivative (issue 14, item 18; issue 15).
///
/// An elementwise op's gradient is computed in two ways: its fused loop (backward passes that
/// are not recorded, whose inputs all have the output's shape: small, large and split over
/// threads, captured, hooked) and its derivative over tensors (recorded passes, create_graph,
/// and broadcast inputs). Its tangent too: the fused forward-mode loop (a tangent that need not
/// be differentiable) and the derivative over tensors (one that must be). All must agree to 1
/// ulp, at random inputs and at the extremes (0, subnormals, 1e±20, 1e±30, the largest finite
/// value, inf, nan), in both dtypes. The tensor form (create_graph) is the reference.
final class FusedRuleAgreementTests: XCTestCase {
    /// An elementwise op: its name, arity and application.
    struct Op {
        let name: String
        let arity: Int
        let apply: ([Tensor]) throws -> Tensor
        /// The ops whose nodes carry a fused loop (an ElementwiseKind).
        static let fused: Set<String> = ["add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "sigmoid", "relu", "sqrt",
                                         "abs", "sin", "cos", "softplus", "gelu", "pow", "maximum", "minimum",
                                         "log1p", "expm1", "erf", "atan2"]
        init(_ name: String, _ arity: Int, _ apply: @escaping ([Tensor]) throws -> Tensor) {
            self.name = name
            self.arity = arity
            self.apply = apply
        }
    }

    /// The ops with a fused loop, then those without one (leaky_relu and clamp have parameters;
    /// where is not in the table).
    // nonisolated(unsafe): a table of closures that capture nothing, built once and only read.
    nonisolated(unsafe) static let ops: [Op] = [
        Op("add", 2) { try $0[0].adding($0[1]) },
        Op("sub", 2) { try $0[0].subtracting($0[1]) },
        Op("mul", 2) { try $0[0].multiplying($0[1]) },
        Op("div", 2) { try $0[0].dividing(by: $0[1]) },
        Op("neg", 1) { try $0[0].negated() },
        Op("exp", 1) { try $0[0].exp() },
        Op("log", 1) { try $0[0].log() },
        Op("tanh", 1) { try $0[0].tanh() },
        Op("sigmoid", 1) { try $0[0].sigmoid() },
        Op("relu", 1) { try $0[0].relu() },
        Op("sqrt", 1) { try $0[0].sqrt() },
        Op("abs", 1) { try $0[0].abs() },
        Op("sin", 1) { try $0[0].sin() },
        Op("cos", 1) { try $0[0].cos() },
        Op("softplus", 1) { try $0[0].softplus() },
        Op("gelu", 1) { try $0[0].gelu() },
        Op("leaky_relu", 1) { try $0[0].leakyRelu(negativeSlope: 0.01) },
        Op("maximum", 2) { try $0[0].maximum($0[1]) },
        Op("minimum", 2) { try $0[0].minimum($0[1]) },
        Op("where", 2) { x in try Tensor.where(withNoGrad { try x[0].gt(x[1]) }, x[0], x[1]) },
        Op("pow", 2) { try $0[0].pow($0[1]) },
        Op("log1p", 1) { try $0[0].log1p() },
        Op("expm1", 1) { try $0[0].expm1() },
        Op("erf", 1) { try $0[0].erf() },
        Op("atan2", 2) { try $0[0].atan2($0[1]) },
        Op("clamp", 1) { try $0[0].clamp(min: -1, max: 3.5) },
        Op("clamp min", 1) { try $0[0].clamp(min: 0.5) },
    ]

    /// The ways a gradient is computed (see the class comment).
    enum Path: String, CaseIterable {
        /// backward() on chunks of at most 1024 same-shape elements: the fused loop.
        case fused
        /// backward() on all elements at once (above the old fusion limit of 4096): the fused loop.
        case large
        /// grad() (capture mode): the fused loop.
        case capture
        /// backward() on small chunks with a hook on the output: the fused loop after the hook.
        case hooked
        /// jvp with tangents that need not be differentiable: the fused forward-mode loop.
        case tangentFused
        /// jvp with tangents that require grad: the derivative over tensors.
        case tangentRecorded
        /// backward() with the first operand of shape [1, n] against [n]: not fused.
        case broadcastFirst
        /// The same with the second operand of shape [1, n].
        case broadcastSecond
        /// grad(create_graph: true): the tensor-op form, the reference.
        case createGraph
    }

    /// Extremes that every op meets in every pairing, with the seeds they meet.
    static func extremes(_ dtype: DType) -> [Double] {
        let common: [Double] = [0, -0.0, 1, -1, 0.5, -2, 3.5, 1e-30, -1e-30, 1e-25, 1e20, -1e20, 1e30, -1e30,
                                .infinity, -.infinity, .nan]
        switch dtype {
        case .float32:
            return common + [Double(Float.leastNonzeroMagnitude), Double(Float.leastNormalMagnitude),
                             Double(Float.greatestFiniteMagnitude), -Double(Float.greatestFiniteMagnitude)]
        case .float64:
            return common + [Double.leastNonzeroMagnitude, Double.leastNormalMagnitude, 1e300, -1e300,
                             Double.greatestFiniteMagnitude]
        case .int64, .bool: return []  // the rules under test are floating point only
        }
    }

    static let seedExtremes: [Double] = [1, -1, 0.5, 1e20, 1e-20, .infinity, .nan]

    /// Columns of inputs and the seed: every pairing of extremes with every seed extreme, then
    /// at least 1500 random values (half of moderate size, half anywhere in the dtype's range;
    /// 4500 elements in all at least), all exactly representable in `dtype`.
    static func inputs(arity: Int, dtype: DType, seed: UInt64) -> (columns: [[Double]], seed: [Double]) {
        var rng = TestRNG(seed)
        let ext = extremes(dtype)
        var columns = [[Double]](repeating: [], count: arity)
        var g: [Double] = []
        let tuples: [[Double]] = arity == 1 ? ext.map { [$0] } : ext.flatMap { a in ext.map { b in [a, b] } }
        for t in tuples {
            for s in seedExtremes {
                for k in 0..<arity { columns[k].append(t[k]) }
                g.append(s)
            }
        }
        let maxExponent = dtype == .float32 ? 37.0 : 300.0
        func random(_ k: Int) -> Double {
            let sign: Double = rng.next() & 1 == 0 ? 1 : -1
            let exponent = k % 2 == 0 ? rng.uniform(-3, 3) : rng.uniform(-maxExponent, maxExponent)
            let v = sign * Foundation.pow(10, exponent)
            return dtype == .float32 ? Double(Float(v)) : v
        }
        let target = Swift.max(g.count + 1500, 4500)
        var k = 0
        while g.count < target {
            for c in 0..<arity { columns[c].append(random(k)) }
            // Seeds: mostly moderate (the common case), sometimes wide.
            g.append(k % 3 == 2 ? random(1) : random(0))
            k += 1
        }
        return (columns, g)
    }

    /// The gradients of the op's inputs along `path`, one array per input.
    func gradients(_ op: Op, _ path: Path, _ columns: [[Double]], _ seed: [Double], _ dtype: DType) throws -> [[Double]] {
        let n = seed.count
        func leaves(_ range: Range<Int>, shapes: [[Int]]? = nil) throws -> [Tensor] {
            try (0..<op.arity).map { k in
                let t = try Tensor(Array(columns[k][range]), shape: shapes?[k] ?? [range.count], dtype: dtype)
                try t.setRequiresGrad(true)
                return t
            }
        }
        func chunked(_ body: (Range<Int>) throws -> [[Double]]) throws -> [[Double]] {
            var result = [[Double]](repeating: [], count: op.arity)
            var start = 0
            while start < n {
                let r = start..<Swift.min(n, start + 1024)
                let part = try body(r)
                for k in 0..<op.arity { result[k] += part[k] }
                start = r.upperBound
            }
            return result
        }
        switch path {
        case .fused, .hooked:
            return try chunked { r in
                let xs = try leaves(r)
                let out = try op.apply(xs)
                // The node carries its fused loop.
                XCTAssertEqual(out.gradFn?.elementwise != ElementwiseKind.none, Op.fused.contains(op.name), "\(op.name): fused loop attached")
                if path == .hooked { try out.registerHook(GradHook(id: 1) { _ in nil }) }
                try out.backward(seed: Tensor(Array(seed[r]), shape: out.shape, dtype: dtype))
                return xs.map { $0.grad!.values }
            }
        case .large:
            XCTAssertGreaterThan(n, 4096)
            let xs = try leaves(0..<n)
            let out = try op.apply(xs)
            XCTAssertEqual(out.gradFn?.elementwise != ElementwiseKind.none, Op.fused.contains(op.name), "\(op.name): fused loop attached")
            try out.backward(seed: Tensor(seed, shape: out.shape, dtype: dtype))
            return xs.map { $0.grad!.values }
        case .capture, .createGraph:
            let xs = try leaves(0..<n)
            let out = try op.apply(xs)
            let g = try Tensor.gradients(of: [out], withRespectTo: xs, seeds: [Tensor(seed, shape: out.shape, dtype: dtype)],
                                         createGraph: path == .createGraph)
            return g.map { $0!.values }
        case .tangentFused, .tangentRecorded:
            // The tangent of input k alone is the seed times d out / d input k: one jvp per input.
            return try (0..<op.arity).map { k in
                let xs = try (0..<op.arity).map { try Tensor(columns[$0], shape: [n], dtype: dtype) }
                let t = try Tensor(seed, shape: [n], dtype: dtype)
                if path == .tangentRecorded { try t.setRequiresGrad(true) }
                let tangents = try (0..<op.arity).map { $0 == k ? t : try Tensor.zeros([n], dtype: dtype) }
                // A zero tangent on the other input would add 0 · derivative (nan at the extremes):
                // give only input k a tangent, by closing over the others as constants.
                let (_, out) = try Transforms.jvp({ ys in
                    [try op.apply((0..<op.arity).map { $0 == k ? ys[0] : xs[$0] })]
                }, primals: [xs[k]], tangents: [tangents[k]])
                return out[0].values
            }
        case .broadcastFirst, .broadcastSecond:
            let wide = path == .broadcastFirst ? 0 : 1
            let xs = try leaves(0..<n, shapes: (0..<op.arity).map { $0 == wide ? [1, n] : [n] })
            let out = try op.apply(xs)
            XCTAssertEqual(out.shape, [1, n])
            XCTAssertEqual(out.gradFn?.elementwise, ElementwiseKind.none, "\(op.name): broadcast, so no fused loop")
            try out.backward(seed: Tensor(seed, shape: [1, n], dtype: dtype))
            return xs.map { $0.grad!.values }
        }
    }

    /// The distance in ulps of `dtype` between two values (both nan: 0; +0 and -0: 0).
    static func ulps(_ x: Double, _ y: Double, _ dtype: DType) -> UInt64 {
        if x.isNaN || y.isNaN { return x.isNaN && y.isNaN ? 0 : .max }
        func ordered32(_ v: Float) -> Int64 {
            let bits = Int64(Int32(bitPattern: v.bitPattern))
            return bits < 0 ? -(bits & 0x7fff_ffff) : bits
        }
        func ordered64(_ v: Double) -> Int64 {
            let bits = Int64(bitPattern: v.bitPattern)
            return bits < 0 ? -(bits & 0x7fff_ffff_ffff_ffff) : bits
        }
        switch dtype {
        case .float32: return UInt64((ordered32(Float(x)) - ordered32(Float(y))).magnitude)
        case .float64:
            let (d, overflow) = ordered64(x).subtractingReportingOverflow(ordered64(y))
            return overflow ? .max : d.magnitude
        case .int64, .bool: return x == y ? 0 : .max
        }
    }

    func checkAgreement(_ op: Op, _ dtype: DType, file: StaticString = #filePath, line: UInt = #line) throws {
        let (columns, seed) = FusedRuleAgreementTests.inputs(arity: op.arity, dtype: dtype, seed: 1234 + UInt64(op.arity))
        let reference = try gradients(op, .createGraph, columns, seed, dtype)
        for path in Path.allCases where path != .createGraph {
            if op.arity == 1 && (path == .broadcastFirst || path == .broadcastSecond) { continue }
            let got = try gradients(op, path, columns, seed, dtype)
            var failures = 0
            for k in 0..<op.arity {
                for i in 0..<seed.count where FusedRuleAgreementTests.ulps(got[k][i], reference[k][i], dtype) > 1 {
                    failures += 1
                    if failures <= 3 {
                        let args = (0..<op.arity).map { "\(columns[$0][i])" }.joined(separator: ", ")
                        XCTFail("\(op.name) \(dtype) \(path.rawValue): d/d input \(k) at (\(args)), seed \(seed[i]): \(got[k][i]), create_graph \(reference[k][i])",
                                file: file, line: line)
                    }
                }
            }
            if failures > 3 { XCTFail("\(op.name) \(dtype) \(path.rawValue): \(failures) disagreements in all", file: file, line: line) }
        }
    }

    func testEveryFusedPathAgreesWithItsTensorOpRuleInFloat32() throws {
        for op in FusedRuleAgreementTests.ops { try checkAgreement(op, .float32) }
    }

    func testEveryFusedPathAgreesWithItsTensorOpRuleInFloat64() throws {
        for op in FusedRuleAgreementTests.ops { try checkAgreement(op, .float64) }
    }

    /// The two cases, against PyTorch float64's -g * ((a / b) / b) evaluated exactly
    /// (-1e20 and -1e-20): the float32 fused rule used to give -inf and -0.
    func testFloat32DivGradientAtTheExtremesOnEveryPath() throws {
        for (a, b, expected) in [(1e-30, 1e-25, -1e20), (1e20, 1e20, -1e-20)] {
            for path in Path.allCases where path != .large && path != .tangentFused && path != .tangentRecorded {
                let g = try gradients(FusedRuleAgreementTests.ops[3], path, [[Double(Float(a))], [Double(Float(b))]], [1], .float32)
                XCTAssertLessThanOrEqual(FusedRuleAgreementTests.ulps(g[1][0], expected, .float32), 1,
                                         "div \(path.rawValue) at a = \(a), b = \(b): d/db = \(g[1][0]), expected \(expected)")
            }
        }
    }

    /// The fused loops split over threads (counts of at least Parallel.minimumParallelCount)
    /// give what they give inline: the extremes tiled to a large tensor, backward and jvp.
    func testFusedLoopsSplitOverThreadsAgreeWithTheTensorForm() throws {
        let saved = Parallel.threadCount
        try Parallel.setThreadCount(2)
        defer { try? Parallel.setThreadCount(saved) }
        for name in ["mul", "div", "relu", "tanh", "maximum"] {
            let op = FusedRuleAgreementTests.ops.first { $0.name == name }!
            let (small, smallSeed) = FusedRuleAgreementTests.inputs(arity: op.arity, dtype: .float32, seed: 99)
            let n = Parallel.minimumParallelCount + 3000
            let columns = small.map { c in (0..<n).map { c[$0 % c.count] } }
            let seed = (0..<n).map { smallSeed[$0 % smallSeed.count] }
            let reference = try gradients(op, .createGraph, columns, seed, .float32)
            for path in [Path.large, .tangentFused] {
                let got = try gradients(op, path, columns, seed, .float32)
                for k in 0..<op.arity {
                    let bad = (0..<n).filter { FusedRuleAgreementTests.ulps(got[k][$0], reference[k][$0], .float32) > 1 }
                    XCTAssertTrue(bad.isEmpty, "\(name) \(path.rawValue) input \(k): \(bad.count) disagreements, first at \(bad.first ?? -1)")
                }
            }
        }
    }
}
