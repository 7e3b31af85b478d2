import CKernels

/// The unary elementwise ops. Each states its value and its derivative once (see
/// ElementwiseOp.swift: the recorded rule, the fused backward and forward-mode loops and the
/// tangent are all made from that statement); the method runs it (the Swift API's non-throwing
/// method of the same name, in Sources/Autograd, calls this one).
extension Tensor {
    package func exp() throws -> Tensor { try Tensor.unary(Exp(), self) }
    package func log() throws -> Tensor { try Tensor.unary(Log(), self) }
    /// log(1 + x), accurate near 0 (where log(1 + x) loses x to rounding); -inf at -1, nan below.
    package func log1p() throws -> Tensor { try Tensor.unary(Log1p(), self) }
    /// e^x - 1, accurate near 0 (where e^x - 1 cancels).
    package func expm1() throws -> Tensor { try Tensor.unary(Expm1(), self) }
    /// The error function, 2/√π ∫₀ˣ e^(-t²) dt.
    package func erf() throws -> Tensor { try Tensor.unary(Erf(), self) }
    /// max(x, 0), nan for nan; the derivative at exactly 0 is taken as 0, and is 1 at nan (as in
    /// PyTorch). Where x <= 0 the gradient is selected: 0 even for an infinite or nan one.
    package func relu() throws -> Tensor { try Tensor.unary(Relu(), self) }
    package func sqrt() throws -> Tensor { try Tensor.unary(SquareRoot(), self) }
    /// |x|; the derivative at 0 is taken as 0, selected: 0 for any incoming gradient (PyTorch
    /// multiplies by sgn(0) = 0, which makes an infinite gradient nan).
    package func abs() throws -> Tensor { try Tensor.unary(Absolute(), self) }
    package func sin() throws -> Tensor { try Tensor.unary(Sine(), self) }
    package func cos() throws -> Tensor { try Tensor.unary(Cosine(), self) }
    package func tanh() throws -> Tensor { try Tensor.unary(Tanh(), self) }
    /// 1 / (1 + e^-x), in a form that stays finite for any input.
    package func sigmoid() throws -> Tensor { try Tensor.unary(Sigmoid(), self) }
    /// x for x > 0, negativeSlope * x otherwise; the derivative at 0 is negativeSlope. The
    /// gradient is multiplied by the slope, not selected (as PyTorch): with a slope of 0 an
    /// infinite gradient gives nan for x <= 0.
    package func leakyRelu(negativeSlope: Double = 0.01) throws -> Tensor {
        try Tensor.unary(LeakyRelu(slope: negativeSlope), self)
    }
    /// x limited to [min, max] (a nil bound: no limit on that side), as torch.clamp: nan stays
    /// nan, and where min > max every element is max. The gradient passes where
    /// min <= x <= max (bounds included) and is 0 elsewhere and at nan, selected: 0 even for an
    /// infinite or nan incoming gradient. A nan bound is an argument error (torch.clamp would
    /// make every element nan).
    package func clamp(min: Double? = nil, max: Double? = nil) throws -> Tensor {
        guard !(min?.isNaN ?? false) && !(max?.isNaN ?? false) else {
            throw AutogradError.argument("clamp: a bound is nan (min \(min.map { "\($0)" } ?? "none"), max \(max.map { "\($0)" } ?? "none"))")
        }
        return try Tensor.unary(Clamp(lower: min ?? -.infinity, upper: max ?? .infinity), self)
    }
    /// log(1 + e^x) as max(x, 0) + log1p(e^-|x|), finite for any input; d softplus = sigmoid.
    package func softplus() throws -> Tensor { try Tensor.unary(Softplus(), self) }
    /// The exact GELU, x·Φ(x) with Φ the standard normal CDF; d gelu = Φ(x) + x·φ(x).
    package func gelu() throws -> Tensor { try Tensor.unary(Gelu(), self) }
    /// Φ(x), differentiable (its derivative is φ).
    func normalCDF() throws -> Tensor { try Tensor.unary(NormalCDF(), self) }
    package func negated() throws -> Tensor { try Tensor.unary(Negate(), self) }
}

struct Negate: UnaryElementwise {
    static var name: StaticString { "neg" }
    static var reads: DerivativeReads { .nothing }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.neg) }
    func value<T: TensorElement>(_ x: T) -> T { -x }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try -v }
}

