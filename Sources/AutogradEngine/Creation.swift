#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// arange, eye and seeded random tensors.
extension Tensor {
    /// start, start + step, ... up to but excluding stop (numpy.arange).
    package static func arange(start: Double = 0, stop: Double, step: Double = 1, dtype: DType = .float64) throws -> Tensor {
        guard start.isFinite && stop.isFinite && step.isFinite else {
            throw AutogradError.argument("arange: start, stop and step must be finite (got \(start), \(stop), \(step))")
        }
        guard step != 0 else { throw AutogradError.argument("arange: step must not be 0") }
        let span = ((stop - start) / step).rounded(.up)
        guard span.isFinite && span <= Double(1 << 40) else {
            throw AutogradError.argument("arange: \(span) elements is more than the 2^40 allowed")
        }
        let n = span > 0 ? Int(span) : 0  // span is finite and at most 2^40 here
        return try generate([n], dtype: dtype) { start + Double($0) * step }
    }

    /// An (n, m) matrix with ones on the main diagonal.
    package static func eye(_ n: Int, _ m: Int? = nil, dtype: DType = .float64) throws -> Tensor {
        let m = m ?? n
        let t = try zeros([n, m], dtype: dtype)
        for i in 0..<Swift.min(n, m) {
            switch dtype {
            case .float32: t.buffer(Float.self)[i * m + i] = 1
            case .float64: t.buffer(Double.self)[i * m + i] = 1
            case .int64: t.integers()[i * m + i] = 1
            case .bool: t.flags()[i * m + i] = 1
            }
        }
        return t
    }

    /// Uniform values in [low, high) from a generator seeded with `seed` (the same everywhere).
    package static func uniform(_ shape: [Int], low: Double = 0, high: Double = 1, seed: UInt64, dtype: DType = .float64) throws -> Tensor {
        guard low.isFinite && high.isFinite && low <= high else {
            throw AutogradError.argument("uniform: need finite low <= high, got \(low), \(high)")
        }
        guard dtype.isFloatingPoint else { throw AutogradError.dtype("uniform: random values are float32 or float64, not \(dtype) (randint draws int64)") }
        var rng = SplitMix64(seed: seed)
        return try generate(shape, dtype: dtype) { _ in low + (high - low) * rng.nextUnit() }
    }

    /// Normal values with `mean` and standard deviation `std` (Box-Muller over SplitMix64).
    package static func normal(_ shape: [Int], mean: Double = 0, std: Double = 1, seed: UInt64, dtype: DType = .float64) throws -> Tensor {
        guard mean.isFinite && std.isFinite && std >= 0 else {
            throw AutogradError.argument("normal: need a finite mean and a finite std >= 0, got \(mean), \(std)")
        }
        guard dtype.isFloatingPoint else { throw AutogradError.dtype("normal: random values are float32 or float64, not \(dtype)") }
        var rng = SplitMix64(seed: seed)
        var spare: Double? = nil
        return try generate(shape, dtype: dtype) { _ in
            if let s = spare { spare = nil; return mean + std * s }
            let u1 = 1 - rng.nextUnit()  // (0, 1]: log is finite
            let u2 = rng.nextUnit()
            let r = Glibc.sqrt(-2 * Glibc.log(u1))
            spare = r * Glibc.sin(2 * Double.pi * u2)
            return mean + std * r * Glibc.cos(2 * Double.pi * u2)
        }
    }

    /// A leaf tensor whose element i is value(i), written straight into checked storage (no
    /// intermediate array, so a huge shape is an out-of-memory error, not a trap).
    static func generate(_ shape: [Int], dtype: DType, _ value: (Int) -> Double) throws -> Tensor {
        let t = try Tensor(uninitialized: shape, dtype: dtype)
        defer { Trace.noteConstant(t) }
        switch dtype {
        case .float32: let b = t.buffer(Float.self); for i in 0..<b.count { b[i] = Float(value(i)) }
        case .float64: let b = t.buffer(Double.self); for i in 0..<b.count { b[i] = value(i) }
        case .int64:
            let b = t.integers()
            for i in 0..<b.count {
                let x = value(i)
                guard let v = Conversion.int64(x), Double(v) == x else {
                    throw AutogradError.argument("\(x) is not a whole number within int64's range (an int64 tensor holds whole numbers)")
                }
                b[i] = v
            }
        case .bool: let b = t.flags(); for i in 0..<b.count { b[i] = value(i) != 0 ? 1 : 0 }
        }
        return t
    }
}

/// SplitMix64: a small, fast, well-mixed generator whose output is fixed by its seed.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }
}
