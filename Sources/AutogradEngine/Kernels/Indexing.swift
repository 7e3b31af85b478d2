/// Copies along one axis by index: the kernels behind slice, index_select, concat and gather.
/// A tensor is viewed as (outer, extent, inner) around the axis.
enum Indexing {
    /// out[o, j, i] = x[o, indices[j], i]; indices are already checked.
    static func select<T: BitwiseCopyable>(_ x: UnsafeMutableBufferPointer<T>, outer: Int, extent: Int, inner: Int,
                                         indices: [Int], into out: UnsafeMutableBufferPointer<T>) {
        guard let xp = x.baseAddress, let op = out.baseAddress else { return }
        let m = indices.count
        if let first = Indexing.firstOfRun(indices) {
            // A run of consecutive indices (a slice): one block of m * inner per outer index.
            for o in 0..<outer { (op + o * m * inner).update(from: xp + (o * extent + first) * inner, count: m * inner) }
            return
        }
        for o in 0..<outer {
            for (j, idx) in indices.enumerated() {
                let src = xp + (o * extent + idx) * inner, dst = op + (o * m + j) * inner
                dst.update(from: src, count: inner)
            }
        }
    }

    /// out[o, indices[j], i] += g[o, j, i] into an out of extent `extent` (zeroed here). Indices
    /// that repeat need a `scratch` buffer; without one they must be distinct. With a
    /// `scratch` buffer of float64 (out's size; for indices that repeat) an entry named many
    /// times (an embedding row used 1e7 times) gets its sum within a few ulp instead of drifting
    /// as a running sum does: float32 terms are summed in the float64 scratch, float64 terms
    /// with their rounding errors carried there (see Accumulator).
    static func add<T: TensorElement>(_ g: UnsafeMutableBufferPointer<T>, outer: Int, extent: Int, inner: Int,
                                      indices: [Int], into out: UnsafeMutableBufferPointer<T>,
                                      scratch: UnsafeMutableBufferPointer<Double>?) {
        out.update(repeating: 0)
        guard let gp = g.baseAddress, let op = out.baseAddress else { return }
        let m = indices.count
        if let scratch {
            let acc = Accumulator(out, scratch)
            for o in 0..<outer {
                for (j, idx) in indices.enumerated() {
                    let src = gp + (o * m + j) * inner, at = (o * extent + idx) * inner
                    for i in 0..<inner { acc.add(src[i], at: at + i) }
                }
            }
            acc.finish()
            return
        }
        // Distinct indices: each entry of out gets one term or none, so a copy into the zeros
        // is the sum (a run of consecutive indices, a slice's backward, is one block per outer
        // index).
        if let first = Indexing.firstOfRun(indices) {
            for o in 0..<outer { (op + (o * extent + first) * inner).update(from: gp + o * m * inner, count: m * inner) }
            return
        }
        for o in 0..<outer {
            for (j, idx) in indices.enumerated() {
                (op + (o * extent + idx) * inner).update(from: gp + (o * m + j) * inner, count: inner)
            }
        }
    }

    /// indices[0] when the indices are indices[0], indices[0] + 1, ... (at least one), else nil.
    static func firstOfRun(_ indices: [Int]) -> Int? {
        guard let first = indices.first else { return nil }
        for (j, idx) in indices.enumerated() where idx != first + j { return nil }
        return first
    }

    /// Sums terms into the elements of `out` (zeroed) far more accurately than `out[i] += y`:
    /// float32 sums are kept in the float64 `scratch` and rounded once at the end; float64 sums
    /// run in `out` with each addition's rounding error accumulated in `scratch` (Neumaier's
    /// variant of Kahan summation) and added back at the end. Either way the error stays a few
    /// ulp of the exact sum for any realistic number of terms (a running float32 sum of 1e7
    /// terms of 0.1 is 9% off).
    struct Accumulator<T: TensorElement> {
        let out: UnsafeMutableBufferPointer<T>
        let scratch: UnsafeMutableBufferPointer<Double>

        /// `scratch` holds at least out.count elements; both are zeroed here.
        init(_ out: UnsafeMutableBufferPointer<T>, _ scratch: UnsafeMutableBufferPointer<Double>) {
            self.out = out
            self.scratch = scratch
            out.update(repeating: 0)
            scratch.update(repeating: 0)
        }

        @inline(__always)
        func add(_ y: T, at i: Int) {
            if T.self == Float.self {
                scratch[i] += Double(y)
            } else {
                let s = Double(out[i]), d = Double(y), t = s + d
                scratch[i] += Swift.abs(s) >= Swift.abs(d) ? (s - t) + d : (d - t) + s
                out[i] = T(t)
            }
        }

        /// Writes the final sums into `out`. A float64 sum that is infinite or nan keeps its
        /// value (its carry is inf - inf = nan and says nothing).
        func finish() {
            for i in 0..<out.count {
                if T.self == Float.self {
                    out[i] = T(scratch[i])
                } else if out[i].isFinite {
                    out[i] += T(scratch[i])
                }
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
