/// sum, mean, max, min, var, logsumexp over any set of axes, and cumsum along one: forward and
/// derivative rules.
extension Tensor {
    /// Sums over `axes` (empty: every axis; negative axes count from the end).
    package func sum(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        if !dtype.isFloatingPoint { return try countingSum(axes: axes, keepDims: keepDims) }
        let axes = try Shape.normalizeAxes(axes, rank: rank)
        var reduce = [Bool](repeating: false, count: rank)
        for a in axes { reduce[a] = true }
        var keptShape = shape
        for a in axes { keptShape[a] = 1 }
        let out = try Tensor(uninitialized: keptShape, dtype: dtype)
        switch dtype {
        case .float32: try Reduction.sum(buffer(Float.self), shape: shape, reduce: reduce, into: out.buffer(Float.self))
        case .float64: try Reduction.sum(buffer(Double.self), shape: shape, reduce: reduce, into: out.buffer(Double.self))
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        let result = keepDims ? out : Tensor(shape: shape.indices.filter { !reduce[$0] }.map { shape[$0] }, storage: out.storage)
        if Tensor.shouldRecord(self) {
            // d sum / dx = 1 everywhere: the gradient is broadcast back over the reduced axes.
            let inputShape = shape
            result.record("sum", self) { g, _ in
                InputGradients(try g.reshaped(keptShape).expanded(to: inputShape))
            }
        }
        if Trace.isRecording {
            let inputShape = shape, dtype = dtype
            Trace.note(result, "sum", [self], kernel: .buffers { args, out in
                switch dtype {
                case .float32: try Reduction.sum(Tensor.elements(args[0], Float.self, inputShape), shape: inputShape, reduce: reduce, into: Tensor.elements(out, Float.self, keptShape))
                case .float64: try Reduction.sum(Tensor.elements(args[0], Double.self, inputShape), shape: inputShape, reduce: reduce, into: Tensor.elements(out, Double.self, keptShape))
                case .int64, .bool: break  // unreachable: only floating-point operands get here
                }
            }) { ins in try ins[0].sum(axes: axes, keepDims: keepDims) }
        }
        // Linear: the tangent summed over the same axes.
        try result.deriveTangent(from: self) { t in try t.sum(axes: axes, keepDims: keepDims) }
        return result
    }

    /// The mean over `axes` (empty: every axis): the sum times 1/count.
    package func mean(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        try requireFloatingPoint("mean")
        let normalized = try Shape.normalizeAxes(axes, rank: rank)
        let n = normalized.reduce(1) { $0 * shape[$1] }
        return try sum(axes: normalized, keepDims: keepDims).multiplying(constant(1 / Double(n)))
    }

    /// The largest element over `axes`; the gradient is split evenly among ties.
    package func max(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        try extremum("max", axes: axes, keepDims: keepDims, Reduction.max, Reduction.max)
    }

    /// The smallest element over `axes`; the gradient is split evenly among ties.
    package func min(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        try extremum("min", axes: axes, keepDims: keepDims, Reduction.min, Reduction.min)
    }

    private func extremum(_ name: StaticString, axes: [Int], keepDims: Bool,
                          _ k32: @escaping (UnsafeMutableBufferPointer<Float>, [Int], [Bool], UnsafeMutableBufferPointer<Float>) -> Void,
                          _ k64: @escaping (UnsafeMutableBufferPointer<Double>, [Int], [Bool], UnsafeMutableBufferPointer<Double>) -> Void) throws -> Tensor {
        try requireFloatingPoint("\(name)")
        let axes = try Shape.normalizeAxes(axes, rank: rank)
        var reduce = [Bool](repeating: false, count: rank)
        var keptShape = shape
        for a in axes { reduce[a] = true; keptShape[a] = 1 }
        guard axes.allSatisfy({ shape[$0] > 0 }) else {
            throw AutogradError.shape("\(name): cannot reduce over an axis of extent 0 (shape \(shape))")
        }
        let out = try Tensor(uninitialized: keptShape, dtype: dtype)
        switch dtype {
        case .float32: k32(buffer(Float.self), shape, reduce, out.buffer(Float.self))
        case .float64: k64(buffer(Double.self), shape, reduce, out.buffer(Double.self))
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        let result = keepDims ? out : Tensor(shape: shape.indices.filter { !reduce[$0] }.map { shape[$0] }, storage: out.storage)
        if Tensor.shouldRecord(self) {
            // The gradient goes to the elements equal to the extremum, shared among ties;
            // selected, so an infinite or nan gradient stays out of the other elements.
            result.record(name, inputs: [self], saved: [self, out.detach()]) { g, node in
                let share = try Tensor.extremumShare(node.saved(0), node.saved(1), axes: axes)
                return InputGradients(try Tensor.masked(g.reshaped(keptShape), by: share))
            }
        }
        if Trace.isRecording {
            let (inputShape, dtype) = (shape, dtype)
            Trace.note(result, name, [self], kernel: .buffers { args, o in
                switch dtype {
                case .float32: k32(Tensor.elements(args[0], Float.self, inputShape), inputShape, reduce, Tensor.elements(o, Float.self, keptShape))
                case .float64: k64(Tensor.elements(args[0], Double.self, inputShape), inputShape, reduce, Tensor.elements(o, Double.self, keptShape))
                case .int64, .bool: break  // unreachable: only floating-point operands get here
                }
            }) { ins in try ins[0].extremum(name, axes: axes, keepDims: keepDims, k32, k64) }
        }
        // The transpose of the rule: the tangents of the elements equal to the extremum,
        // averaged over ties (the same shares, selected the same way).
        try result.deriveTangent(from: self) { t in
            let share = try Tensor.extremumShare(self, out.detach(), axes: axes)
            return try Tensor.masked(t, by: share).sum(axes: axes, keepDims: keepDims)
        }
        return result
    }

    /// Each element's share of an extremum's derivative: 1/(number of ties) where x equals the
    /// extremum (`extremum`: its values, the reduced axes kept as extent 1), 0 elsewhere; a
    /// constant. The one statement of max's and min's tie rule, for the VJP and the JVP.
    static func extremumShare(_ x: Tensor, _ extremum: Tensor, axes: [Int]) throws -> Tensor {
        try withNoGrad {
            let hits = try x.detach().eq(extremum)
            return try hits.dividing(by: hits.sum(axes: axes, keepDims: true))
        }
    }

    /// The variance over `axes`, dividing by count - correction (1: sample variance), or by 0
    /// when correction >= count, as torch.var does: then a positive sum of squares gives inf and
    /// a zero one (all elements equal, or none) nan.
    package func variance(axes: [Int] = [], correction: Int = 1, keepDims: Bool = false) throws -> Tensor {
        try requireFloatingPoint("var")
        guard correction >= 0 else { throw AutogradError.argument("var: correction \(correction) is negative") }
        let normalized = try Shape.normalizeAxes(axes, rank: rank)
        let n = normalized.reduce(1) { $0 * shape[$1] }
        // n >= 0 and correction >= 0, so n - correction cannot overflow.
        let divisor = Double(Swift.max(0, n - correction))
        let result = try withNoGrad { () -> Tensor in
            let x = detach()
            let centered = try x.subtracting(x.mean(axes: normalized, keepDims: true))
            return try centered.multiplying(centered).sum(axes: normalized, keepDims: keepDims)
                .dividing(by: constant(divisor))
        }
        if Tensor.shouldRecord(self) {
            var keptShape = shape
            for a in normalized { keptShape[a] = 1 }
            // d var / dx = 2 (x - mean(x)) / divisor, written in differentiable ops (the mean
            // included) so that create_graph gives the true second derivative. With a divisor
            // of 0 this is +-inf by the sign of g (x - mean), nan where x == mean or g == 0: the
            // hand derivation, and torch.var's gradient when dims are given (torch gives +inf
            // for every x != mean when reducing over all elements with dim=None).
            result.record("var", inputs: [self], saved: [self]) { g, node in
                let x = node.saved(0)
                let centered = try x.subtracting(x.mean(axes: normalized, keepDims: true))
                return InputGradients(try g.reshaped(keptShape).multiplying(x.constant(2 / divisor)).multiplying(centered))
            }
        }
        if Trace.isRecording { Trace.noteNode(result, "var", [self]) { ins in try ins[0].variance(axes: axes, correction: correction, keepDims: keepDims) } }
        // d var = 2/divisor · Σ (x - mean(x)) t over the axes (the same factors as the rule).
        try result.deriveTangent(from: self) { t in
            let centered = try subtracting(mean(axes: normalized, keepDims: true))
            return try t.multiplying(constant(2 / divisor)).multiplying(centered).sum(axes: normalized, keepDims: keepDims)
        }
        return result
    }

    /// x - max(x) over `axes` (kept as extent 1), subtracted once in x's dtype, and the max
    /// itself. The difference is exact wherever exp of it is not negligible (x and the max
    /// within a factor 2 of each other, Sterbenz), so softmax, log_softmax and logsumexp lose
    /// nothing to a large offset. The max is a constant of the graph: the results do not depend
    /// on it mathematically. Every axis in `axes` has extent > 0 (callers handle empty axes
    /// directly). A non-finite max (+-inf, nan) is kept as it is (a row holding +inf, only -inf or a nan becomes all nan, as
    /// torch.softmax), or with `finiteShift` replaced by 0 (torch.logsumexp: +inf for a row
    /// holding +inf, -inf for a row of -inf).
    func shiftedByMax(axes: [Int], finiteShift: Bool) throws -> (shifted: Tensor, shift: Tensor) {
        let shift = try withNoGrad { () -> Tensor in
            let m = try detach().max(axes: axes, keepDims: true)
            return finiteShift ? try m.finiteOrZero() : m
        }
        return (try subtracting(shift), shift)
    }

    /// Each element, or 0 where it is not finite (no gradient).
    private func finiteOrZero() throws -> Tensor {
        let out = try mapped({ $0.isFinite ? $0 : 0 }, { $0.isFinite ? $0 : 0 })
        if Trace.isRecording { Trace.note(out, "finite_or_zero", [self]) { ins in try ins[0].finiteOrZero() } }
        return out
    }

    /// log(sum(exp(x))) over `axes`, as log(sum(exp(x - m))) + m with m the maximum (no
    /// overflow; x - m exact, see shiftedByMax). Over an axis of extent 0 it is -inf.
    package func logSumExp(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        try requireFloatingPoint("logsumexp")
        let normalized = try Shape.normalizeAxes(axes, rank: rank)
        if normalized.contains(where: { shape[$0] == 0 }) {
            // A sum over nothing: the result is -inf everywhere, made directly (one buffer, not
            // the five a shifted exp-sum-log would allocate); the input is empty, so is its gradient.
            let kept = shape.indices.map { normalized.contains($0) ? 1 : shape[$0] }
            let out = try Tensor.full(keepDims ? kept : shape.indices.filter { !normalized.contains($0) }.map { shape[$0] },
                                      -Double.infinity, dtype: dtype)
            if Tensor.shouldRecord(self) {
                let inputShape = shape, dt = dtype
                out.record("logsumexp", self) { _, _ in InputGradients(try Tensor.zeros(inputShape, dtype: dt)) }
            }
            if Trace.isRecording { Trace.note(out, "logsumexp", [self]) { ins in try ins[0].logSumExp(axes: axes, keepDims: keepDims) } }
            // A sum over nothing: its tangent is 0 (the tangent summed over the same empty axes).
            try out.deriveTangent(from: self) { t in try t.sum(axes: normalized, keepDims: keepDims) }
            return out
        }
        let (shifted, shift) = try shiftedByMax(axes: normalized, finiteShift: true)
        let lse = try shifted.exp().sum(axes: normalized, keepDims: true).log().adding(shift)
        if keepDims { return lse }
        return try lse.reshaped(shape.indices.filter { !normalized.contains($0) }.map { shape[$0] })
    }

    /// The cumulative sum along `axis` (negative counts from the end): element i of the result
    /// is the sum of elements 0...i along the axis (torch.cumsum). A 0-d tensor takes axis 0 or
    /// -1 and is its own cumulative sum. float32 is summed in double, each element rounded once
    /// (PyTorch's CPU order and accumulator); float64 in a compensated running sum.
    package func cumsum(axis: Int) throws -> Tensor { try cumulativeSum(axis: axis, reverse: false) }

    /// cumsum along `axis`, or with `reverse` the sums of elements i... to the end. Each is the
    /// other's VJP (d out_i / d x_j = 1 for j <= i), so the rule is one call, differentiable at
    /// every order; the JVP is the op itself applied to the tangent.
    func cumulativeSum(axis: Int, reverse: Bool) throws -> Tensor {
        let name: StaticString = reverse ? "cumsum_reverse" : "cumsum"
        try requireFloatingPoint("cumsum")
        let a: Int
        if rank == 0 {
            // As PyTorch: a 0-d tensor has one axis to accumulate along, numbered 0 or -1.
            guard axis == 0 || axis == -1 else {
                throw AutogradError.argument("cumsum: axis \(axis) is out of range for a tensor of rank 0 (0 or -1)")
            }
            a = 0
        } else {
            a = try Tensor.normalizeAxis(axis, rank: rank, "cumsum")
        }
        let n = rank == 0 ? 1 : shape[a]
        let outer = rank == 0 ? 1 : shape[..<a].reduce(1, *)
        let inner = rank == 0 ? 1 : shape[(a + 1)...].reduce(1, *)
        let out = try Tensor(uninitialized: shape, dtype: dtype)
        switch dtype {
        case .float32:
            if let xp = buffer(Float.self).baseAddress, let op = out.buffer(Float.self).baseAddress {
                Reduction.cumulativeSum(xp, into: op, outer: outer, n: n, inner: inner, reverse: reverse)
            }
        case .float64:
            if let xp = buffer(Double.self).baseAddress, let op = out.buffer(Double.self).baseAddress {
                Reduction.cumulativeSum(xp, into: op, outer: outer, n: n, inner: inner, reverse: reverse)
            }
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        if Tensor.shouldRecord(self) {
            out.record(name, self) { g, _ in InputGradients(try g.cumulativeSum(axis: a, reverse: !reverse)) }
        }
        if Trace.isRecording { Trace.note(out, name, [self]) { ins in try ins[0].cumulativeSum(axis: axis, reverse: reverse) } }
        try out.deriveTangent(from: self) { t in try t.cumulativeSum(axis: a, reverse: reverse) }
        return out
    }
}

extension Tensor {
    /// The sum of an int64 or bool tensor over `axes`, as int64 (a count of true elements for
    /// bool); wraps on int64 overflow, as PyTorch's does. Records nothing: integers have no gradient.
    func countingSum(axes: [Int], keepDims: Bool) throws -> Tensor {
        let axes = try Shape.normalizeAxes(axes, rank: rank)
        var keptShape = shape
        for a in axes { keptShape[a] = 1 }
        let out = try Tensor.zeros(keptShape, dtype: .int64)
        let o = out.integers()
        if count > 0 {
            // Each input element adds into the output element its index maps to (reduced axes
            // dropped): kept strides, 0 along reduced axes.
            var strides = Shape.strides(keptShape)
            for a in axes { strides[a] = 0 }
            var index = [Int](repeating: 0, count: rank), off = 0
            let ints = dtype == .int64 ? integers() : nil, bits = dtype == .bool ? flags() : nil
            for i in 0..<count {
                o[off] &+= ints?[i] ?? (bits![i] == 0 ? 0 : 1)  // non-zero bool bytes count as 1
                var d = rank - 1
                while d >= 0 {
                    index[d] += 1
                    off += strides[d]
                    if index[d] < shape[d] { break }
                    off -= strides[d] * shape[d]
                    index[d] = 0
                    d -= 1
                }
            }
        }
        let result = keepDims ? out : Tensor(shape: shape.indices.filter { !axes.contains($0) }.map { shape[$0] }, storage: out.storage)
        if Trace.isRecording { Trace.note(result, "sum", [self]) { ins in try ins[0].countingSum(axes: axes, keepDims: keepDims) } }
        return result
    }
}
