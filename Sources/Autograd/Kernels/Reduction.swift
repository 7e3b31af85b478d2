/// Reduction kernels over contiguous buffers.
enum Reduction {
    /// Sums `x` (shape `shape`) over the axes marked in `reduce`, writing the result with the
    /// reduced axes kept as extent 1 (row-major) into `out`, which is overwritten.
    static func sum<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, shape: [Int], reduce: [Bool],
                                      into out: UnsafeMutableBufferPointer<T>) {
        guard let op = out.baseAddress else { return }
        out.update(repeating: 0)
        guard let xp = x.baseAddress, x.count > 0 else { return }
        let rank = shape.count
        if out.count == 1 {
            op[0] = sumAll(xp, x.count)
            return
        }
        // Strides of the output (keepdims layout) seen from the input's index space.
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
                op[off] += sumAll(xp + i, inner)
            } else {
                for k in 0..<inner { op[off + k] += xp[i + k] }
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
