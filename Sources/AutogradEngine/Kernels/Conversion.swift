/// Element conversions between the four dtypes, for copies in and out, to_dtype and full.
/// float -> int64 truncates toward zero (as C and PyTorch do) and refuses nan, inf and values
/// outside int64 (Swift's conversion would trap on them); anything -> bool is "non-zero"
/// (nan is non-zero, as in PyTorch); bool is stored as exactly 0 or 1.
enum Conversion {
    /// Reads element i of `count` at `p` (dtype `from`) as a Double (int64 beyond 2^53 rounds).
    @inline(__always)
    static func double(_ p: UnsafeRawPointer, _ i: Int, _ from: DType) -> Double {
        switch from {
        case .float32: return Double(p.assumingMemoryBound(to: Float.self)[i])
        case .float64: return p.assumingMemoryBound(to: Double.self)[i]
        case .int64: return Double(p.assumingMemoryBound(to: Int64.self)[i])
        case .bool: return p.assumingMemoryBound(to: UInt8.self)[i] != 0 ? 1 : 0
        }
    }

    /// `x` as an int64, or nil when it is nan, infinite or outside int64 (truncated toward 0).
    @inline(__always)
    static func int64(_ x: Double) -> Int64? {
        // -2^63 and 2^63 are exactly representable: int64 holds -2^63 ..< 2^63.
        guard x.isFinite, x >= -9_223_372_036_854_775_808.0, x < 9_223_372_036_854_775_808.0 else { return nil }
        return Int64(x)
    }

    /// Converts `count` elements at `src` (dtype `from`) into `dst` (dtype `to`); the regions
    /// must not overlap unless they are the same dtype (then it is a memmove).
    static func convert(_ src: UnsafeRawPointer, _ from: DType, into dst: UnsafeMutableRawPointer, _ to: DType,
                        count: Int, _ op: String) throws {
        if count == 0 { return }
        if from == to {
            dst.copyMemory(from: src, byteCount: count * from.size)
            return
        }
        switch to {
        case .float32:
            let d = dst.assumingMemoryBound(to: Float.self)
            if from == .float64 {
                let s = src.assumingMemoryBound(to: Double.self)
                for i in 0..<count { d[i] = Float(s[i]) }
            } else {
                for i in 0..<count { d[i] = Float(double(src, i, from)) }
            }
        case .float64:
            let d = dst.assumingMemoryBound(to: Double.self)
            for i in 0..<count { d[i] = double(src, i, from) }
        case .int64:
            let d = dst.assumingMemoryBound(to: Int64.self)
            if from == .bool {
                let s = src.assumingMemoryBound(to: UInt8.self)
                for i in 0..<count { d[i] = s[i] != 0 ? 1 : 0 }
                return
            }
            for i in 0..<count {
                let x = double(src, i, from)
                guard let v = int64(x) else {
                    throw AutogradError.argument("\(op): element \(i) is \(x), which has no int64 value (nan, infinite or out of range)")
                }
                d[i] = v
            }
        case .bool:
            let d = dst.assumingMemoryBound(to: UInt8.self)
            switch from {
            case .int64:
                let s = src.assumingMemoryBound(to: Int64.self)
                for i in 0..<count { d[i] = s[i] != 0 ? 1 : 0 }
            case .float32:
                let s = src.assumingMemoryBound(to: Float.self)
                for i in 0..<count { d[i] = s[i] != 0 ? 1 : 0 }
            default:
                for i in 0..<count { d[i] = double(src, i, from) != 0 ? 1 : 0 }
            }
        }
    }
}
