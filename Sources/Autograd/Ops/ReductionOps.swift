/// sum, mean, max, min, var, logsumexp over any set of axes: forward and derivative rules.
extension Tensor {
    /// Sums over `axes` (empty: every axis; negative axes count from the end).
    public func sum(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        let axes = try Shape.normalizeAxes(axes, rank: rank)
        var reduce = [Bool](repeating: false, count: rank)
        for a in axes { reduce[a] = true }
        var keptShape = shape
        for a in axes { keptShape[a] = 1 }
        let out = try Tensor(uninitialized: keptShape, dtype: dtype)
        switch dtype {
        case .float32: Reduction.sum(buffer(Float.self), shape: shape, reduce: reduce, into: out.buffer(Float.self))
        case .float64: Reduction.sum(buffer(Double.self), shape: shape, reduce: reduce, into: out.buffer(Double.self))
        }
        let result = keepDims ? out : Tensor(shape: shape.indices.filter { !reduce[$0] }.map { shape[$0] }, storage: out.storage)
        if Tensor.shouldRecord(self) {
            // d sum / dx = 1 everywhere: the gradient is broadcast back over the reduced axes.
            let inputShape = shape
            result.record("sum", self) { g, _ in
                InputGradients(try g.reshaped(keptShape).expanded(to: inputShape))
            }
        }
        return result
    }

    /// The mean over `axes` (empty: every axis): the sum times 1/count.
    public func mean(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        let normalized = try Shape.normalizeAxes(axes, rank: rank)
        let n = normalized.reduce(1) { $0 * shape[$1] }
        return try sum(axes: normalized, keepDims: keepDims).multiplying(constant(1 / Double(n)))
    }

    /// The largest element over `axes`; the gradient is split evenly among ties.
    public func max(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        try extremum("max", axes: axes, keepDims: keepDims, Reduction.max, Reduction.max)
    }

    /// The smallest element over `axes`; the gradient is split evenly among ties.
    public func min(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        try extremum("min", axes: axes, keepDims: keepDims, Reduction.min, Reduction.min)
    }

    private func extremum(_ name: StaticString, axes: [Int], keepDims: Bool,
                          _ k32: (UnsafeMutableBufferPointer<Float>, [Int], [Bool], UnsafeMutableBufferPointer<Float>) -> Void,
                          _ k64: (UnsafeMutableBufferPointer<Double>, [Int], [Bool], UnsafeMutableBufferPointer<Double>) -> Void) throws -> Tensor {
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
        }
        let result = keepDims ? out : Tensor(shape: shape.indices.filter { !reduce[$0] }.map { shape[$0] }, storage: out.storage)
        if Tensor.shouldRecord(self) {
            // The gradient goes to the elements equal to the extremum, shared among ties;
            // selected, so an infinite or nan gradient stays out of the other elements.
            result.record(name, inputs: [self], saved: [self, out.detach()]) { g, node in
                let x = node.saved(0)
                let share = try withNoGrad { () -> Tensor in
                    let hits = try x.eq(node.saved(1))
                    return try hits.dividing(by: hits.sum(axes: axes, keepDims: true))
                }
                return InputGradients(try Tensor.masked(g.reshaped(keptShape), by: share))
            }
        }
        return result
    }

    /// The variance over `axes`, dividing by count - correction (1: sample variance).
    public func variance(axes: [Int] = [], correction: Int = 1, keepDims: Bool = false) throws -> Tensor {
        guard correction >= 0 else { throw AutogradError.argument("var: correction \(correction) is negative") }
        let normalized = try Shape.normalizeAxes(axes, rank: rank)
        let n = normalized.reduce(1) { $0 * shape[$1] }
        let centered = try subtracting(mean(axes: normalized, keepDims: true))
        return try centered.multiplying(centered).sum(axes: normalized, keepDims: keepDims)
            .dividing(by: constant(Double(n - correction)))
    }

    /// log(sum(exp(x))) over `axes`, with the maximum subtracted first so it cannot overflow.
    public func logSumExp(axes: [Int] = [], keepDims: Bool = false) throws -> Tensor {
        let normalized = try Shape.normalizeAxes(axes, rank: rank)
        // The shift is a constant: the result does not depend on it mathematically.
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
            return out
        }
        let shift = try withNoGrad { () -> Tensor in
            let m = try detach().max(axes: normalized, keepDims: true)
            return try m.mapped("finite", { $0.isFinite ? $0 : 0 }, { $0.isFinite ? $0 : 0 })
        }
        let lse = try subtracting(shift).exp().sum(axes: normalized, keepDims: true).log().adding(shift)
        if keepDims { return lse }
        return try lse.reshaped(shape.indices.filter { !normalized.contains($0) }.map { shape[$0] })
    }
}
