/// The arithmetic an elementwise op's derivative is written in, so that one statement serves
/// every path: at `Float` and `Double` (which never fail) it is the body of the fused loops,
/// backward and forward mode, specialised and inlined; at `Tensor` it is the recorded rule,
/// whose ops are themselves differentiable (create_graph, higher order and forward-over-reverse
/// come free). A requirement is added only when a derivative needs it.
protocol Differentiable {
    /// `Never` for scalars; any error for tensors (shapes, memory).
    associatedtype Failure: Error
    static func + (a: Self, b: Self) throws(Failure) -> Self
    static func - (a: Self, b: Self) throws(Failure) -> Self
    static func * (a: Self, b: Self) throws(Failure) -> Self
    static func / (a: Self, b: Self) throws(Failure) -> Self
    static prefix func - (a: Self) throws(Failure) -> Self
    /// `value` as a constant of this value's type (and dtype).
    func constant(_ value: Double) throws(Failure) -> Self
    static func exp(_ x: Self) throws(Failure) -> Self
    static func log(_ x: Self) throws(Failure) -> Self
    static func sin(_ x: Self) throws(Failure) -> Self
    static func cos(_ x: Self) throws(Failure) -> Self
    static func pow(_ x: Self, _ y: Self) throws(Failure) -> Self
    static func sigmoid(_ x: Self) throws(Failure) -> Self
    static func normalCDF(_ x: Self) throws(Failure) -> Self
    /// `a` where `x relation y` holds, else `b`, elementwise. Selected, never multiplied by a 0/1
    /// mask, so the branch not taken cannot reach the result (0 · inf is never formed); the
    /// test itself has no derivative.
    static func select(_ x: Self, _ relation: Relation, _ y: Self, _ a: Self, _ b: Self) throws(Failure) -> Self
}

/// The tests `Differentiable.select` makes.
enum Relation {
    case less, lessOrEqual, greater, greaterOrEqual, equal

    @inline(__always)
    func holds<T: Comparable>(_ x: T, _ y: T) -> Bool {
        switch self {
        case .less: return x < y
        case .lessOrEqual: return x <= y
        case .greater: return x > y
        case .greaterOrEqual: return x >= y
        case .equal: return x == y
        }
    }
}

extension TensorElement {
    @inline(__always) func constant(_ value: Double) -> Self { Self(value) }

    @inline(__always)
    static func select(_ x: Self, _ relation: Relation, _ y: Self, _ a: Self, _ b: Self) -> Self {
        relation.holds(x, y) ? a : b
    }

    /// 1 / (1 + e^-x), in a form that stays finite for any input.
    @inline(__always)
    static func sigmoid(_ x: Self) -> Self {
        if x >= 0 { return 1 / (1 + exp(-x)) }
        let e = exp(x)
        return e / (1 + e)
    }

    /// Φ(x) = erfc(-x/√2) / 2: the erfc form keeps full relative accuracy in the lower tail,
    /// where 1 + erf(x/√2) cancels to 0.
    @inline(__always)
    static func normalCDF(_ x: Self) -> Self {
        erfc(-x * Self(0.7071067811865476)) / 2
    }
}

// The scalar conformances: every requirement is already met by TensorElement.
extension Float: Differentiable { typealias Failure = Never }
extension Double: Differentiable { typealias Failure = Never }

extension Tensor: Differentiable {
    typealias Failure = any Error
    static func exp(_ x: Tensor) throws -> Tensor { try x.exp() }
    static func log(_ x: Tensor) throws -> Tensor { try x.log() }
    static func sin(_ x: Tensor) throws -> Tensor { try x.sin() }
    static func cos(_ x: Tensor) throws -> Tensor { try x.cos() }
    static func pow(_ x: Tensor, _ y: Tensor) throws -> Tensor { try x.pow(y) }
    static func sigmoid(_ x: Tensor) throws -> Tensor { try x.sigmoid() }
    static func normalCDF(_ x: Tensor) throws -> Tensor { try x.normalCDF() }

    static func select(_ x: Tensor, _ relation: Relation, _ y: Tensor, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        let mask = try withNoGrad { () throws -> Tensor in
            switch relation {
            case .less: return try x.lt(y)
            case .lessOrEqual: return try x.le(y)
            case .greater: return try x.gt(y)
            case .greaterOrEqual: return try x.ge(y)
            case .equal: return try x.eq(y)
            }
        }
        return try Tensor.where(mask, a, b)
    }
}
