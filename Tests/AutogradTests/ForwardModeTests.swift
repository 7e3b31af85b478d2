import Foundation
import XCTest
@testable import AutogradEngine

/// Forward mode (jvp) for every op of the catalogue, against central finite differences in
/// float64, and the transforms built on it (reverse over forward, hvp, forward Jacobians).
final class ForwardModeTests: XCTestCase {
    // MARK: - The table

    /// One input of a case: its shape and the range its random values are drawn from (at least
    /// `gap` from 0, away from kinks and poles).
    struct Input {
        let shape: [Int]
        var lo = -2.0, hi = 2.0, gap = 0.1
        /// Given values instead of random ones (ties, kinks).
        var fixed: [Double]? = nil
    }

    /// One row of the table: an op (or one form of it) applied to random inputs.
    struct Case {
        let name: String
        /// The C catalogue function (include/autograd.h) the case exercises; nil for an
        /// internal differentiable primitive that no C function exposes directly.
        let op: String?
        let inputs: [Input]
        /// The output is cut off from the inputs (detach): its tangent is 0, not f's difference quotient.
        var stopsTangent = false
        let f: ([Tensor]) throws -> Tensor
    }

    private static func s(_ shape: [Int], _ lo: Double = -2, _ hi: Double = 2, gap: Double = 0.1) -> Input {
        Input(shape: shape, lo: lo, hi: hi, gap: gap)
    }

    private static func c(_ op: String?, _ name: String, _ inputs: [Input], stopsTangent: Bool = false,
                          _ f: @escaping ([Tensor]) throws -> Tensor) -> Case {
        Case(name: name, op: op, inputs: inputs, stopsTangent: stopsTangent, f: f)
    }

