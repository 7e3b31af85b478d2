/// The engine's operators over tensors and tensor/scalar mixes, so `2 * x + b` reads naturally.
/// They throw (shape or dtype mismatch), so one `try` covers a whole expression; the Swift API's
/// non-throwing operators (Sources/Autograd/TensorMath.swift) call these.
extension Tensor {
    package static func + (a: Tensor, b: Tensor) throws -> Tensor { try a.adding(b) }
    package static func - (a: Tensor, b: Tensor) throws -> Tensor { try a.subtracting(b) }
    package static func * (a: Tensor, b: Tensor) throws -> Tensor { try a.multiplying(b) }
    package static func / (a: Tensor, b: Tensor) throws -> Tensor { try a.dividing(by: b) }
    package static prefix func - (a: Tensor) throws -> Tensor { try a.negated() }

    package static func + (a: Tensor, s: Double) throws -> Tensor { try a.adding(a.constant(s)) }
    package static func + (s: Double, a: Tensor) throws -> Tensor { try a.constant(s).adding(a) }
    package static func - (a: Tensor, s: Double) throws -> Tensor { try a.subtracting(a.constant(s)) }
    package static func - (s: Double, a: Tensor) throws -> Tensor { try a.constant(s).subtracting(a) }
    package static func * (a: Tensor, s: Double) throws -> Tensor { try a.multiplying(a.constant(s)) }
    package static func * (s: Double, a: Tensor) throws -> Tensor { try a.constant(s).multiplying(a) }
    package static func / (a: Tensor, s: Double) throws -> Tensor { try a.dividing(by: a.constant(s)) }
    package static func / (s: Double, a: Tensor) throws -> Tensor { try a.constant(s).dividing(by: a) }
}

precedencegroup PowerPrecedence {
    higherThan: MultiplicationPrecedence
    associativity: right
}

infix operator ** : PowerPrecedence

extension Tensor {
    package static func ** (a: Tensor, b: Tensor) throws -> Tensor { try a.pow(b) }
    package static func ** (a: Tensor, s: Double) throws -> Tensor { try a.pow(a.constant(s)) }
    package static func ** (s: Double, a: Tensor) throws -> Tensor { try a.constant(s).pow(a) }
}
