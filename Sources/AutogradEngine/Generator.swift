import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A seeded random number generator that carries its state: each draw advances it, so a
/// training run's dropout masks, samples and shuffles follow from one seed and differ from
/// step to step. SplitMix64 underneath (the creators' `seed:` forms use a fresh one): a new
/// generator's first `uniform` equals `Tensor.uniform(seed:)` with the same seed. Sendable:
/// the state is behind a mutex, so threads may share one (each draw is atomic; their order
/// then decides who gets which numbers).
public final class Generator: Sendable {
    private let rng: Mutex<SplitMix64>

    public init(seed: UInt64) { rng = Mutex(SplitMix64(seed: seed)) }

    /// The whole state (one 64-bit word): save it to replay the draws that follow.
    public var state: UInt64 {
        get { rng.withLock { $0.state } }
        set { rng.withLock { $0.state = newValue } }
    }

    /// Runs `body` with exclusive use of the generator's stream.
    func draw<R>(_ body: (inout SplitMix64) throws -> R) rethrows -> R {
        try rng.withLock { try body(&$0) }
    }
}

extension SplitMix64 {
    /// Uniform in 0..<n (n > 0), without modulo bias (rejection of the short last block).
    mutating func below(_ n: UInt64) -> UInt64 {
        let limit = UInt64.max - UInt64.max % n
        while true {
            let x = next()
            if x < limit { return x % n }
        }
    }

    /// A standard normal value (Box-Muller; the second value of the pair is dropped so that
    /// each draw consumes exactly two words).
    mutating func nextNormal() -> Double {
        let u1 = 1 - nextUnit()  // (0, 1]: log is finite
        let u2 = nextUnit()
        return Glibc.sqrt(-2 * Glibc.log(u1)) * Glibc.cos(2 * Double.pi * u2)
    }
}
