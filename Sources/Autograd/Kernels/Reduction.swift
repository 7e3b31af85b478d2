/// Reduction kernels over contiguous buffers.
enum Reduction {
    /// Sums `x` (shape `shape`) over the axes marked in `reduce` into `out`, laid out with the
    /// reduced axes kept as extent 1 (row-major); `out` is overwritten.
    static func sum<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, shape: [Int], reduce axes: [Bool],
                                      into out: UnsafeMutableBufferPointer<T>) {
        if out.count == 1, let xp = x.baseAddress {
            out[0] = sumAll(xp, x.count)
            return
        }
        reduce(x, shape: shape, reduce: axes, into: out, initial: 0, fold: { sumAll($0, $1) }, { $0 + $1 })
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

    /// The sum of n contiguous elements with eight independent accumulators (vectorisable,
    /// and more accurate than a single running sum).
    @inline(__always)
    static func sumAll<T: TensorElement>(_ p: UnsafeMutablePointer<T>, _ n: Int) -> T {
        var acc = SIMD8<T>()
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<T>.self)
            i += 8
        }
        var s = acc.sum()
        while i < n { s += p[i]; i += 1 }
        return s
    }
}
