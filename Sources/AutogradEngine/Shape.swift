/// Shape arithmetic: element counts, strides, broadcasting and axis normalisation.
/// Every function here checks its input and throws rather than trapping.
public enum Shape {
    /// The largest rank a tensor may have (AG_MAX_NDIM in the C header).
    public static let maxRank = 8

    /// The number of elements of `shape`, refusing negative extents and shapes whose non-zero
    /// extents multiply past Int64: so every partial product of an accepted shape fits.
    public static func count(_ shape: [Int]) throws -> Int {
        guard shape.count <= maxRank else {
            throw AutogradError.argument("rank \(shape.count) exceeds the maximum rank \(maxRank)")
        }
        var n = 1
        var hasZero = false
        for d in shape {
            guard d >= 0 else { throw AutogradError.shape("negative extent \(d) in shape \(shape)") }
            if d == 0 { hasZero = true; continue }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            guard !overflow else { throw AutogradError.shape("the element count of shape \(shape) overflows int64") }
            n = p
        }
        return hasZero ? 0 : n
    }

    /// Row-major strides (in elements) of a contiguous tensor of `shape`.
    static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc &*= shape[i]
        }
        return s
    }

    /// NumPy broadcasting: align from the right; extents must be equal or one of them 1.
    public static func broadcast(_ a: [Int], _ b: [Int]) throws -> [Int] {
        if a == b { return a }
        let n = Swift.max(a.count, b.count)
        var out = [Int](repeating: 1, count: n)
        for i in 0..<n {
            let da = i < n - a.count ? 1 : a[i - (n - a.count)]
            let db = i < n - b.count ? 1 : b[i - (n - b.count)]
            if da == db || db == 1 { out[i] = da }
            else if da == 1 { out[i] = db }
            else { throw AutogradError.shape("shapes \(a) and \(b) do not broadcast (axis \(i): \(da) vs \(db))") }
        }
        return out
    }

    /// Strides for reading a tensor of `shape` as if it had shape `target` (a broadcast of it):
    /// broadcast axes get stride 0.
    static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let own = strides(shape)
        let lead = target.count - shape.count
        var s = [Int](repeating: 0, count: target.count)
        for i in 0..<shape.count where shape[i] != 1 || target[i + lead] == 1 {
            s[i + lead] = shape[i] == 1 ? 0 : own[i]
        }
        return s
    }

    /// Sorted, non-negative, distinct axes for a tensor of rank `rank`; empty `axes` means all.
    static func normalizeAxes(_ axes: [Int], rank: Int) throws -> [Int] {
        if axes.isEmpty { return Array(0..<rank) }
        var seen = [Bool](repeating: false, count: rank)
        for a in axes {
            let r = a < 0 ? a + rank : a
            guard r >= 0 && r < rank else {
                throw AutogradError.argument("axis \(a) is out of range for a tensor of rank \(rank)")
            }
            guard !seen[r] else { throw AutogradError.argument("axis \(a) is repeated in \(axes)") }
            seen[r] = true
        }
        return (0..<rank).filter { seen[$0] }
    }
}
