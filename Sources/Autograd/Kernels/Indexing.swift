/// Copies along one axis by index: the kernels behind slice, index_select, concat and gather.
/// A tensor is viewed as (outer, extent, inner) around the axis.
enum Indexing {
    /// out[o, j, i] = x[o, indices[j], i]; indices are already checked.
    static func select<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, outer: Int, extent: Int, inner: Int,
                                         indices: [Int], into out: UnsafeMutableBufferPointer<T>) {
        guard let xp = x.baseAddress, let op = out.baseAddress else { return }
        let m = indices.count
        for o in 0..<outer {
            for (j, idx) in indices.enumerated() {
                let src = xp + (o * extent + idx) * inner, dst = op + (o * m + j) * inner
                dst.update(from: src, count: inner)
            }
        }
    }

    /// out[o, indices[j], i] += g[o, j, i] into an out of extent `extent` (zeroed here).
    static func add<T: TensorElement>(_ g: UnsafeMutableBufferPointer<T>, outer: Int, extent: Int, inner: Int,
                                      indices: [Int], into out: UnsafeMutableBufferPointer<T>) {
        out.update(repeating: 0)
        guard let gp = g.baseAddress, let op = out.baseAddress else { return }
        let m = indices.count
        for o in 0..<outer {
            for (j, idx) in indices.enumerated() {
                let src = gp + (o * m + j) * inner, dst = op + (o * extent + idx) * inner
                for i in 0..<inner { dst[i] += src[i] }
            }
        }
    }

    /// Walks every position p of `indexShape` (row-major); calls body(flat index position,
    /// offset in a tensor of `shape` at p with the `axis` coordinate replaced by index[p]).
    static func forEachGather(indexShape: [Int], index: [Int], shape: [Int], axis: Int, _ body: (Int, Int) -> Void) {
        let strides = Shape.strides(shape)
        let rank = indexShape.count
        var coord = [Int](repeating: 0, count: rank)
        for p in 0..<index.count {
            var off = 0
            for d in 0..<rank { off += (d == axis ? index[p] : coord[d]) * strides[d] }
            body(p, off)
            var d = rank - 1
            while d >= 0 {
                coord[d] += 1
                if coord[d] < indexShape[d] { break }
                coord[d] = 0
                d -= 1
            }
        }
    }
}