struct Exp: UnaryElementwise {
    static var name: StaticString { "exp" }
    static var reads: DerivativeReads { .output }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.exp) }
    func value<T: TensorElement>(_ x: T) -> T { T.exp(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * y }   // d exp = exp

    /// float32 through the vectorised C kernel, split over threads.
    func forward(_ x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer, count: Int, dtype: DType) -> Bool {
        guard dtype == .float32 else { return false }
        let xs = x.assumingMemoryBound(to: Float.self), os = out.assumingMemoryBound(to: Float.self)
        Parallel.forChunks(count: count) { r in agk_exp_f32(xs + r.lowerBound, os + r.lowerBound, Int64(r.count)) }
        return true
    }
}

struct Log: UnaryElementwise {
    static var name: StaticString { "log" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.log) }
    func value<T: TensorElement>(_ x: T) -> T { T.log(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v / x }
}

struct Log1p: UnaryElementwise {
    static let name: StaticString = "log1p"
    static let reads = DerivativeReads.inputs
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.log1p) }
    func value<T: TensorElement>(_ x: T) -> T { T.log1p(x) }
    // x + 1 is exact near x = -1 (Sterbenz), where the derivative is largest.
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v / (x + x.constant(1)) }
}

struct Expm1: UnaryElementwise {
    static let name: StaticString = "expm1"
    static let reads = DerivativeReads.inputs
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.expm1) }
    func value<T: TensorElement>(_ x: T) -> T { T.expm1(x) }
    // d expm1 = e^x, taken as exp(x) rather than y + 1 (PyTorch's form): y + 1 is e^x with an
    // absolute error of half an ulp of 1, so its relative error grows without bound as x goes
    // negative (it is exactly 0 below x ≈ -37 in float64, -17 in float32, where e^x is not);
    // exp(x) is within an ulp everywhere. The price is one exp per element in the backward.
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * T.exp(x) }
}

struct Erf: UnaryElementwise {
    static let name: StaticString = "erf"
    static let reads = DerivativeReads.inputs
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.erf) }
    func value<T: TensorElement>(_ x: T) -> T { T.erf(x) }
    // d erf = 2/√π · e^(-x²), in PyTorch's order of operations.
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T {
        try v * (T.exp(-(x * x)) * x.constant(1.1283791670955126))
    }
}

/// clamp: lower and upper are -inf and +inf for a missing bound (the same values and gradients
/// as torch.clamp's None); neither is nan (Tensor.clamp checks).
struct Clamp: UnaryElementwise {
    static let name: StaticString = "clamp"
    static let reads = DerivativeReads.inputs
    let lower: Double
    let upper: Double
    func value<T: TensorElement>(_ x: T) -> T {
        // min(max(x, lower), upper), nan staying nan: a comparison with nan is false.
        let lo = x.constant(lower), hi = x.constant(upper)
        let raised = T.select(x, .less, lo, lo, x)
        return T.select(raised, .greater, hi, hi, raised)
    }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T {
        let zero = try v.constant(0)
        return try T.select(x, .greaterOrEqual, x.constant(lower), T.select(x, .lessOrEqual, x.constant(upper), v, zero), zero)
    }
}

struct Relu: UnaryElementwise {
    static var name: StaticString { "relu" }
    // relu(x) is 0 exactly where x <= 0 (nan stays nan), so the output serves as the mask and
    // the input need not be saved.
    static var reads: DerivativeReads { .outputAsConstant }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.relu) }
    func value<T: TensorElement>(_ x: T) -> T {
        T.select(x, .lessOrEqual, x.constant(0), x.constant(0), x)
    }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T {
        try T.select(y, .lessOrEqual, y.constant(0), v.constant(0), v)
    }

    /// Through the C kernel (nan-propagating max).
    func forward(_ x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer, count: Int, dtype: DType) -> Bool {
        switch dtype {
        case .float32: agk_relu_f32(x.assumingMemoryBound(to: Float.self), out.assumingMemoryBound(to: Float.self), Int64(count))
        case .float64: agk_relu_f64(x.assumingMemoryBound(to: Double.self), out.assumingMemoryBound(to: Double.self), Int64(count))
        case .int64, .bool: return false  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        return true
    }
}

struct SquareRoot: UnaryElementwise {
    static var name: StaticString { "sqrt" }
    static var reads: DerivativeReads { .output }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.sqrt) }
    func value<T: TensorElement>(_ x: T) -> T { T.sqrt(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v / (y * y.constant(2)) }
}

struct Absolute: UnaryElementwise {
    static var name: StaticString { "abs" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.abs) }
    func value<T: TensorElement>(_ x: T) -> T { Swift.abs(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T {
        let zero = try x.constant(0)
        return try T.select(x, .greater, zero, v, T.select(x, .less, zero, -v, v.constant(0)))
    }
}

struct Sine: UnaryElementwise {
    static var name: StaticString { "sin" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.sin) }
    func value<T: TensorElement>(_ x: T) -> T { T.sin(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * T.cos(x) }
}

struct Cosine: UnaryElementwise {
    static var name: StaticString { "cos" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.cos) }
    func value<T: TensorElement>(_ x: T) -> T { T.cos(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try -(v * T.sin(x)) }
}

struct Tanh: UnaryElementwise {
    static var name: StaticString { "tanh" }
    static var reads: DerivativeReads { .output }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.tanh) }
    func value<T: TensorElement>(_ x: T) -> T { T.tanh(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * (y.constant(1) - y * y) }  // 1 - tanh²
}

