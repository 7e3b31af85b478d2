import CKernels

/// add, sub, mul, div, pow, maximum, minimum, atan2: each states its value and derivative once (see
/// ElementwiseOp.swift); then the forward plumbing the elementwise ops share (zipped, mapped).
extension Tensor {
    package func adding(_ other: Tensor) throws -> Tensor { try Tensor.binary(Add(), self, other) }
    package func subtracting(_ other: Tensor) throws -> Tensor { try Tensor.binary(Subtract(), self, other) }
    package func multiplying(_ other: Tensor) throws -> Tensor { try Tensor.binary(Multiply(), self, other) }
    package func dividing(by other: Tensor) throws -> Tensor { try Tensor.binary(Divide(), self, other) }
    /// self ** exponent elementwise. d/da = b·a^(b-1), taken as 0 where b == 0; d/db = ln(a)·a^b,
    /// taken as 0 where a == 0 and b >= 0 (PyTorch's conventions). A derivative taken as 0 is
    /// selected (0 for any incoming gradient, inf and nan included) and is a constant: its own
    /// derivatives are 0 at every order (PyTorch gives nan for some of them, from 0·inf).
    package func pow(_ exponent: Tensor) throws -> Tensor { try Tensor.binary(Power(), self, exponent) }
    /// The larger of the two elementwise; ties split the gradient evenly; nan propagates.
    package func maximum(_ other: Tensor) throws -> Tensor { try Tensor.binary(Maximum(), self, other) }
    /// The smaller of the two elementwise; ties split the gradient evenly; nan propagates.
    package func minimum(_ other: Tensor) throws -> Tensor { try Tensor.binary(Minimum(), self, other) }
    /// The angle of the point (other, self) in [-π, π], elementwise, broadcasting: C's
    /// atan2(self, other), signed zeros included (atan2(0, -0) = π). d/dself = other/r²,
    /// d/dother = -self/r² with r² = self² + other², computed without forming r² (no overflow or
    /// underflow where the result is representable); at (0, 0) both are taken as 0 (as PyTorch),
    /// selected.
    package func atan2(_ other: Tensor) throws -> Tensor { try Tensor.binary(Atan2(), self, other) }
}

struct Add: BinaryElementwise {
    static var name: StaticString { "add" }
    static var reads: DerivativeReads { .nothing }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.add) }
    var kernels: BinaryKernels? { BinaryKernels(f32: agk_add_f32, f64: agk_add_f64) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T { a + b }
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T { v }
    func passesThrough(_ k: Int) -> Bool { true }
}

struct Subtract: BinaryElementwise {
    static var name: StaticString { "sub" }
    static var reads: DerivativeReads { .nothing }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.sub) }
    var kernels: BinaryKernels? { BinaryKernels(f32: agk_sub_f32, f64: agk_sub_f64) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T { a - b }
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T { try k == 0 ? v : -v }
    func passesThrough(_ k: Int) -> Bool { k == 0 }
}

struct Multiply: BinaryElementwise {
    static var name: StaticString { "mul" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.mul) }
    var kernels: BinaryKernels? { BinaryKernels(f32: agk_mul_f32, f64: agk_mul_f64) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T { a * b }
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T { try k == 0 ? v * b : v * a }
}

struct Divide: BinaryElementwise {
    static var name: StaticString { "div" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.div) }
    var kernels: BinaryKernels? { BinaryKernels(f32: agk_div_f32, f64: agk_div_f64) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T { a / b }
    // d(a/b)/da = 1/b;  d(a/b)/db = -a/b², computed as -((v·(a/b))/b). Of six orders checked
    // against PyTorch float64 on 2e6 random float32 cases, this one was the most accurate: with
    // v = 1 it is PyTorch's own -v·((a/b)/b) (within 1 ulp everywhere for a, b in 10^±20); with
    // v in 10^±5 too it stays within 2 ulp, where PyTorch's order overflows in (a/b)/b in 0.8%
    // of cases. (-v·a)/(b·b) gives -inf for -1e20 at a = 1e-30, b = 1e-25 (b² underflows) and
    // -0 for -1e-20 at a = b = 1e20 (b² overflows); ((v/b)·a)/b overflows in v/b at subnormal b.
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T {
        try k == 0 ? v / b : -((v * (a / b)) / b)
    }
}

