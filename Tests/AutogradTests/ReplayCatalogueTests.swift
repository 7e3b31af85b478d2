import XCTest
@testable import AutogradEngine

/// Every op of the catalogue, captured with its gradients and replayed on new inputs, gives the
/// eager op's bits (values and gradients), in float32 and float64, broadcasting included. The
/// reference is the eager run of the same function on the same inputs.
final class ReplayCatalogueTests: XCTestCase {
    typealias Op = (String, [[Int]], ([Tensor]) throws -> Tensor)

    // nonisolated(unsafe): a table of closures that capture nothing, built once and only read.
    nonisolated(unsafe) static let ops: [Op] = {
        var ops: [Op] = []
        let unary: [(String, (Tensor) throws -> Tensor)] = [
            ("neg", { try $0.negated() }), ("exp", { try $0.exp() }), ("log", { try $0.abs().log() }),
            ("log1p", { try $0.abs().log1p() }), ("expm1", { try $0.expm1() }), ("erf", { try $0.erf() }),
            ("relu", { try $0.relu() }), ("sqrt", { try $0.abs().sqrt() }), ("abs", { try $0.abs() }),
            ("sin", { try $0.sin() }), ("cos", { try $0.cos() }), ("tanh", { try $0.tanh() }),
            ("sigmoid", { try $0.sigmoid() }), ("softplus", { try $0.softplus() }), ("gelu", { try $0.gelu() }),
            ("leaky_relu", { try $0.leakyRelu(negativeSlope: 0.1) }), ("clamp", { try $0.clamp(min: -0.5, max: 0.7) }),
        ]
        for (name, f) in unary { ops.append((name, [[3, 4]], { try f($0[0]) })) }
        ops.append(("tanh scalar", [[]], { try $0[0].tanh() }))
        let binary: [(String, (Tensor, Tensor) throws -> Tensor)] = [
            ("add", { try $0 + $1 }), ("sub", { try $0 - $1 }), ("mul", { try $0 * $1 }), ("div", { try $0 / $1 }),
            ("pow", { try $0.abs().pow($1) }), ("maximum", { try $0.maximum($1) }), ("minimum", { try $0.minimum($1) }),
            ("atan2", { try $0.atan2($1) }),
        ]
        for (name, f) in binary {
            for shapes in [[[3, 4], [3, 4]], [[3, 1], [1, 4]], [[2, 3, 4], [4]], [[], [2, 3]], [[2, 3], []]] {
                ops.append(("\(name) \(shapes)", shapes, { try f($0[0], $0[1]) }))
            }
        }
        ops += [
            ("scalar operands", [[2, 3]], { try (2 - $0[0] * 3) / 4 + 1 }),
            ("x ** 3", [[2, 3]], { try $0[0] ** 3 }),
            ("comparisons", [[3, 4], [3, 4]], { x in
                try x[0].lt(x[1]) + x[0].le(x[1]) * 2 + x[0].gt(x[1]) * 3 + x[0].ge(x[1]) + x[0].eq(x[0]) + x[0].ne(x[1]) + x[0] }),
            ("where", [[3, 4], [3, 4], [4]], { x in try Tensor.where(x[0].gt(x[1]), x[0], x[2]) }),
            ("sum", [[3, 4, 2]], { try $0[0].sum(axes: [1]) }), ("sum all", [[3, 4]], { try $0[0].sum() }),
            ("mean", [[3, 4]], { try $0[0].mean(axes: [0], keepDims: true) }),
            ("max", [[3, 4]], { try $0[0].max(axes: [1]) }), ("min", [[3, 4]], { try $0[0].min() }),
            ("var", [[3, 4]], { try $0[0].variance(axes: [1]) }),
            ("logsumexp", [[3, 4]], { try $0[0].logSumExp(axes: [1]) }),
            ("cumsum", [[3, 4]], { try $0[0].cumsum(axis: 1) }),
            ("reshape", [[3, 4]], { try $0[0].reshaped([2, 6]).exp() }),
            ("expand", [[3, 1]], { try $0[0].expanded(to: [2, 3, 4]) }),
            ("permute", [[2, 3, 4]], { try $0[0].permuted([2, 0, 1]) }),
            ("transpose", [[3, 4]], { try $0[0].transposed() }),
            ("squeeze/unsqueeze", [[3, 1, 4]], { try $0[0].squeezed([1]).unsqueezed(0) }),
            ("index_select", [[4, 3]], { try $0[0].indexSelect(axis: 0, [3, 0, 3]) }),
            ("slice", [[4, 6]], { try $0[0].slice(axis: 1, start: 1, stop: 6, step: 2) }),
            ("concat", [[2, 3], [1, 3]], { try Tensor.concat([$0[0], $0[1], $0[0]], axis: 0) }),
            ("stack", [[2, 3], [2, 3]], { try Tensor.stack([$0[0], $0[1]], axis: 1) }),
            ("gather", [[3, 4]], { try $0[0].gather(axis: 1, index: [0, 3, 3, 1, 2, 0], indexShape: [3, 2]) }),
            ("matmul", [[3, 4], [4, 5]], { try $0[0].matmul($0[1]) }),
            ("matmul batched", [[2, 3, 4], [4, 2]], { try $0[0].matmul($0[1]) }),
            ("matmul vector", [[4], [4, 3]], { try $0[0].matmul($0[1]) }),
            ("dot", [[5], [5]], { try $0[0].dot($0[1]) }), ("outer", [[3], [4]], { try $0[0].outer($0[1]) }),
            ("linear", [[5, 4], [3, 4], [3]], { try $0[0].linear(weight: $0[1], bias: $0[2]) }),
            ("linear no bias", [[2, 5, 4], [3, 4]], { try $0[0].linear(weight: $0[1]) }),
            ("softmax", [[3, 4]], { try $0[0].softmax(axis: 1) }),
            ("log_softmax", [[3, 4]], { try $0[0].logSoftmax(axis: 0) }),
            ("cross_entropy", [[3, 4]], { try $0[0].crossEntropy(labels: [1, 3, 0]) }),
            ("mse", [[3, 4], [3, 4]], { try $0[0].mseLoss($0[1]) }),
            ("chain", [[8, 8], [8]], { x in try (x[0] * x[1]).tanh().relu().exp().sum(axes: [0]).sigmoid() }),
        ]
        return ops
    }()

