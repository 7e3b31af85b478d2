#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element type of a tensor.
public enum DType: Int32, Sendable, CustomStringConvertible {
    case float32 = 1
    case float64 = 2

    /// Bytes per element.
    public var size: Int { self == .float32 ? 4 : 8 }

    public var description: String { self == .float32 ? "float32" : "float64" }
}

/// A floating-point type a tensor can hold, with the scalar functions the kernels need.
public protocol TensorElement: BinaryFloatingPoint, SIMDScalar, Codable, Sendable {
    static var dtype: DType { get }
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
}

extension Float: TensorElement {
    public static var dtype: DType { .float32 }
    @inline(__always) public static func exp(_ x: Float) -> Float { expf(x) }
    @inline(__always) public static func log(_ x: Float) -> Float { logf(x) }
}

extension Double: TensorElement {
    public static var dtype: DType { .float64 }
    @inline(__always) public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    @inline(__always) public static func log(_ x: Double) -> Double { Glibc.log(x) }
}
