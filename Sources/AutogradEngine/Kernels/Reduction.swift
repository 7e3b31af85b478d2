import CKernels

/// Reduction kernels over contiguous buffers.
enum Reduction {
    /// Sums `x` (shape `shape`) over the axes marked in `reduce` into `out`, laid out with the
    /// reduced axes kept as extent 1 (row-major); `out` is overwritten.
    ///
    /// Accuracy: the C kernels keep every partial sum in double and combine the terms pairwise
    /// (a run along the innermost axis) or in a cascade (a reduced axis further out), so the
    /// error grows with log(count), not count (float32 sums of 2e7 terms: about 1e-7 relative,
    /// where one running float sum drifts by 1e-2). Adjacent axes of the same kind are merged,
    /// so a pattern is one [outer, reduce, inner] pass; several separate reduced groups are
    /// summed one group at a time, innermost first, through intermediates of the input's dtype.
    static func sum<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, shape: [Int], reduce axes: [Bool],
                                      into out: UnsafeMutableBufferPointer<T>) throws {
        guard let op = out.baseAddress else { return }
        guard let xp = x.baseAddress, x.count > 0 else { out.update(repeating: 0); return }
        if out.count == 1 {
            // Everything into one element (the common case; no axis bookkeeping, no allocation).
            sumKernel(xp, 1, Int64(x.count), 1, op)
            return
        }
        var groups = coalesced(shape, axes)
        var source = UnsafePointer(xp)
        var intermediate: Storage? = nil
        while true {
            // The innermost reduced group splits the array into [outer, reduce, inner].
            guard let g = groups.lastIndex(where: { $0.reduced }) else {
                // Nothing left to reduce (only extent-1 axes were marked): a copy.
                op.update(from: source, count: out.count)
                break
            }
            let outer = groups[..<g].reduce(1) { $0 * $1.extent }
            let inner = groups[(g + 1)...].reduce(1) { $0 * $1.extent }
            let last = !groups[..<g].contains(where: { $0.reduced })
            let stage: Storage? = last ? nil : try Storage.make(dtype: T.dtype, count: outer * inner)
            guard let target = stage == nil ? op : stage?.buffer(T.self).baseAddress else {
                throw AutogradError.internal("sum: an intermediate of \(outer * inner) elements has no buffer")
            }
            sumKernel(source, Int64(outer), Int64(groups[g].extent), Int64(inner), target)
            if last { break }
            // Sum the next group from this stage's result (kept alive until the next stage).
            intermediate = stage
            source = UnsafePointer(target)
            groups.remove(at: g)
            groups = coalesced(groups.map(\.extent), groups.map(\.reduced))
        }
        withExtendedLifetime(intermediate) {}
    }

    /// `shape` with extent-1 axes dropped and adjacent axes of the same kind (reduced or kept)
    /// merged into one.
    static func coalesced(_ shape: [Int], _ reduce: [Bool]) -> [(extent: Int, reduced: Bool)] {
        var groups: [(extent: Int, reduced: Bool)] = []
        groups.reserveCapacity(shape.count)
        for (extent, reduced) in zip(shape, reduce) where extent != 1 {
            if let last = groups.last, last.reduced == reduced {
                groups[groups.count - 1].extent = last.extent * extent
            } else {
                groups.append((extent, reduced))
            }
        }
        return groups
    }

    /// The C kernel for T: out[o, i] = sum over r of x[o, r, i]. x holds outer * reduce * inner
    /// elements and out outer * inner, not overlapping. The pointer casts are the identity: T
    /// is Float when T.self == Float.self, and TensorElement's only other conformer is Double.
    @inline(__always)
    static func sumKernel<T: TensorElement>(_ x: UnsafePointer<T>, _ outer: Int64, _ reduce: Int64, _ inner: Int64,
                                            _ out: UnsafeMutablePointer<T>) {
        if T.self == Float.self {
            agk_sum_f32(UnsafeRawPointer(x).assumingMemoryBound(to: Float.self), outer, reduce, inner,
                        UnsafeMutableRawPointer(out).assumingMemoryBound(to: Float.self))
        } else {
            agk_sum_f64(UnsafeRawPointer(x).assumingMemoryBound(to: Double.self), outer, reduce, inner,
                        UnsafeMutableRawPointer(out).assumingMemoryBound(to: Double.self))
        }
    }

    /// The largest element over the marked axes (nan if any element is nan).
    static func max<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, shape: [Int], reduce axes: [Bool],
                                      into out: UnsafeMutableBufferPointer<T>) {
        let combine: (T, T) -> T = { a, b in a.isNaN || a > b ? a : b }
        reduce(x, shape: shape, reduce: axes, into: out, initial: -T.infinity,
               fold: { p, n in var m = -T.infinity; for i in 0..<n { m = combine(m, p[i]) }; return m }, combine)
    }

    /// The smallest element over the marked axes (nan if any element is nan).
    static func min<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, shape: [Int], reduce axes: [Bool],
                                      into out: UnsafeMutableBufferPointer<T>) {
        let combine: (T, T) -> T = { a, b in a.isNaN || a < b ? a : b }
        reduce(x, shape: shape, reduce: axes, into: out, initial: T.infinity,
               fold: { p, n in var m = T.infinity; for i in 0..<n { m = combine(m, p[i]) }; return m }, combine)
    }

    /// The general reduction: walks `x` in row-major order, combining each element into its
    /// output slot; a reduced innermost axis is folded in one call over the contiguous run.
    @inline(__always)
    static func reduce<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, shape: [Int], reduce: [Bool],
                                         into out: UnsafeMutableBufferPointer<T>, initial: T,
                                         fold: (UnsafeMutablePointer<T>, Int) -> T, _ combine: (T, T) -> T) {
        guard let op = out.baseAddress else { return }
        out.update(repeating: initial)
        guard let xp = x.baseAddress, x.count > 0 else { return }
        let rank = shape.count
        if rank == 0 { op[0] = combine(op[0], xp[0]); return }
        var outShape = shape
        for i in 0..<rank where reduce[i] { outShape[i] = 1 }
        let own = Shape.strides(outShape)
        var ostr = [Int](repeating: 0, count: rank)
        for i in 0..<rank where !reduce[i] { ostr[i] = own[i] }
        let inner = shape[rank - 1], si = ostr[rank - 1]
        var index = [Int](repeating: 0, count: rank)
        var off = 0, i = 0
        let n = x.count
        while i < n {
            if si == 0 {
                op[off] = combine(op[off], fold(xp + i, inner))
            } else {
                for k in 0..<inner { op[off + k] = combine(op[off + k], xp[i + k]) }
            }
            i += inner
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                off += ostr[axis]
                if index[axis] < shape[axis] { break }
                off -= ostr[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// Cumulative sums along the middle axis of x viewed as [outer, n, inner], into out (same
    /// layout): out[o, i, j] = sum of x[o, i', j] for i' <= i, or i' >= i when `reverse`.
    /// float32 runs in a double accumulator per lane, each result rounded once (the order and
    /// the accumulator of PyTorch's CPU kernel); float64 in a compensated running sum
    /// (Neumaier), so its error does not grow with n.
    static func cumulativeSum<T: TensorElement>(_ x: UnsafePointer<T>, into out: UnsafeMutablePointer<T>,
                                                outer: Int, n: Int, inner: Int, reverse: Bool) {
        guard outer > 0 && n > 0 && inner > 0 else { return }
        let sum = UnsafeMutableBufferPointer<Double>.allocate(capacity: inner)
        let compensation = UnsafeMutableBufferPointer<Double>.allocate(capacity: inner)
        defer { sum.deallocate(); compensation.deallocate() }
        let compensated = T.self == Double.self
        for o in 0..<outer {
            sum.update(repeating: 0)
            compensation.update(repeating: 0)
            let base = o * n * inner
            for step in 0..<n {
                let row = base + (reverse ? n - 1 - step : step) * inner
                for j in 0..<inner {
                    let v = Double(x[row + j])
                    let s = sum[j], t = s + v
                    if compensated {
                        // The low-order bits the addition lost, kept aside; an infinite or nan
                        // total is final (its compensation would be nan).
                        compensation[j] += Swift.abs(s) >= Swift.abs(v) ? (s - t) + v : (v - t) + s
                        sum[j] = t
                        out[row + j] = T(t.isFinite ? t + compensation[j] : t)
                    } else {
                        sum[j] = t
                        out[row + j] = T(t)
                    }
                }
            }
        }
    }
}
