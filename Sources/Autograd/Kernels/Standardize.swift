/// Row kernels of standardisation, layer norm's core: each of `rows` contiguous rows of `width`
/// values becomes (x - mean) / sqrt(var + eps) with the biased variance. The statistics and the
/// arithmetic run in float64 whatever the dtype; sums take four interleaved partial totals
/// (vectorises, and keeps a long float64 row's error near that of a blocked sum).
enum Standardize {
    /// y = (x - mean) r per row, r = 1 / sqrt(var + eps).
    static func forward<T: TensorElement>(_ x: UnsafePointer<T>, into y: UnsafeMutablePointer<T>, rows: Int, width: Int, eps: Double) {
        for row in 0..<rows {
            let xr = x + row * width, yr = y + row * width
            let (mean, r) = statistics(xr, width, eps)
            for i in 0..<width { yr[i] = T((Double(xr[i]) - mean) * r) }
        }
    }

    /// The VJP of `forward` for the incoming gradient g: per row, with y = (x - mean) r,
    /// dx = r (g - mean(g) - y mean(g y)); the statistics recomputed from x.
    static func backward<T: TensorElement>(_ g: UnsafePointer<T>, x: UnsafePointer<T>, into out: UnsafeMutablePointer<T>,
                                           rows: Int, width: Int, eps: Double) {
        let n = Double(width)
        for row in 0..<rows {
            let xr = x + row * width, gr = g + row * width, o = out + row * width
            let (mean, r) = statistics(xr, width, eps)
            var sg = (0.0, 0.0, 0.0, 0.0), sgy = (0.0, 0.0, 0.0, 0.0)
            var i = 0
            while i + 4 <= width {
                let g0 = Double(gr[i]), g1 = Double(gr[i + 1]), g2 = Double(gr[i + 2]), g3 = Double(gr[i + 3])
                sg.0 += g0; sg.1 += g1; sg.2 += g2; sg.3 += g3
                sgy.0 += g0 * ((Double(xr[i]) - mean) * r)
                sgy.1 += g1 * ((Double(xr[i + 1]) - mean) * r)
                sgy.2 += g2 * ((Double(xr[i + 2]) - mean) * r)
                sgy.3 += g3 * ((Double(xr[i + 3]) - mean) * r)
                i += 4
            }
            while i < width {
                let gi = Double(gr[i])
                sg.0 += gi
                sgy.0 += gi * ((Double(xr[i]) - mean) * r)
                i += 1
            }
            let meanG = ((sg.0 + sg.1) + (sg.2 + sg.3)) / n, meanGY = ((sgy.0 + sgy.1) + (sgy.2 + sgy.3)) / n
            for i in 0..<width {
                let y = (Double(xr[i]) - mean) * r
                o[i] = T(r * (Double(gr[i]) - meanG - y * meanGY))
            }
        }
    }

    /// A row's mean and 1 / sqrt(var + eps) (two passes: the variance sums squared deviations).
    @inline(__always)
    private static func statistics<T: TensorElement>(_ xr: UnsafePointer<T>, _ width: Int, _ eps: Double) -> (Double, Double) {
        let n = Double(width)
        var s = (0.0, 0.0, 0.0, 0.0)
        var i = 0
        while i + 4 <= width {
            s.0 += Double(xr[i]); s.1 += Double(xr[i + 1]); s.2 += Double(xr[i + 2]); s.3 += Double(xr[i + 3])
            i += 4
        }
        while i < width { s.0 += Double(xr[i]); i += 1 }
        let mean = ((s.0 + s.1) + (s.2 + s.3)) / n
        var q = (0.0, 0.0, 0.0, 0.0)
        i = 0
        while i + 4 <= width {
            let d0 = Double(xr[i]) - mean, d1 = Double(xr[i + 1]) - mean
            let d2 = Double(xr[i + 2]) - mean, d3 = Double(xr[i + 3]) - mean
            q.0 += d0 * d0; q.1 += d1 * d1; q.2 += d2 * d2; q.3 += d3 * d3
            i += 4
        }
        while i < width { let d = Double(xr[i]) - mean; q.0 += d * d; i += 1 }
        let variance = ((q.0 + q.1) + (q.2 + q.3)) / n
        return (mean, 1 / (variance + eps).squareRoot())
    }
}