struct Power: BinaryElementwise {
    static var name: StaticString { "pow" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.pow) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T { T.pow(a, b) }
    // Where a derivative is taken as 0, v is replaced by 0 (selected) and the formula runs on
    // safe values whose derivative is finite: b = 1 for d/da (a^0, not a^-1, which is inf at
    // a = 0), a = 1 for d/db (ln 1 = 0, 1^b = 1). The product is then exactly 0 for any v, and
    // under create_graph every derivative through it is a finite value times 0, never 0·inf.
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T {
        let zero = try a.constant(0), one = try a.constant(1)
        if k == 0 {
            let safeB = try T.select(b, .equal, zero, one, b)
            return try T.select(b, .equal, zero, v.constant(0), v) * (b * T.pow(a, safeB - one))
        }
        // flat: a == 0 and b >= 0
        let safeA = try T.select(a, .equal, zero, T.select(b, .greaterOrEqual, zero, one, a), a)
        let gate = try T.select(a, .equal, zero, T.select(b, .greaterOrEqual, zero, v.constant(0), v), v)
        return try gate * (T.log(safeA) * T.pow(safeA, b))
    }
}

/// maximum and minimum's gradients, as PyTorch gives them: each operand gets nothing where the
/// other wins, v/2 on a tie (v·0.5 is v/2 exactly), v otherwise (so where either is nan both
/// get v). Selected, so an infinite or nan v never reaches the loser.
struct Maximum: BinaryElementwise {
    static var name: StaticString { "maximum" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.maximum) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T {
        // a if a > b or a is nan (a != a), else b
        T.select(a, .greater, b, a, T.select(a, .equal, a, b, a))
    }
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T {
        let (x, other) = k == 0 ? (a, b) : (b, a)
        return try T.select(x, .less, other, v.constant(0), T.select(x, .equal, other, v * v.constant(0.5), v))
    }
}

struct Minimum: BinaryElementwise {
    static var name: StaticString { "minimum" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.minimum) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T {
        T.select(a, .less, b, a, T.select(a, .equal, a, b, a))
    }
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T {
        let (x, other) = k == 0 ? (a, b) : (b, a)
        return try T.select(x, .greater, other, v.constant(0), T.select(x, .equal, other, v * v.constant(0.5), v))
    }
}

struct Atan2: BinaryElementwise {
    static let name: StaticString = "atan2"
    static let reads = DerivativeReads.inputs
    var kind: ElementwiseKind { ElementwiseKind(BinaryKind.atan2) }
    func value<T: TensorElement>(_ a: T, _ b: T) -> T { T.atan2(a, b) }
    // d/da = b/(a² + b²), d/db = -a/(a² + b²), written without a² + b² (which overflows above
    // 1e154 in float64, 1e19 in float32, and underflows below their roots, where PyTorch gives
    // 0): with s the operand of larger magnitude, u the other and t = u/s (|t| <= 1),
    // a² + b² = s·d with d = s(1 + t²), so d/da = t/d if s is a, else 1/d; d/db = -1/d if s is
    // a, else -t/d. At (0, 0) both are taken as 0 (PyTorch's convention): v is replaced by 0
    // (selected) and s by 1, so nothing divides by 0 and create_graph sees finite values only.
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T {
        let zero = try a.constant(0), one = try a.constant(1)
        let magnitudeA = try T.select(a, .less, zero, -a, a), magnitudeB = try T.select(b, .less, zero, -b, b)
        let s = try T.select(magnitudeA, .greater, magnitudeB, a, b)
        let u = try T.select(magnitudeA, .greater, magnitudeB, b, a)
        let safeS = try T.select(s, .equal, zero, one, s)
        let gate = try T.select(s, .equal, zero, v.constant(0), v)
        let t = try u / safeS
        let d = try safeS * (one + t * t)
        let n = k == 0 ? try T.select(magnitudeA, .greater, magnitudeB, t, one) : try -T.select(magnitudeA, .greater, magnitudeB, one, t)
        return try (gate * n) / d
    }
}