    func bits(_ t: Tensor) -> [UInt64] { t.values.map { $0.bitPattern } }

    /// f's value and the gradients of sum(f · w) with respect to every input (w fixed).
    func valueAndGradients(_ op: ([Tensor]) throws -> Tensor, _ inputs: [Tensor], _ w: Tensor) throws -> [Tensor] {
        let y = try op(inputs)
        let loss = try y.multiplying(w.converted(to: y.dtype)).sum()
        return [y] + (try Tensor.gradients(of: [loss], withRespectTo: inputs, allowUnused: true).map { $0 ?? y })
    }

    func testEveryOpReplaysBitForBit() throws {
        var rng = TestRNG(16)
        for (name, shapes, op) in Self.ops {
            for dtype in [DType.float64, .float32] {
                func inputs() throws -> [Tensor] {
                    try shapes.map { s in
                        let t = try rng.tensor(s, -2, 2, gap: 0.2, requiresGrad: false).converted(to: dtype)
                        try t.setRequiresGrad(true)
                        return t
                    }
                }
                let example = try inputs()
                let shape = try op(example).shape
                let w = rng.tensor(shape, -1, 1, requiresGrad: false)
                let f: CapturedFunction
                do {
                    f = try CapturedFunction.capture(example) { try self.valueAndGradients(op, $0, w) }
                } catch {
                    XCTFail("\(name) \(dtype): capture failed: \(error)")
                    continue
                }
                for _ in 0..<2 {
                    let x = try inputs()
                    let replayed = try f(x)
                    let eager = try valueAndGradients(op, x, w)
                    XCTAssertEqual(replayed.map(bits), eager.map(bits), "\(name) \(dtype)")
                }
            }
        }
    }
}
