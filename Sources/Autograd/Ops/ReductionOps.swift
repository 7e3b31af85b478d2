/// sum and mean over any set of axes: forward kernels and derivative rules side by side.
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
            result.record("sum", inputs: [self]) { g, _ in
                [try g.reshaped(keptShape).expanded(to: inputShape)]
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
}
