import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element type of a tensor. float32 and float64 hold values that ops compute with and
/// differentiate; int64 holds indices, labels and counts; bool holds masks (one byte, 0 or 1).
/// Integer and bool tensors never require grad: ops that compute take floating-point operands,
/// and those that take indices or masks say so.
public enum DType: Int32, Sendable, CustomStringConvertible {
    case float32 = 1
    case float64 = 2
    case int64 = 3
    case bool = 4

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float32: return 4
        case .float64, .int64: return 8
        case .bool: return 1
        }
    }

    public var description: String {
        switch self {
        case .float32: return "float32"
        case .float64: return "float64"
        case .int64: return "int64"
        case .bool: return "bool"
        }
    }

    /// Whether values of this dtype are floating point (what differentiable ops take).
    public var isFloatingPoint: Bool { self == .float32 || self == .float64 }
}

/// A floating-point type a tensor can hold, with the scalar functions the kernels need.
/// Internal, conformances included, so that no public member is added to Float or Double
/// (a public `Float.exp` would make `exp` ambiguous beside swift-numerics' RealModule).
protocol TensorElement: BinaryFloatingPoint, SIMDScalar, Codable, Sendable {
    static var dtype: DType { get }
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func log1p(_ x: Self) -> Self
    static func expm1(_ x: Self) -> Self
    static func sqrt(_ x: Self) -> Self
    static func sin(_ x: Self) -> Self
    static func cos(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func erf(_ x: Self) -> Self
    static func erfc(_ x: Self) -> Self
    static func pow(_ x: Self, _ y: Self) -> Self
    static func atan2(_ y: Self, _ x: Self) -> Self
}

extension Float: TensorElement {
    static var dtype: DType { .float32 }
    @inline(__always) static func exp(_ x: Float) -> Float { agk_expf(x) }  // as the exp kernel gives it
    @inline(__always) static func log(_ x: Float) -> Float { logf(x) }
    @inline(__always) static func log1p(_ x: Float) -> Float { log1pf(x) }
    @inline(__always) static func expm1(_ x: Float) -> Float { expm1f(x) }
    @inline(__always) static func sqrt(_ x: Float) -> Float { sqrtf(x) }
    @inline(__always) static func sin(_ x: Float) -> Float { sinf(x) }
    @inline(__always) static func cos(_ x: Float) -> Float { cosf(x) }
    @inline(__always) static func tanh(_ x: Float) -> Float { tanhf(x) }
    @inline(__always) static func erf(_ x: Float) -> Float { erff(x) }
    @inline(__always) static func erfc(_ x: Float) -> Float { agk_erfcf(x) }  // vectorisable (see ckernels.h)
    @inline(__always) static func pow(_ x: Float, _ y: Float) -> Float { powf(x, y) }
    @inline(__always) static func atan2(_ y: Float, _ x: Float) -> Float { atan2f(y, x) }
}

extension Double: TensorElement {
    static var dtype: DType { .float64 }
    @inline(__always) static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    @inline(__always) static func log(_ x: Double) -> Double { Glibc.log(x) }
    @inline(__always) static func log1p(_ x: Double) -> Double { Glibc.log1p(x) }
    @inline(__always) static func expm1(_ x: Double) -> Double { Glibc.expm1(x) }
    @inline(__always) static func sqrt(_ x: Double) -> Double { Glibc.sqrt(x) }
    @inline(__always) static func sin(_ x: Double) -> Double { Glibc.sin(x) }
    @inline(__always) static func cos(_ x: Double) -> Double { Glibc.cos(x) }
    @inline(__always) static func tanh(_ x: Double) -> Double { Glibc.tanh(x) }
    @inline(__always) static func erf(_ x: Double) -> Double { Glibc.erf(x) }
    @inline(__always) static func erfc(_ x: Double) -> Double { Glibc.erfc(x) }
    @inline(__always) static func pow(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
    @inline(__always) static func atan2(_ y: Double, _ x: Double) -> Double { Glibc.atan2(y, x) }
}