struct Sigmoid: UnaryElementwise {
    static var name: StaticString { "sigmoid" }
    static var reads: DerivativeReads { .output }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.sigmoid) }
    func value<T: TensorElement>(_ x: T) -> T { T.sigmoid(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * (y * (y.constant(1) - y)) }  // s (1 - s)
}

struct LeakyRelu: UnaryElementwise {
    static var name: StaticString { "leaky_relu" }
    static var reads: DerivativeReads { .inputs }
    let slope: Double
    func value<T: TensorElement>(_ x: T) -> T {
        T.select(x, .greater, x.constant(0), x, x * x.constant(slope))
    }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T {
        try v * T.select(x, .greater, x.constant(0), x.constant(1), x.constant(slope))
    }
}

struct Softplus: UnaryElementwise {
    static var name: StaticString { "softplus" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.softplus) }
    /// max(x, 0) + log1p(e^-|x|): finite for any input.
    func value<T: TensorElement>(_ x: T) -> T { Swift.max(x, 0) + T.log1p(T.exp(-Swift.abs(x))) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * T.sigmoid(x) }
}

struct Gelu: UnaryElementwise {
    static var name: StaticString { "gelu" }
    static var reads: DerivativeReads { .inputs }
    var kind: ElementwiseKind { ElementwiseKind(UnaryKind.gelu) }
    func value<T: TensorElement>(_ x: T) -> T { x * T.normalCDF(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T {
        try v * (T.normalCDF(x) + x * NormalCDF.density(x))
    }

    /// float32 through C kernels of the same arithmetic (vectorised; see ckernels.h).
    func forward(_ x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer, count: Int, dtype: DType) -> Bool {
        guard dtype == .float32 else { return false }
        agk_gelu_f32(x.assumingMemoryBound(to: Float.self), out.assumingMemoryBound(to: Float.self), Int64(count))
        return true
    }

    func derivativeKernel(_ v: UnsafeMutableRawPointer, x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer,
                          count: Int, dtype: DType, accumulate: Bool) -> Bool {
        guard dtype == .float32 else { return false }
        if count > 0 {
            agk_gelu_grad_f32(v.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
                              out.assumingMemoryBound(to: Float.self), Int64(count), accumulate ? 1 : 0)
        }
        return true
    }
}

/// Φ, the standard normal CDF: gelu's building block.
struct NormalCDF: UnaryElementwise {
    static var name: StaticString { "normal_cdf" }
    static var reads: DerivativeReads { .inputs }
    func value<T: TensorElement>(_ x: T) -> T { T.normalCDF(x) }
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T { try v * NormalCDF.density(x) }

    /// φ(x) = e^(-x²/2) / √(2π).
    @inline(__always)
    static func density<T: Differentiable>(_ x: T) throws(T.Failure) -> T {
        try T.exp(x * x * x.constant(-0.5)) * x.constant(0.3989422804014327)
    }
}

/// The unary ops with a fused backward loop (see ElementwiseKind): a case and a dispatch line
/// each.
enum UnaryKind: UInt8 {
    case neg = 1, exp, log, log1p, expm1, erf, relu, sqrt, abs, sin, cos, tanh, sigmoid, softplus, gelu

    /// Hands this kind's op to the visitor (see ElementwiseKind.dispatch).
    @inline(__always)
    func dispatch<V: ElementwiseVisitor>(to visitor: inout V) throws {
        switch self {
        case .neg: try visitor.visit(Negate())
        case .exp: try visitor.visit(Exp())
        case .log: try visitor.visit(Log())
        case .log1p: try visitor.visit(Log1p())
        case .expm1: try visitor.visit(Expm1())
        case .erf: try visitor.visit(Erf())
        case .relu: try visitor.visit(Relu())
        case .sqrt: try visitor.visit(SquareRoot())
        case .abs: try visitor.visit(Absolute())
        case .sin: try visitor.visit(Sine())
        case .cos: try visitor.visit(Cosine())
        case .tanh: try visitor.visit(Tanh())
        case .sigmoid: try visitor.visit(Sigmoid())
        case .softplus: try visitor.visit(Softplus())
        case .gelu: try visitor.visit(Gelu())
        }
    }
}