/// The binary ops with a fused backward loop (see ElementwiseKind): a case and a dispatch line
/// each. Raw values from 128 keep them apart from UnaryKind's.
enum BinaryKind: UInt8 {
    case add = 128, sub, mul, div, pow, maximum, minimum, atan2

    /// Hands this kind's op to the visitor (see ElementwiseKind.dispatch).
    @inline(__always)
    func dispatch<V: ElementwiseVisitor>(to visitor: inout V) throws {
        switch self {
        case .add: try visitor.visit(Add())
        case .sub: try visitor.visit(Subtract())
        case .mul: try visitor.visit(Multiply())
        case .div: try visitor.visit(Divide())
        case .pow: try visitor.visit(Power())
        case .maximum: try visitor.visit(Maximum())
        case .minimum: try visitor.visit(Minimum())
        case .atan2: try visitor.visit(Atan2())
        }
    }
}

// MARK: - Shared forward plumbing for elementwise ops

extension Tensor {
    /// self += g, elementwise, same shape and dtype; only for tensors nobody else can see.
    func add(inPlace g: Tensor) {
        switch dtype {
        case .float32: Elementwise.zip(buffer(Float.self), [], g.buffer(Float.self), [], into: buffer(Float.self), shape: shape, { $0 + $1 })
        case .float64: Elementwise.zip(buffer(Double.self), [], g.buffer(Double.self), [], into: buffer(Double.self), shape: shape, { $0 + $1 })
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }
}

extension Tensor {
    /// f applied elementwise to a and b broadcast together (both of one dtype).
    @inline(__always)
    static func zipped(_ a: Tensor, _ b: Tensor, _ op: StaticString,
                       _ f32: (Float, Float) -> Float, _ f64: (Double, Double) -> Double) throws -> Tensor {
        guard a.dtype == b.dtype else {
            throw AutogradError.dtype("\(op): operands have different dtypes (\(a.dtype) and \(b.dtype))")
        }
        try a.requireFloatingPoint("\(op)", "its operand")
        // Same shapes (the common case, scalars included) need no broadcast worked out.
        let shape: [Int]
        if a.shape == b.shape {
            shape = a.shape
        } else {
            do { shape = try Shape.broadcast(a.shape, b.shape) } catch let e as AutogradError {
                throw AutogradError.shape("\(op): \(e.message)")
            }
        }
        let out = try Tensor(uninitialized: shape, dtype: a.dtype)
        let same = a.count == out.count && b.count == out.count
        let sa = same ? [] : Shape.broadcastStrides(a.shape, to: shape)
        let sb = same ? [] : Shape.broadcastStrides(b.shape, to: shape)
        switch a.dtype {
        case .float32: Elementwise.zip(a.buffer(Float.self), sa, b.buffer(Float.self), sb, into: out.buffer(Float.self), shape: shape, f32)
        case .float64: Elementwise.zip(a.buffer(Double.self), sa, b.buffer(Double.self), sb, into: out.buffer(Double.self), shape: shape, f64)
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        return out
    }

    /// f applied to every element, into a new tensor of the same shape.
    @inline(__always)
    func mapped(_ f32: (Float) -> Float, _ f64: (Double) -> Double) throws -> Tensor {
        let out = try Tensor(uninitialized: shape, dtype: dtype)
        switch dtype {
        case .float32: Elementwise.map(buffer(Float.self), into: out.buffer(Float.self), f32)
        case .float64: Elementwise.map(buffer(Double.self), into: out.buffer(Double.self), f64)
        case .int64, .bool: throw AutogradError.dtype("an elementwise function needs float32 or float64 values, got \(dtype)")
        }
        return out
    }

    /// A 0-d constant of this tensor's dtype (for scalar operands and constants in rules).
    func constant(_ value: Double) throws -> Tensor {
        try Tensor.full([], value, dtype: dtype)
    }
}