    /// Every op, each form of it that takes its own path (broadcasting, scalar operands, axes,
    /// keepDims, 1-D/2-D/batched products, empty results).
    // nonisolated(unsafe): a table of closures that capture nothing, built once and only read.
    nonisolated(unsafe) static let cases: [Case] = {
        var all: [Case] = []
        // Unary elementwise.
        let unary: [(String, Input, (Tensor) throws -> Tensor)] = [
            ("ag_neg", s([3, 4]), { try $0.negated() }), ("ag_exp", s([3, 4]), { try $0.exp() }),
            ("ag_log", s([3, 4], 0.2, 3), { try $0.log() }), ("ag_relu", s([3, 4]), { try $0.relu() }),
            ("ag_sqrt", s([3, 4], 0.2, 3), { try $0.sqrt() }), ("ag_abs", s([3, 4]), { try $0.abs() }),
            ("ag_sin", s([3, 4]), { try $0.sin() }), ("ag_cos", s([3, 4]), { try $0.cos() }),
            ("ag_tanh", s([3, 4]), { try $0.tanh() }), ("ag_sigmoid", s([3, 4]), { try $0.sigmoid() }),
            ("ag_leaky_relu", s([3, 4]), { try $0.leakyRelu(negativeSlope: 0.1) }), ("ag_gelu", s([3, 4]), { try $0.gelu() }),
            ("ag_softplus", s([3, 4]), { try $0.softplus() }),
            ("ag_log1p", s([3, 4], -0.5, 3), { try $0.log1p() }), ("ag_expm1", s([3, 4]), { try $0.expm1() }),
            ("ag_erf", s([3, 4]), { try $0.erf() }),
            ("ag_clamp", s([3, 4], -1.5, 1.5, gap: 0.1), { try $0.clamp(min: -0.7, max: 0.6) }),
            ("ag_clamp", s([3, 4]), { try $0.clamp(min: -0.3) }),
        ]
        for (op, input, f) in unary { all.append(c(op, String(op.dropFirst(3)), [input]) { try f($0[0]) }) }
        all.append(c("ag_exp", "exp 0-d", [s([])]) { try $0[0].exp() })
        all.append(c(nil, "normal_cdf", [s([5])]) { try $0[0].normalCDF() })

        // Binary elementwise over broadcast patterns.
        let binary: [(String, Input, (Tensor, Tensor) throws -> Tensor)] = [
            ("ag_add", s([]), { try $0 + $1 }), ("ag_sub", s([]), { try $0 - $1 }), ("ag_mul", s([]), { try $0 * $1 }),
            ("ag_div", s([], -1.5, 1.5, gap: 0.3), { try $0 / $1 }), ("ag_pow", s([], -1.5, 1.5), { try $0.pow($1) }),
            ("ag_maximum", s([]), { try $0.maximum($1) }), ("ag_minimum", s([]), { try $0.minimum($1) }),
            ("ag_atan2", s([], 0.3, 2), { try $0.atan2($1) }),
        ]
        let patterns: [([Int], [Int])] = [([3, 4], [3, 4]), ([3, 1], [1, 4]), ([2, 3, 4], [4]), ([4], [2, 3, 4]),
                                          ([], [2, 3]), ([2, 3], [])]
        for (op, second, f) in binary {
            for (sa, sb) in patterns {
                // pow's base stays positive (the exponent's derivative needs log a).
                let first = op == "ag_pow" ? s(sa, 0.3, 2) : s(sa)
                var b = second
                b = Input(shape: sb, lo: b.lo, hi: b.hi, gap: b.gap)
                all.append(c(op, "\(op.dropFirst(3)) \(sa) x \(sb)", [first, b]) { try f($0[0], $0[1]) })
            }
        }
        // A binary op with one operand a constant (only the other has a tangent).
        all.append(c("ag_mul", "mul by a constant tensor", [s([3, 4])]) { try $0[0] * Tensor([1, -2, 3, 0.5], shape: [4]) })

        // Scalar forms.
        let scalar: [(String, Input, (Tensor) throws -> Tensor)] = [
            ("ag_add_scalar", s([2, 3]), { try $0 + 2 }), ("ag_sub_scalar", s([2, 3]), { try $0 - 2 }),
            ("ag_rsub_scalar", s([2, 3]), { try 2 - $0 }), ("ag_mul_scalar", s([2, 3]), { try $0 * 0.5 }),
            ("ag_div_scalar", s([2, 3]), { try $0 / 3 }), ("ag_rdiv_scalar", s([2, 3], gap: 0.3), { try 3 / $0 }),
            ("ag_pow_scalar", s([2, 3], 0.3, 2), { try $0 ** 3 }), ("ag_pow_scalar", s([2, 3], 0.3, 2), { try $0 ** 0.5 }),
            ("ag_rpow_scalar", s([2, 3]), { try 2 ** $0 }),
            ("ag_maximum_scalar", s([2, 3]), { try $0.maximum($0.constant(0.3)) }),
            ("ag_minimum_scalar", s([2, 3]), { try $0.minimum($0.constant(0.3)) }),
        ]
        for (k, (op, input, f)) in scalar.enumerated() { all.append(c(op, "\(op.dropFirst(3)) #\(k)", [input]) { try f($0[0]) }) }

        // Reductions over several axis sets, with and without keepDims.
        let reductions: [(String, (Tensor, [Int], Bool) throws -> Tensor)] = [
            ("ag_sum", { try $0.sum(axes: $1, keepDims: $2) }), ("ag_mean", { try $0.mean(axes: $1, keepDims: $2) }),
            ("ag_max", { try $0.max(axes: $1, keepDims: $2) }), ("ag_min", { try $0.min(axes: $1, keepDims: $2) }),
            ("ag_var", { try $0.variance(axes: $1, keepDims: $2) }),
            ("ag_var", { try $0.variance(axes: $1, correction: 0, keepDims: $2) }),
            ("ag_logsumexp", { try $0.logSumExp(axes: $1, keepDims: $2) }),
        ]
        for (op, f) in reductions {
            for axes in [[], [0], [1], [-1], [0, 2]] as [[Int]] {
                for keep in [false, true] {
                    all.append(c(op, "\(op.dropFirst(3)) axes \(axes) keepDims \(keep)", [s([2, 3, 4])]) { try f($0[0], axes, keep) })
                }
            }
        }
        all.append(c("ag_sum", "sum of a 0-d tensor", [s([])]) { try $0[0].sum() })
        for axis in [0, 1, -1] {
            all.append(c("ag_cumsum", "cumsum axis \(axis)", [s([2, 3, 4])]) { try $0[0].cumsum(axis: axis) })
        }
        all.append(c("ag_logsumexp", "logsumexp over an empty axis", [s([2, 0, 3])]) { try $0[0].logSumExp(axes: [1]) })
        all.append(c("ag_sum", "sum over an empty axis", [s([2, 0, 3])]) { try $0[0].sum(axes: [1]) })

        // Shape ops.
        all.append(c("ag_reshape", "reshape", [s([2, 3, 4])]) { try $0[0].reshaped([6, 4]) })
        all.append(c("ag_reshape", "reshape to 0-d", [s([1, 1])]) { try $0[0].reshaped([]) })
        all.append(c("ag_transpose", "transpose 0 2", [s([2, 3, 4])]) { try $0[0].transposed(0, 2) })
        all.append(c("ag_transpose", "transpose -2 -1", [s([2, 3, 4])]) { try $0[0].transposed() })
        all.append(c("ag_permute", "permute", [s([2, 3, 4])]) { try $0[0].permuted([2, 0, 1]) })
        all.append(c("ag_permute", "permute (identity)", [s([2, 3])]) { try $0[0].permuted([0, 1]) })
        all.append(c("ag_expand", "expand", [s([3, 1])]) { try $0[0].expanded(to: [2, 3, 4]) })
        all.append(c("ag_expand", "expand a 0-d tensor", [s([])]) { try $0[0].expanded(to: [2, 2]) })
        all.append(c("ag_squeeze", "squeeze all", [s([1, 3, 1])]) { try $0[0].squeezed() })
        all.append(c("ag_squeeze", "squeeze axis 0", [s([1, 3, 1])]) { try $0[0].squeezed([0]) })
        for axis in [0, 1, -1] {
            all.append(c("ag_unsqueeze", "unsqueeze \(axis)", [s([2, 3])]) { try $0[0].unsqueezed(axis) })
        }
        all.append(c("ag_concat", "concat axis 0", [s([1, 3]), s([2, 3]), s([3, 3])]) { try Tensor.concat($0, axis: 0) })
        all.append(c("ag_concat", "concat axis -1", [s([2, 1]), s([2, 4])]) { try Tensor.concat($0, axis: -1) })
        all.append(c("ag_concat", "concat with a constant", [s([2, 2])]) {
            try Tensor.concat([$0[0], Tensor([1, 2], shape: [1, 2]), $0[0].exp()], axis: 0)
        })
        for axis in [0, 1, -1] {
            all.append(c("ag_stack", "stack \(axis)", [s([2, 3]), s([2, 3])]) { try Tensor.stack($0, axis: axis) })
        }
        all.append(c("ag_slice", "slice step 2", [s([3, 5])]) { try $0[0].slice(axis: 1, start: 0, stop: 5, step: 2) })
        all.append(c("ag_slice", "slice negative bounds", [s([4, 3])]) { try $0[0].slice(axis: 0, start: -3, stop: -1) })
        all.append(c("ag_slice", "slice to nothing", [s([4, 3])]) { try $0[0].slice(axis: 0, start: 2, stop: 2) })
        all.append(c("ag_slice", "slice of an empty tensor", [s([0, 3])]) { try $0[0].slice(axis: 1, start: 0, stop: 2) })
        all.append(c("ag_index_select", "index_select repeats, negative", [s([4, 3])]) { try $0[0].indexSelect(axis: 0, [3, -1, 0, 0]) })
        all.append(c("ag_index_select", "index_select axis 1", [s([2, 4])]) { try $0[0].indexSelect(axis: 1, [2, 1]) })
        all.append(c("ag_gather", "gather axis 1", [s([3, 4])]) {
            try $0[0].gather(axis: 1, index: [0, 3, 3, 1, 2, 0], indexShape: [3, 2])
        })
        all.append(c("ag_gather", "gather axis 0", [s([3, 2])]) { try $0[0].gather(axis: 0, index: [2, 0, 1, 1], indexShape: [2, 2]) })
        all.append(c(nil, "index_add (select's backward)", [s([4, 3])]) { try $0[0].indexAdding(axis: 0, [1, 4, 1, 0], extent: 5) })
        all.append(c(nil, "scatter_add (gather's backward)", [s([3, 2])]) {
            try $0[0].scatterAdding(axis: 1, index: [0, 3, 3, 3, 1, 2], into: [3, 4])
        })

        // Linear algebra.
        all.append(c("ag_dot", "dot", [s([5]), s([5])]) { try $0[0].dot($0[1]) })
        all.append(c("ag_outer", "outer", [s([3]), s([4])]) { try $0[0].outer($0[1]) })
        let products: [([Int], [Int])] = [([4], [4]), ([4], [4, 3]), ([3, 4], [4]), ([3, 4], [4, 5]), ([2, 3, 4], [4, 5]),
                                          ([2, 1, 3, 4], [3, 4, 2]), ([4], [2, 4, 3]), ([2, 3, 4], [4]), ([2, 0, 3], [3, 4])]
        for (sa, sb) in products {
            all.append(c("ag_matmul", "matmul \(sa) @ \(sb)", [s(sa), s(sb)]) { try $0[0].matmul($0[1]) })
        }
        for (ta, tb) in [(false, true), (true, false), (true, true)] {
            all.append(c(nil, "gemm transA \(ta) transB \(tb)", [s(ta ? [4, 3] : [3, 4]), s(tb ? [5, 4] : [4, 5])]) {
                try Tensor.gemm($0[0], transA: ta, $0[1], transB: tb)
            })
        }
        all.append(c(nil, "gemm batched transposed", [s([2, 4, 3]), s([2, 5, 4])]) { try Tensor.gemm($0[0], transA: true, $0[1], transB: true) })

        // Neural-network functions.
        for axis in [0, 1, -1] {
            all.append(c("ag_softmax", "softmax \(axis)", [s([3, 4])]) { try $0[0].softmax(axis: axis) })
            all.append(c("ag_log_softmax", "log_softmax \(axis)", [s([3, 4])]) { try $0[0].logSoftmax(axis: axis) })
        }
        all.append(c("ag_softmax", "softmax of an empty tensor", [s([0, 3])]) { try $0[0].softmax(axis: 1) })
        all.append(c("ag_log_softmax", "log_softmax of an empty tensor", [s([2, 0])]) { try $0[0].logSoftmax(axis: 1) })
        all.append(c("ag_cross_entropy", "cross_entropy", [s([4, 3])]) { try $0[0].crossEntropy(labels: [2, 0, 1, 2]) })
        all.append(c("ag_mse_loss", "mse_loss", [s([3, 4]), s([3, 4])]) { try $0[0].mseLoss($0[1]) })
        all.append(c("ag_linear", "linear with bias", [s([5, 3]), s([4, 3]), s([4])]) { try $0[0].linear(weight: $0[1], bias: $0[2]) })
        all.append(c("ag_linear", "linear without bias", [s([5, 3]), s([4, 3])]) { try $0[0].linear(weight: $0[1]) })
        all.append(c("ag_linear", "linear 3-D input", [s([2, 2, 3]), s([4, 3]), s([4])]) { try $0[0].linear(weight: $0[1], bias: $0[2]) })
        all.append(c("ag_linear", "linear 1-D input", [s([3]), s([4, 3])]) { try $0[0].linear(weight: $0[1]) })
        all.append(c("ag_linear", "linear, only the bias varies", [s([4])]) {
            try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3]).linear(weight: Tensor.ones([4, 3]), bias: $0[0])
        })

        // Comparisons (piecewise constant: tangent and difference quotient both 0), where, detach.
        let comparisons: [(String, (Tensor, Tensor) throws -> Tensor)] = [
            ("ag_eq", { try $0.eq($1) }), ("ag_ne", { try $0.ne($1) }), ("ag_lt", { try $0.lt($1) }),
            ("ag_le", { try $0.le($1) }), ("ag_gt", { try $0.gt($1) }), ("ag_ge", { try $0.ge($1) }),
        ]
        for (op, f) in comparisons { all.append(c(op, String(op.dropFirst(3)), [s([3, 4]), s([4])]) { try f($0[0], $0[1]) }) }
        all.append(c("ag_where", "where", [s([3, 4]), s([4])]) {
            try Tensor.where(Tensor([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1], shape: [3, 4]), $0[0], $0[1])
        })
        all.append(c("ag_where", "where, one branch constant", [s([3, 1])]) {
            try Tensor.where(Tensor([0, 1, 1], shape: [3, 1]), $0[0], Tensor.zeros([1, 2]))
        })
        // Issue 18: layers, int64/bool ops and generators.
        all.append(c("ag_conv2d", "conv2d stride 2 padding 1 dilation 1", [s([2, 3, 5, 5]), s([4, 3, 3, 3]), s([4])]) {
            try $0[0].conv2d(weight: $0[1], bias: $0[2], stride: (2, 2), padding: (1, 1))
        })
        all.append(c("ag_conv2d", "conv2d groups 2 dilation 2", [s([1, 4, 6, 6]), s([2, 2, 2, 2])]) {
            try $0[0].conv2d(weight: $0[1], padding: (1, 0), dilation: (2, 2), groups: 2)
        })
        all.append(c("ag_conv1d", "conv1d", [s([2, 2, 7]), s([3, 2, 3]), s([3])]) {
            try $0[0].conv1d(weight: $0[1], bias: $0[2], stride: 2, padding: 1)
        })
        all.append(c("ag_max_pool2d", "max_pool2d 2x2", [s([2, 2, 4, 4])]) { try $0[0].maxPool2d(kernel: (2, 2)) })
        all.append(c("ag_max_pool2d", "max_pool2d 3x3 stride 2 padding 1", [s([1, 2, 5, 5])]) {
            try $0[0].maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        })
        all.append(c("ag_avg_pool2d", "avg_pool2d", [s([1, 2, 5, 5])]) {
            try $0[0].avgPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1), countIncludePad: false)
        })
        all.append(c("ag_adaptive_avg_pool2d", "adaptive_avg_pool2d", [s([2, 2, 5, 7])]) { try $0[0].adaptiveAvgPool2d(outputSize: (3, 2)) })
        all.append(c("ag_layer_norm", "layer_norm", [s([3, 5]), s([5]), s([5])]) {
            try $0[0].layerNorm(normalizedAxes: 1, weight: $0[1], bias: $0[2])
        })
        all.append(c("ag_batch_norm", "batch_norm training", [s([4, 3, 2]), s([3]), s([3])]) {
            try $0[0].batchNorm(runningMean: nil, runningVar: nil, weight: $0[1], bias: $0[2], training: true)
        })
        all.append(c("ag_batch_norm", "batch_norm eval", [s([4, 3]), s([3], 0.5, 2)]) {
            try $0[0].batchNorm(runningMean: Tensor([0.1, -0.2, 0.3], shape: [3]), runningVar: $0[1], training: false)
        })
        all.append(c("ag_group_norm", "group_norm", [s([2, 4, 3]), s([4]), s([4])]) {
            try $0[0].groupNorm(groups: 2, weight: $0[1], bias: $0[2])
        })
        all.append(c("ag_scaled_dot_product_attention", "attention causal", [s([2, 4, 3]), s([2, 4, 3]), s([2, 4, 2])]) {
            try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], isCausal: true)
        })
        all.append(c("ag_scaled_dot_product_attention", "attention additive mask", [s([3, 2]), s([4, 2]), s([4, 3]), s([3, 4])]) {
            try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], mask: $0[3])
        })
        let rows = try! Tensor(copying: [Int64(2), 0, 2, 1], shape: [2, 2], dtype: .int64)
        all.append(c("ag_embedding", "embedding", [s([3, 4])]) { try Tensor.embedding(rows, weight: $0[0]) })
        all.append(c("ag_cross_entropy_labels", "cross_entropy_labels", [s([4, 3])]) {
            try $0[0].crossEntropy(labels: Tensor(copying: [Int64(2), 0, 1, 2], shape: [4], dtype: .int64))
        })
        all.append(c("ag_masked_fill", "masked_fill", [s([3, 4])]) {
            try $0[0].maskedFill(Tensor(copying: [UInt8(1), 0, 0, 1], shape: [4], dtype: .bool), -3)
        })
        all.append(c("ag_dropout", "dropout", [s([3, 4])]) { try $0[0].dropout(p: 0.4, generator: Generator(seed: 9)) })
        all.append(c("ag_to_dtype", "to_dtype int64 (no tangent)", [s([5], -9, 9)], stopsTangent: true) { try $0[0].to(.int64) })
        all.append(c("ag_argmax", "argmax", [s([3, 4])], stopsTangent: true) { try $0[0].argmax(axis: 1) })
        all.append(c("ag_argmin", "argmin", [s([3, 4])], stopsTangent: true) { try $0[0].argmin(axis: 0, keepDims: true) })
        all.append(c("ag_one_hot", "one_hot of argmax", [s([3, 4])], stopsTangent: true) {
            try $0[0].argmax(axis: 1).oneHot(classes: 4, dtype: .float64)
        })
        all.append(c("ag_logical_not", "logical_not", [s([3])], stopsTangent: true) { try $0[0].logicalNot() })
        all.append(c("ag_logical_and", "logical_and", [s([3]), s([3])], stopsTangent: true) { try $0[0].logicalAnd($0[1]) })
        all.append(c("ag_logical_or", "logical_or", [s([3]), s([3])], stopsTangent: true) { try $0[0].logicalOr($0[1]) })
        all.append(c("ag_multinomial", "multinomial", [s([2, 3], 0.2, 2)], stopsTangent: true) {
            try $0[0].multinomial(samples: 4, replacement: true, generator: Generator(seed: 4))
        })
        all.append(c("ag_random_uniform", "random_uniform (no operand)", [s([1])], stopsTangent: true) { _ in
            try Tensor.uniform([3], generator: Generator(seed: 6))
        })
        all.append(c("ag_random_normal", "random_normal (no operand)", [s([1])], stopsTangent: true) { _ in
            try Tensor.normal([3], generator: Generator(seed: 6))
        })
        all.append(c("ag_randint", "randint (no operand)", [s([1])], stopsTangent: true) { _ in
            try Tensor.randint([3], low: -5, high: 5, generator: Generator(seed: 6))
        })
        all.append(c("ag_randperm", "randperm (no operand)", [s([1])], stopsTangent: true) { _ in try Tensor.randperm(4, generator: Generator(seed: 6)) })
        all.append(c("ag_detach", "detach", [s([3])], stopsTangent: true) { $0[0].detach() })
        all.append(c("ag_detach", "detach inside a chain", [s([3])], stopsTangent: true) { try $0[0].exp().detach().sin() })
        return all
    }()

    // MARK: - Every op against finite differences

    /// The directional derivative of f at xs along ts by central differences (plain ops, no
    /// forward mode): (f(x + eps t) - f(x - eps t)) / (2 eps).
    static func centralDifference(_ f: ([Tensor]) throws -> Tensor, _ xs: [Tensor], _ ts: [Tensor], eps: Double = 1e-6) throws -> [Double] {
        func at(_ step: Double) throws -> [Double] {
            let moved = try zip(xs, ts).map { x, t in try Tensor(zip(x.values, t.values).map { $0 + step * $1 }, shape: x.shape) }
            return try withNoGrad { try f(moved).values }
        }
        // Equal values (infinities included: logsumexp over nothing is -inf) differ by 0.
        let plus = try at(eps), minus = try at(-eps)
        return zip(plus, minus).map { $0 == $1 ? 0 : ($0 - $1) / (2 * eps) }
    }

    static func random(_ input: Input, _ rng: inout TestRNG) -> Tensor {
        if let values = input.fixed { return try! Tensor(values, shape: input.shape) }
        return rng.tensor(input.shape, input.lo, input.hi, gap: input.gap, requiresGrad: false)
    }

    func testEveryOpAgainstFiniteDifferences() throws {
        var rng = TestRNG(1515)
        for op in Self.cases {
            let xs = op.inputs.map { Self.random($0, &rng) }
            let ts = op.inputs.map { Self.random(Input(shape: $0.shape, lo: -1, hi: 1, gap: 0), &rng) }
            let (outs, tans) = try Transforms.jvp({ [try op.f($0)] }, primals: xs, tangents: ts)
            let plain = try op.f(xs)
            XCTAssertEqual(outs[0].shape, plain.shape, "\(op.name): primal shape")
            XCTAssertEqual(outs[0].values, plain.values, "\(op.name): the primal output is the plain op's")
            XCTAssertEqual(tans[0].shape, plain.shape, "\(op.name): tangent shape")
            XCTAssertEqual(tans[0].dtype, plain.dtype, "\(op.name): tangent dtype")
            let expected = op.stopsTangent ? [Double](repeating: 0, count: plain.count) : try Self.centralDifference(op.f, xs, ts)
            XCTAssertEqual(tans[0].count, expected.count, "\(op.name): tangent size")
            for (i, (a, e)) in zip(tans[0].values, expected).enumerated() {
                XCTAssertEqual(a, e, accuracy: 1e-6 * (1 + Swift.abs(e)), "\(op.name): tangent element \(i)")
            }
        }
    }

    /// ⟨J t, c⟩ = ⟨t, Jᵀ c⟩: each op's JVP is the transpose of its VJP, exactly where finite
    /// differences cannot look (max/min at ties, kinks).
    func testJVPIsTheTransposeOfTheVJP() throws {
        var rng = TestRNG(77)
        var tied = Self.cases
        // Ties and kinks: the tie rule and the masks of the two modes must agree.
        let ties = Input(shape: [3, 4], fixed: [1, 3, 3, 2, 3, -1, 0, 0, 0, 0, 2, 2])
        for axes in [[], [0], [1]] as [[Int]] {
            tied.append(Self.c(nil, "max at ties \(axes)", [ties]) { try $0[0].max(axes: axes) })
            tied.append(Self.c(nil, "min at ties \(axes)", [ties]) { try $0[0].min(axes: axes) })
        }
        let kinks = Input(shape: [4], fixed: [0, 0, 1, -1])
        tied.append(Self.c(nil, "relu at 0", [kinks]) { try $0[0].relu() })
        tied.append(Self.c(nil, "abs at 0", [kinks]) { try $0[0].abs() })
        tied.append(Self.c(nil, "maximum at ties", [kinks, Input(shape: [4], fixed: [0, 1, 1, -1])]) { try $0[0].maximum($0[1]) })
        tied.append(Self.c(nil, "minimum at ties", [kinks, Input(shape: [4], fixed: [0, 1, 1, -1])]) { try $0[0].minimum($0[1]) })
        tied.append(Self.c(nil, "pow at 0", [Input(shape: [4], fixed: [0, 0, 0, 2]), Input(shape: [4], fixed: [0, 1, 2.5, 0])]) {
            try $0[0].pow($0[1])
        })
        for op in tied {
            let xs = op.inputs.map { Self.random($0, &rng) }
            let ts = op.inputs.map { Self.random(Input(shape: $0.shape, lo: -1, hi: 1, gap: 0), &rng) }
            let (outs, tans) = try Transforms.jvp({ [try op.f($0)] }, primals: xs, tangents: ts)
            // Indices and masks (int64, bool) have no cotangent: nothing to transpose.
            guard outs[0].dtype.isFloatingPoint else { continue }
            let cot = Self.random(Input(shape: outs[0].shape, lo: -1, hi: 1, gap: 0), &rng)
            let (_, grads) = try Transforms.vjp({ [try op.f($0)] }, primals: xs, cotangents: [cot])
            let lhs = zip(tans[0].values, cot.values).reduce(0) { $0 + $1.0 * $1.1 }
            var rhs = 0.0
            for (t, g) in zip(ts, grads) { rhs += zip(t.values, g.values).reduce(0) { $0 + $1.0 * $1.1 } }
            XCTAssertEqual(lhs, rhs, accuracy: 1e-10 * (1 + Swift.abs(rhs)), "\(op.name): <Jt, c> vs <t, J^T c>")
        }
    }

    func testMaxAndMinAtTiesAverageTheTiedTangents() throws {
        // Hand derivation of the tie rule (each tied element's share is 1/ties, as the VJP's).
        let x = try Tensor([1, 3, 3, 0, -2, -2], shape: [2, 3]), t = try Tensor([1, 2, 4, 8, 16, 32], shape: [2, 3])
        let (_, mx) = try Transforms.jvp({ [try $0[0].max(axes: [1])] }, primals: [x], tangents: [t])
        assertValues(mx[0], [3, 8])
        let (_, mn) = try Transforms.jvp({ [try $0[0].min(axes: [1])] }, primals: [x], tangents: [t])
        assertValues(mn[0], [1, 24])
        let (_, all) = try Transforms.jvp({ [try $0[0].max()] }, primals: [x], tangents: [t])
        assertValues(all[0], [3])
    }

    // MARK: - The table covers the catalogue

    /// The C catalogue's ops, read from include/autograd.h: every function whose first parameter
    /// is `ag_tensor *out` returns a tensor made from its arguments. Left out: `ag_tensor_*`
    /// (creation from values or a shape, and accessors: no tensor operand to differentiate) and
    /// functions that take user data (transforms and callbacks, which run the user's code rather
    /// than an op), `ag_custom_*` (user-defined ops and their context's accessors; CustomOpTests
    /// covers their forward mode), and `ag_safetensors_*` (a tensor read from a file: no operand). Reading the header itself, not a list kept here, is what makes a new op that
    /// lacks a row fail this test.
    static func catalogueOps() throws -> Set<String> {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let header = try String(contentsOf: root.appendingPathComponent("include/autograd.h"), encoding: .utf8)
        let prototype = try Regex(#"ag_status\s+(ag_\w+)\s*\(([^;]*?)\)\s*;"#)
        var ops: Set<String> = []
        for match in header.matches(of: prototype) {
            guard let name = match.output[1].substring.map(String.init),
                  let params = match.output[2].substring.map(String.init) else { continue }
            let first = params.split(separator: ",").first.map { $0.replacingOccurrences(of: " ", with: "") } ?? ""
            guard first == "ag_tensor*out", !name.hasPrefix("ag_tensor_"), !name.hasPrefix("ag_custom_"),
                  !name.hasPrefix("ag_safetensors_"), !params.contains("user_data") else { continue }
            ops.insert(name)
        }
        return ops
    }

    func testTheTableCoversEveryOpOfTheCatalogue() throws {
        let catalogue = try Self.catalogueOps()
        XCTAssertGreaterThan(catalogue.count, 50, "the header parse found too few ops: \(catalogue.sorted())")
        let covered = Set(Self.cases.compactMap(\.op))
        XCTAssertEqual(catalogue.subtracting(covered).sorted(), [], "ops of include/autograd.h without a row in ForwardModeTests.cases")
        XCTAssertEqual(covered.subtracting(catalogue).sorted(), [], "rows naming a function that is not an op of the header")
    }

    // MARK: - The transform's contract

    func testTangentsOfTheWrongShapeDTypeOrCountThrow() throws {
        let x = try Tensor([1, 2, 3], shape: [3])
        let f: ([Tensor]) throws -> [Tensor] = { [try $0[0].exp()] }
        XCTAssertThrowsError(try Transforms.jvp(f, primals: [x], tangents: [Tensor.zeros([4])])) { error in
            guard case .shape? = error as? AutogradError else { return XCTFail("\(error) is not a shape error") }
        }
        XCTAssertThrowsError(try Transforms.jvp(f, primals: [x], tangents: [Tensor.zeros([3, 1])]))
        XCTAssertThrowsError(try Transforms.jvp(f, primals: [x], tangents: [Tensor.zeros([3], dtype: .float32)])) { error in
            guard case .dtype? = error as? AutogradError else { return XCTFail("\(error) is not a dtype error") }
        }
        XCTAssertThrowsError(try Transforms.jvp(f, primals: [x], tangents: []))
        XCTAssertThrowsError(try Transforms.hvp({ try $0.sum() }, at: x, vector: Tensor.zeros([2])))
        XCTAssertThrowsError(try Transforms.hvp({ try $0.sum() }, at: x, vector: Tensor.zeros([3], dtype: .float32)))
    }

    func testAnOutputThatDoesNotDependOnTheInputHasAZeroTangent() throws {
        let x = try Tensor([1, 2, 3], shape: [3]), t = try Tensor([1, 1, 1], shape: [3])
        let c = try Tensor([5, 6], shape: [2])
        let (outs, tans) = try Transforms.jvp({ xs in [try c.exp(), try xs[0].gt(c.constant(1.5)), try xs[0].detach() * 2, try xs[0].sum()] },
                                              primals: [x], tangents: [t])
        XCTAssertEqual(outs.count, 4)
        assertValues(tans[0], [0, 0])
        assertValues(tans[1], [0, 0, 0])
        assertValues(tans[2], [0, 0, 0])
        assertValues(tans[3], [3])
        // Two primals, one unused.
        let (_, two) = try Transforms.jvp({ xs in [try xs[0].sin()] }, primals: [x, c], tangents: [t, c])
        assertValues(two[0], [1, 2, 3].map { Foundation.cos($0) })
        let (_, other) = try Transforms.jvp({ xs in [try xs[1].sin()] }, primals: [x, c], tangents: [Tensor.zeros([3]), t.slice(axis: 0, start: 0, stop: 2)])
        assertValues(other[0], [5, 6].map { Foundation.cos($0) })
    }

    func testTangentsDoNotLeakOutOfTheirPass() throws {
        let x = try Tensor([0.5, -1], shape: [2])
        var kept: Tensor? = nil
        _ = try Transforms.jvp({ xs in kept = try xs[0].exp(); return [kept!] }, primals: [x], tangents: [Tensor.ones([2])])
        // The result made in the pass carries no tangent into a later one.
        let (_, tans) = try Transforms.jvp({ xs in [try xs[0] * kept!] }, primals: [x], tangents: [Tensor.ones([2])])
        assertValues(tans[0], [0.5, -1].map { Foundation.exp($0) })
    }

    // MARK: - Reverse over forward

    /// The gradient of ⟨jvp tangent, c⟩ with respect to the primal (which requires grad) against
    /// central differences of that scalar.
    func testReverseOverForwardMatchesFiniteDifferences() throws {
        var rng = TestRNG(404)
        let fs: [(String, [Int], ([Tensor]) throws -> Tensor)] = [
            ("tanh * x", [2, 3], { try $0[0].tanh() * $0[0] }),
            ("matmul x @ xᵀ", [3, 2], { try $0[0].matmul($0[0].transposed()) }),
            ("softmax", [2, 4], { try $0[0].softmax(axis: 1) }),
            ("max * x", [3, 4], { try $0[0].max(axes: [1], keepDims: true) * $0[0] }),
            ("var", [3, 4], { try $0[0].variance(axes: [0]) }),
            ("logsumexp of sin", [3, 4], { try $0[0].sin().logSumExp(axes: [1]) }),
            ("linear", [2, 3], { try $0[0].linear(weight: $0[0].tanh(), bias: $0[0].sum(axes: [1])) }),
            ("gather, concat", [2, 3], { try Tensor.concat([$0[0].gather(axis: 1, index: [2, 2, 0, 1], indexShape: [2, 2]).exp(), $0[0]], axis: 1) }),
        ]
        for (name, shape, f) in fs {
            let x0 = rng.tensor(shape, requiresGrad: false)
            let t = rng.tensor(shape, -1, 1, gap: 0, requiresGrad: false)
            let y0 = try f([x0])
            let c = rng.tensor(y0.shape, -1, 1, gap: 0, requiresGrad: false)
            func pairing(_ x: Tensor) throws -> Tensor {
                let (_, tans) = try Transforms.jvp({ [try f($0)] }, primals: [x], tangents: [t])
                return try (tans[0] * c).sum()
            }
            let x = x0.detach()
            try x.setRequiresGrad(true)
            let s = try pairing(x)
            XCTAssertTrue(s.requiresGrad, "\(name): the tangent must be differentiable in the primal")
            let g = try XCTUnwrap(Tensor.gradients(of: [s], withRespectTo: [x])[0], name)
            let numeric = try Self.gradientByDifferences({ try pairing($0).item() }, at: x0)
            for (i, (a, e)) in zip(g.values, numeric).enumerated() {
                XCTAssertEqual(a, e, accuracy: 1e-6 * (1 + Swift.abs(e)), "\(name): element \(i)")
            }
        }
    }

    /// ∇f(x) of a scalar function by central differences, one element at a time.
    static func gradientByDifferences(_ f: (Tensor) throws -> Double, at x: Tensor, eps: Double = 1e-6) throws -> [Double] {
        try (0..<x.count).map { i in
            var plus = x.values, minus = x.values
            plus[i] += eps
            minus[i] -= eps
            return (try f(Tensor(plus, shape: x.shape)) - f(Tensor(minus, shape: x.shape))) / (2 * eps)
        }
    }

    // MARK: - Forward over reverse

    // nonisolated(unsafe): a table of closures that capture nothing, built once and only read.
    nonisolated(unsafe) static let composites: [(String, [Int], (Tensor) throws -> Tensor)] = [
        ("tanh chain", [2, 3], { try ($0.tanh() * $0.sin()).tanh().sum() }),
        ("softmax", [2, 4], { try ($0.softmax(axis: 1) * $0).sum() }),
        ("log_softmax, cross_entropy", [3, 4], { try $0.exp().crossEntropy(labels: [0, 3, 1]) + $0.logSoftmax(axis: 0).max() }),
        ("matmul", [3, 3], { try $0.matmul($0).tanh().matmul($0.transposed()).sum() }),
        ("logsumexp", [3, 4], { try ($0 * $0).logSumExp(axes: [1]).logSumExp() }),
        ("var, mean", [3, 4], { try $0.exp().variance(axes: [1]).sum() * $0.mean() }),
        ("max, min, relu, abs", [3, 4], { try ($0.max(axes: [0]) * $0.min(axes: [0])).sum() + ($0.relu() * $0.abs() * $0).sum() }),
        ("linear, mse", [4, 3], { try $0.linear(weight: $0.slice(axis: 0, start: 0, stop: 2).sigmoid(), bias: $0.sum(axes: [0]).slice(axis: 0, start: 0, stop: 2)).mseLoss(Tensor.ones([4, 2])) }),
        ("shape ops", [2, 3], { try Tensor.stack([$0, $0.transposed().reshaped([2, 3]).exp()], axis: 1).indexSelect(axis: 0, [1, 1, 0]).expanded(to: [2, 3, 2, 3]).gelu().sum() }),
        ("division, pow", [2, 3], { try (($0 * $0 + 1) / ($0.softplus() + 1)).pow($0.cos()).sum() }),
    ]

    /// hvp (forward over reverse) equals reverse over reverse (grad of ⟨grad, v⟩ with
    /// create_graph) and central differences of the gradient along v.
    func testHVPEqualsReverseOverReverseAndFiniteDifferences() throws {
        var rng = TestRNG(8080)
        for (name, shape, f) in Self.composites {
            let x0 = rng.tensor(shape, -1.5, 1.5, requiresGrad: false)
            let v = rng.tensor(shape, -1, 1, gap: 0, requiresGrad: false)
            let hv = try Transforms.hvp(f, at: x0, vector: v)
            XCTAssertEqual(hv.shape, shape, name)

            let x = x0.detach()
            try x.setRequiresGrad(true)
            let g = try XCTUnwrap(Tensor.gradients(of: [f(x)], withRespectTo: [x], createGraph: true)[0], name)
            let rr = try XCTUnwrap(Tensor.gradients(of: [(g * v).sum()], withRespectTo: [x])[0], name)
            for (i, (a, e)) in zip(hv.values, rr.values).enumerated() {
                XCTAssertEqual(a, e, accuracy: 1e-10 * (1 + Swift.abs(e)), "\(name): hvp vs reverse over reverse, element \(i)")
            }
            func gradient(_ at: [Double]) throws -> [Double] {
                let p = try Tensor(at, shape: shape)
                try p.setRequiresGrad(true)
                return try Tensor.gradients(of: [f(p)], withRespectTo: [p])[0]!.values
            }
            let eps = 1e-6
            let plus = try gradient(zip(x0.values, v.values).map { $0 + eps * $1 })
            let minus = try gradient(zip(x0.values, v.values).map { $0 - eps * $1 })
            for (i, (a, (p, m))) in zip(hv.values, zip(plus, minus)).enumerated() {
                let e = (p - m) / (2 * eps)
                XCTAssertEqual(a, e, accuracy: 1e-6 * (1 + Swift.abs(e)), "\(name): hvp vs differences, element \(i)")
            }
        }
    }

    /// Forward over reverse by hand: the jvp of a function that computes a gradient without
    /// create_graph. The backward pass inside the jvp must still carry tangents (no fused loops
    /// or in-place sums, masked rules that keep g's tangent, gradients handed out with theirs).
    func testForwardOverReverseWithoutCreateGraph() throws {
        var rng = TestRNG(6006)
        for (name, shape, f) in Self.composites {
            let x0 = rng.tensor(shape, -1.5, 1.5, requiresGrad: false)
            let v = rng.tensor(shape, -1, 1, gap: 0, requiresGrad: false)
            let x = x0.detach()
            try x.setRequiresGrad(true)
            let (outs, tans) = try Transforms.jvp({ xs in
                [try XCTUnwrap(Tensor.gradients(of: [f(xs[0])], withRespectTo: [xs[0]])[0])]
            }, primals: [x], tangents: [v])
            XCTAssertFalse(outs[0].requiresGrad, "\(name): no graph was asked for")
            let reference = try Transforms.hvp(f, at: x0, vector: v)
            for (i, (a, e)) in zip(tans[0].values, reference.values).enumerated() {
                XCTAssertEqual(a, e, accuracy: 1e-10 * (1 + Swift.abs(e)), "\(name): element \(i)")
            }
            // The same through backward() and .grad, accumulated over two passes (2 H v).
            let (_, accumulated) = try Transforms.jvp({ xs in
                try f(xs[0]).backward()
                try f(xs[0]).backward()
                return [try XCTUnwrap(xs[0].grad)]
            }, primals: [x], tangents: [v])
            x.zeroGrad()
            for (i, (a, e)) in zip(accumulated[0].values, reference.values).enumerated() {
                XCTAssertEqual(a, 2 * e, accuracy: 1e-10 * (1 + Swift.abs(e)), "\(name) (backward, .grad): element \(i)")
            }
        }
    }

    func testHessianIsSymmetricAndMatchesHVP() throws {
        var rng = TestRNG(9)
        let x = rng.tensor([2, 2], requiresGrad: false)
        let f: (Tensor) throws -> Tensor = { try ($0.matmul($0).tanh() * $0.softmax(axis: 0)).sum() }
        let h = try Transforms.hessian(f, at: x)
        XCTAssertEqual(h.shape, [2, 2, 2, 2])
        let hv = h.values
        for i in 0..<4 { for j in 0..<4 { XCTAssertEqual(hv[i * 4 + j], hv[j * 4 + i], accuracy: 1e-10, "symmetry \(i) \(j)") } }
        let v = rng.tensor([2, 2], -1, 1, gap: 0, requiresGrad: false)
        let product = try Transforms.hvp(f, at: x, vector: v)
        for i in 0..<4 {
            let expected = (0..<4).reduce(0.0) { $0 + hv[i * 4 + $1] * v.values[$1] }
            XCTAssertEqual(product.values[i], expected, accuracy: 1e-10, "H v element \(i)")
        }
    }

    // MARK: - Jacobians

    func testForwardJacobianEqualsReverseAndFiniteDifferences() throws {
        var rng = TestRNG(31)
        let fs: [(String, [Int], (Tensor) throws -> Tensor)] = [
            ("softmax", [2, 3], { try $0.softmax(axis: 1) }),
            ("matmul", [3, 2], { try $0.matmul($0.transposed()).tanh() }),
            ("logsumexp, max", [2, 3], { try Tensor.stack([$0.logSumExp(axes: [1]), $0.max(axes: [1])], axis: 0) }),
            ("gather, var", [3, 3], { try $0.gather(axis: 0, index: [2, 1, 0], indexShape: [1, 3]).squeezed() * $0.variance(axes: [0]) }),
            ("scalar output", [4], { try $0.exp().sum() }),
            ("constant output", [2], { _ in try Tensor.ones([3]) }),
        ]
        for (name, shape, f) in fs {
            let x = rng.tensor(shape, requiresGrad: false)
            let forward = try Transforms.jacobian(f, at: x, mode: .forward)
            let reverse = try Transforms.jacobian(f, at: x, mode: .reverse)
            XCTAssertEqual(forward.shape, reverse.shape, name)
            let y = try f(x)
            XCTAssertEqual(forward.shape, y.shape + shape, name)
            for (i, (a, b)) in zip(forward.values, reverse.values).enumerated() {
                XCTAssertEqual(a, b, accuracy: 1e-12 * (1 + Swift.abs(b)), "\(name): forward vs reverse, element \(i)")
            }
            // Column j is the difference quotient along the j-th basis vector.
            for j in 0..<x.count {
                var e = [Double](repeating: 0, count: x.count)
                e[j] = 1
                let column = try Self.centralDifference({ try f($0[0]) }, [x], [Tensor(e, shape: shape)])
                for (i, expected) in column.enumerated() {
                    XCTAssertEqual(forward.values[i * x.count + j], expected, accuracy: 1e-6 * (1 + Swift.abs(expected)), "\(name): J[\(i), \(j)]")
                }
            }
        }
    }
}
