#if canImport(Glibc)
import Glibc
#endif

/// Seeded weight initialisers (PyTorch's torch.nn.init conventions). For a weight of shape
/// (out, in, ...), fan_in = in·receptive and fan_out = out·receptive, receptive being the
/// product of the trailing extents; a 1-D tensor has fan_in = fan_out = its length.
public enum Initializer {
    public enum Kind: Int32 {
        /// U(-b, b), b = √2·√(3 / fan_in) (He initialisation for ReLU).
        case kaimingUniform = 1
        /// N(0, σ²), σ = √2 / √fan_in.
        case kaimingNormal = 2
        /// U(-b, b), b = √(6 / (fan_in + fan_out)) (Glorot).
        case xavierUniform = 3
        /// N(0, σ²), σ = √(2 / (fan_in + fan_out)).
        case xavierNormal = 4
    }

    static func fans(_ shape: [Int]) throws -> (fanIn: Int, fanOut: Int) {
        guard !shape.isEmpty else { throw AutogradError.shape("init: a 0-d tensor has no fan-in") }
        if shape.count == 1 { return (shape[0], shape[0]) }
        let receptive = shape.dropFirst(2).reduce(1, *)
        return (shape[1] * receptive, shape[0] * receptive)
    }

    /// A new leaf of `shape` initialised by `kind` from `seed`.
    public static func make(_ kind: Kind, shape: [Int], seed: UInt64, dtype: DType = .float64) throws -> Tensor {
        _ = try Shape.count(shape)
        let (fanIn, fanOut) = try fans(shape)
        guard fanIn > 0 && fanOut > 0 else { throw AutogradError.shape("init: shape \(shape) has a zero fan") }
        switch kind {
        case .kaimingUniform:
            let b = Glibc.sqrt(2.0) * Glibc.sqrt(3.0 / Double(fanIn))
            return try Tensor.uniform(shape, low: -b, high: b, seed: seed, dtype: dtype)
        case .kaimingNormal:
            return try Tensor.normal(shape, mean: 0, std: Glibc.sqrt(2.0 / Double(fanIn)), seed: seed, dtype: dtype)
        case .xavierUniform:
            let b = Glibc.sqrt(6.0 / (Double(fanIn) + Double(fanOut)))
            return try Tensor.uniform(shape, low: -b, high: b, seed: seed, dtype: dtype)
        case .xavierNormal:
            return try Tensor.normal(shape, mean: 0, std: Glibc.sqrt(2.0 / (Double(fanIn) + Double(fanOut))), seed: seed, dtype: dtype)
        }
    }
}
