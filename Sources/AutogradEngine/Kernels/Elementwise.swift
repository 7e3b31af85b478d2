/// Elementwise kernels over contiguous buffers. No autograd here: callers own shapes and graphs.
enum Elementwise {
    /// out[i] = f(x[i]).
    @inline(__always)
    static func map<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, into out: UnsafeMutableBufferPointer<T>, _ f: (T) -> T) {
        guard let xs = x.baseAddress, let os = out.baseAddress else { return }
        for i in 0..<out.count { os[i] = f(xs[i]) }
    }

    /// out = f(a, b) over the broadcast shape `outShape`; `aStrides`/`bStrides` are the
    /// operands' strides against `outShape` (0 along broadcast axes).
    @inline(__always)
    static func zip<T: TensorElement>(_ a: UnsafeMutableBufferPointer<T>, _ aStrides: [Int],
                                      _ b: UnsafeMutableBufferPointer<T>, _ bStrides: [Int],
                                      into out: UnsafeMutableBufferPointer<T>, shape outShape: [Int],
                                      _ f: (T, T) -> T) {
        guard let ap = a.baseAddress, let bp = b.baseAddress, let op = out.baseAddress else { return }
        let n = out.count
        // Fast paths: same shape, or one side a single element.
        // These loops stay on the calling thread: run from a worker, the closure `f` would be
        // an opaque call per element instead of inlined, vectorised code. The hot operations
        // have C kernels that are split over threads (Tensor.zipped).
        if a.count == n && b.count == n {
            for i in 0..<n { op[i] = f(ap[i], bp[i]) }
            return
        }
        if b.count == 1 && a.count == n {
            let s = bp[0]
            for i in 0..<n { op[i] = f(ap[i], s) }
            return
        }
        if a.count == 1 && b.count == n {
            let s = ap[0]
            for i in 0..<n { op[i] = f(s, bp[i]) }
            return
        }
        // General case: walk the outer axes with a counter, run the innermost axis as a loop.
        let rank = outShape.count
        let inner = outShape[rank - 1]
        let sa = aStrides[rank - 1], sb = bStrides[rank - 1]
        // The counter lives on the stack (rank <= Shape.maxRank): a replay runs this per call.
        withUnsafeTemporaryAllocation(of: Int.self, capacity: rank) { index in
            index.initialize(repeating: 0)
            var offA = 0, offB = 0, o = 0
            while o < n {
                for k in 0..<inner { op[o + k] = f(ap[offA + k * sa], bp[offB + k * sb]) }
                o += inner
                var axis = rank - 2
                while axis >= 0 {
                    index[axis] += 1
                    offA += aStrides[axis]
                    offB += bStrides[axis]
                    if index[axis] < outShape[axis] { break }
                    offA -= aStrides[axis] * outShape[axis]
                    offB -= bStrides[axis] * outShape[axis]
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }

    /// Copies a strided view of `src` (`strides` per axis of `shape`, 0 for broadcast axes)
    /// into the contiguous `out`: the kernel behind expand and permute.
    static func gather<T: BitwiseCopyable>(_ src: UnsafeMutableBufferPointer<T>, strides: [Int],
                                         into out: UnsafeMutableBufferPointer<T>, shape: [Int]) {
        guard let sp = src.baseAddress, let op = out.baseAddress, out.count > 0 else { return }
        let rank = shape.count
        if rank == 0 { op[0] = sp[0]; return }
        let n = out.count
        let inner = shape[rank - 1], si = strides[rank - 1]
        if rank >= 2 && strides[rank - 2] == 1 && si != 1 && si != 0 && inner > 1 {
            return transposeLastTwo(sp, strides: strides, into: op, shape: shape)
        }
        // The counter lives on the stack (rank <= Shape.maxRank): a replay runs this per call.
        withUnsafeTemporaryAllocation(of: Int.self, capacity: rank) { index in
            index.initialize(repeating: 0)
            var off = 0, o = 0
            while o < n {
                if si == 1 {
                    (op + o).update(from: sp + off, count: inner)
                } else {
                    for k in 0..<inner { op[o + k] = sp[off + k * si] }
                }
                o += inner
                var axis = rank - 2
                while axis >= 0 {
                    index[axis] += 1
                    off += strides[axis]
                    if index[axis] < shape[axis] { break }
                    off -= strides[axis] * shape[axis]
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }

    /// gather when the output's last two axes are the source's transposed (the source is
    /// contiguous along the output's second-to-last axis): each (rows x columns) matrix is
    /// copied in 16 x 16 tiles, so both the reads and the writes stay within a few cache lines
    /// (a permute from NHWC to NCHW, the backward of one).
    private static func transposeLastTwo<T: BitwiseCopyable>(_ sp: UnsafeMutablePointer<T>, strides: [Int],
                                                            into op: UnsafeMutablePointer<T>, shape: [Int]) {
        let rank = shape.count
        let rows = shape[rank - 2], columns = shape[rank - 1], sc = strides[rank - 1]
        let matrix = rows * columns
        guard matrix > 0 else { return }
        let count = shape.reduce(1, *) / matrix
        let tile = 16
        withUnsafeTemporaryAllocation(of: Int.self, capacity: Swift.max(rank - 2, 1)) { index in
            index.initialize(repeating: 0)
            var off = 0
            for m in 0..<count {
                let dst = op + m * matrix
                var r0 = 0
                while r0 < rows {
                    let r1 = Swift.min(rows, r0 + tile)
                    var c0 = 0
                    while c0 < columns {
                        let c1 = Swift.min(columns, c0 + tile)
                        for r in r0..<r1 {
                            let d = dst + r * columns, s = sp + off + r
                            for c in c0..<c1 { d[c] = s[c * sc] }
                        }
                        c0 = c1
                    }
                    r0 = r1
                }
                // The next matrix: the counter over the leading axes.
                var axis = rank - 3
                while axis >= 0 {
                    index[axis] += 1
                    off += strides[axis]
                    if index[axis] < shape[axis] { break }
                    off -= strides[axis] * shape[axis]
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }
}
