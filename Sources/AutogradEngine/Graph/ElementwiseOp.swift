/// Elementwise ops declared once: an op states its value and its derivative (generically, over
/// `Differentiable`), and everything else is made from that statement here: the recorded rule
/// (at Tensor), the fused backward loop and the fused forward-mode loop (at Float and Double),
/// and the tangent rule. An elementwise op's Jacobian is diagonal, so its VJP and its JVP are
/// the same map applied to a gradient or to a tangent.

/// What an op's derivative reads, so the forward saves exactly that.
enum DerivativeReads {
    /// Nothing: the derivative is a constant map (add, sub, neg).
    case nothing
    /// The inputs.
    case inputs
    /// The output. The fused loops read the saved output; the recorded rule recomputes it from
    /// the saved inputs, so that it is differentiable (exp, tanh, sigmoid, sqrt).
    case output
    /// The output as a constant: the derivative is piecewise constant in it (relu), so only the
    /// output is saved and the recorded rule reads it as it is.
    case outputAsConstant

    var savesInputs: Bool { self == .inputs || self == .output }
    var savesOutput: Bool { self == .output || self == .outputAsConstant }
}

/// An elementwise op of one input.
protocol UnaryElementwise {
    /// The op's name in graphs and errors.
    static var name: StaticString { get }
    static var reads: DerivativeReads { get }
    /// The value the backward pass's fused loop dispatches on; `.none` for an op without one
    /// (one with a parameter: its recorded rule runs in every pass).
    var kind: ElementwiseKind { get }
    /// The op at one element: the forward's loop (the recorded rule recomputes an output it
    /// reads with the op itself, so only scalars are needed here).
    func value<T: TensorElement>(_ x: T) -> T
    /// The derivative at x (y = value(x)) applied to v, a gradient or a tangent. Only what
    /// `reads` names is meaningful in x and y.
    func derivative<T: Differentiable>(_ v: T, x: T, y: T) throws(T.Failure) -> T
    /// The op's own kernel over `count` elements of `dtype` at x into out, if it has one (a C
    /// kernel); false for `value` at each element. The eager forward and a replay both use it.
    func forward(_ x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer, count: Int, dtype: DType) -> Bool
    /// The op's own kernel for its derivative applied to v over `count` elements (out (+)= as
    /// FusedLoop.unary), if it has one for `dtype`: the same arithmetic as `derivative`, to the
    /// bit; false for `derivative` at each element.
    func derivativeKernel(_ v: UnsafeMutableRawPointer, x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer,
                          count: Int, dtype: DType, accumulate: Bool) -> Bool
}

extension UnaryElementwise {
    var kind: ElementwiseKind { .none }

    @inline(__always)
    func forward(_ x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer, count: Int, dtype: DType) -> Bool { false }

    @inline(__always)
    func derivativeKernel(_ v: UnsafeMutableRawPointer, x: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer,
                          count: Int, dtype: DType, accumulate: Bool) -> Bool { false }

    /// The forward over a whole tensor: the op's kernel, else `value` at each element.
    @inline(__always)
    func forward(_ x: Tensor) throws -> Tensor {
        try x.requireFloatingPoint("\(Self.name)", "its operand")
        let out = try Tensor(uninitialized: x.shape, dtype: x.dtype)
        if let xp = x.storage.raw, let op = out.storage.raw, forward(xp, into: op, count: x.count, dtype: x.dtype) { return out }
        switch x.dtype {
        case .float32: Elementwise.map(x.buffer(Float.self), into: out.buffer(Float.self)) { value($0) }
        case .float64: Elementwise.map(x.buffer(Double.self), into: out.buffer(Double.self)) { value($0) }
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        return out
    }
}

/// An elementwise op of two inputs, broadcast together (NumPy's rules).
protocol BinaryElementwise {
    static var name: StaticString { get }
    static var reads: DerivativeReads { get }
    var kind: ElementwiseKind { get }
    /// The op at one pair of elements (see UnaryElementwise.value).
    func value<T: TensorElement>(_ a: T, _ b: T) -> T
    /// The derivative with respect to input k (0: a, 1: b) at (a, b), y = value(a, b), applied
    /// to v. Only what `reads` names is meaningful in a, b and y.
    func derivative<T: Differentiable>(_ k: Int, _ v: T, a: T, b: T, y: T) throws(T.Failure) -> T
    /// Whether derivative k is v itself, so the gradient is handed on rather than computed
    /// (an optimisation only: derivative(k, ...) must then return v).
    func passesThrough(_ k: Int) -> Bool
    /// C kernels over same-size operands, split over threads by the forward.
    var kernels: BinaryKernels? { get }
}

extension BinaryElementwise {
    var kind: ElementwiseKind { .none }
    func passesThrough(_ k: Int) -> Bool { false }
    var kernels: BinaryKernels? { nil }
}

/// A binary forward kernel in both dtypes (out[i] = f(a[i], b[i]) for i < n).
struct BinaryKernels {
    let f32: (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int64) -> Void
    let f64: (UnsafePointer<Double>?, UnsafePointer<Double>?, UnsafeMutablePointer<Double>?, Int64) -> Void
}

// MARK: - Forward, recorded rule and tangent, made from the statement

extension Tensor {
    /// Runs a unary elementwise op: its forward, its node (when recorded) and its tangent (in
    /// forward mode).
    @inline(__always)
    static func unary<Op: UnaryElementwise>(_ op: Op, _ x: Tensor) throws -> Tensor {
        let out = try op.forward(x)
        if shouldRecord(x) {
            out.record(Op.name, x, savesInput: Op.reads.savesInputs, savesOutput: Op.reads.savesOutput,
                       elementwise: op.kind) { g, node in InputGradients(try unaryGradient(op, g, node)) }
        }
        if Trace.isRecording {
            Trace.note(out, Op.name, [x], kernel: .elementwise(ElementLoops.value(op, dtype: x.dtype))) { ins in try unary(op, ins[0]) }
        }
        if x.tangentBox != nil {
            try out.deriveTangent(from: x) { t in try unaryTangent(op, t, x, out) }
        }
        return out
    }

    /// The recorded rule of a unary op: its derivative over tensors.
    static func unaryGradient<Op: UnaryElementwise>(_ op: Op, _ g: Tensor, _ node: Node) throws -> Tensor {
        switch Op.reads {
        case .nothing: return try op.derivative(g, x: g, y: g)
        case .inputs:
            let x = node.saved(0)
            return try op.derivative(g, x: x, y: x)
        case .output:
            let x = node.saved(0)
            return try op.derivative(g, x: x, y: unary(op, x))
        case .outputAsConstant:
            let y = node.output()
            return try op.derivative(g, x: y, y: y)
        }
    }

    /// A unary op's tangent: the fused loop when the result need not be differentiable, else
    /// the derivative over tensors (y is the recorded output, so it is differentiable).
    static func unaryTangent<Op: UnaryElementwise>(_ op: Op, _ t: Tensor, _ x: Tensor, _ y: Tensor) throws -> Tensor {
        if !shouldRecord(t, x) && t.dtype == x.dtype && t.shape == x.shape {
            let out = try Tensor(uninitialized: t.shape, dtype: t.dtype)
            guard let tp = t.storage.raw, let xp = x.storage.raw, let yp = y.storage.raw, let op_ = out.storage.raw else { return out }
            FusedLoop.unary(op, dtype: t.dtype, v: tp, x: xp, y: yp, into: op_, count: t.count, accumulate: false)
            return out
        }
        return try op.derivative(t, x: x, y: y)
    }

    /// Runs a binary elementwise op: forward, node, tangent.
    @inline(__always)
    static func binary<Op: BinaryElementwise>(_ op: Op, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        let out = try zipped(op, a, b)
        if shouldRecord(a, b) {
            out.record(Op.name, a, b, savesInputs: Op.reads.savesInputs, elementwise: op.kind) { g, node in
                try binaryGradients(op, g, node)
            }
        }
        if Trace.isRecording {
            let kernel = ElementLoops.scalarBits(a, b, count: out.count).map { _ in StepKernel.elementwise(ElementLoops.value(op, dtype: out.dtype)) }
            Trace.note(out, Op.name, [a, b], kernel: kernel ?? broadcastKernel(op, a, b, out)) { ins in
                try binary(op, ins[0], ins[1])
            }
        }
        if a.tangentBox != nil || b.tangentBox != nil {
            try out.deriveTangent(from: a, b) { ta, tb in try binaryTangent(op, ta, tb, a, b, out) }
        }
        return out
    }

    /// The forward of a binary op: its C kernels for large same-size operands, else `value` at
    /// each element, broadcast.
    @inline(__always)
    static func zipped<Op: BinaryElementwise>(_ op: Op, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        if a.count >= Parallel.minimumParallelCount, let kernels = op.kernels, a.dtype == b.dtype, a.shape == b.shape,
           a.dtype.isFloatingPoint {
            let out = try Tensor(uninitialized: a.shape, dtype: a.dtype)
            out.run(kernels, a, b)
            return out
        }
        return try zipped(a, b, Op.name, { op.value($0, $1) }, { op.value($0, $1) })
    }

    /// self = kernels(a, b), split over the worker threads (same sizes, checked by the caller).
    private func run(_ kernels: BinaryKernels, _ a: Tensor, _ b: Tensor) {
        switch dtype {
        case .float32:
            guard let ap = a.buffer(Float.self).baseAddress, let bp = b.buffer(Float.self).baseAddress,
                  let op = buffer(Float.self).baseAddress else { return }
            Parallel.forChunks(count: count) { r in kernels.f32(ap + r.lowerBound, bp + r.lowerBound, op + r.lowerBound, Int64(r.count)) }
        case .float64:
            guard let ap = a.buffer(Double.self).baseAddress, let bp = b.buffer(Double.self).baseAddress,
                  let op = buffer(Double.self).baseAddress else { return }
            Parallel.forChunks(count: count) { r in kernels.f64(ap + r.lowerBound, bp + r.lowerBound, op + r.lowerBound, Int64(r.count)) }
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }

    /// The recorded rule of a binary op: its derivatives over tensors, in the broadcast shape
    /// (Backward sums each back to its input's shape).
    static func binaryGradients<Op: BinaryElementwise>(_ op: Op, _ g: Tensor, _ node: Node) throws -> InputGradients {
        var a = g, b = g, y = g
        if Op.reads.savesInputs {
            a = node.saved(0)
            b = node.saved(1)
            if Op.reads == .output { y = try binary(op, a, b) }
        }
        return InputGradients(node.needsGrad(0) ? try op.derivative(0, g, a: a, b: b, y: y) : nil,
                              node.needsGrad(1) ? try op.derivative(1, g, a: a, b: b, y: y) : nil)
    }

    /// A binary op's tangent: the sum of each input's term (an input without a tangent adds
    /// nothing); fused when nothing is broadcast and the result need not be differentiable.
    static func binaryTangent<Op: BinaryElementwise>(_ op: Op, _ ta: Tensor?, _ tb: Tensor?, _ a: Tensor, _ b: Tensor,
                                                      _ y: Tensor) throws -> Tensor {
        let sameShapes = a.shape == y.shape && b.shape == y.shape && a.dtype == b.dtype
            && (ta.map { $0.shape == y.shape && $0.dtype == y.dtype } ?? true)
            && (tb.map { $0.shape == y.shape && $0.dtype == y.dtype } ?? true)
        if sameShapes && !GradMode.isEnabled || sameShapes && !(a.requiresGrad || b.requiresGrad || ta?.requiresGrad == true || tb?.requiresGrad == true) {
            let out = try Tensor(uninitialized: y.shape, dtype: y.dtype)
            guard let ap = a.storage.raw, let bp = b.storage.raw, let yp = y.storage.raw, let op_ = out.storage.raw else { return out }
            var first = true
            for (k, t) in [ta, tb].enumerated() {
                guard let t, let tp = t.storage.raw else { continue }
                FusedLoop.binary(op, k, dtype: y.dtype, v: tp, a: ap, b: bp, y: yp, into: op_, count: y.count, accumulate: !first)
                first = false
            }
            if first { return try Tensor.zeros(y.shape, dtype: y.dtype) }
            return out
        }
        return try y.tangentSum([ta.map { try op.derivative(0, $0, a: a, b: b, y: y) },
                                 tb.map { try op.derivative(1, $0, a: a, b: b, y: y) }])
    }
}

// MARK: - The fused loops

/// The loops made from an op's derivative at Float and Double: specialised per op, so each is
/// the loop one would write by hand for it.
enum FusedLoop {
    /// out[i] = (accumulate ? out[i] : 0) + derivative(v[i], x[i], y[i]) for i < n; `out` may
    /// be `v` itself (each element is read before it is written). Large counts are split over
    /// the worker threads.
    @inline(__always)
    static func unary<Op: UnaryElementwise>(_ op: Op, dtype: DType, v: UnsafeMutableRawPointer, x: UnsafeMutableRawPointer,
                                            y: UnsafeMutableRawPointer, into out: UnsafeMutableRawPointer, count n: Int, accumulate: Bool) {
        if n < Parallel.minimumParallelCount {
            if op.derivativeKernel(v, x: x, into: out, count: n, dtype: dtype, accumulate: accumulate) { return }
        } else if op.derivativeKernel(v, x: x, into: out, count: 0, dtype: dtype, accumulate: accumulate) {
            // The op has a kernel for this dtype (asked with no element): run it in chunks.
            let size = dtype.size
            Parallel.forChunks(count: n) { r in
                _ = op.derivativeKernel(v + r.lowerBound * size, x: x + r.lowerBound * size, into: out + r.lowerBound * size,
                                        count: r.count, dtype: dtype, accumulate: accumulate)
            }
            return
        }
        switch dtype {
        case .float32:
            let (vp, xp, yp, o) = (v.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
                                   y.assumingMemoryBound(to: Float.self), out.assumingMemoryBound(to: Float.self))
            if n < Parallel.minimumParallelCount { unary(op, vp, xp, yp, o, 0..<n, accumulate); return }
            Parallel.forChunks(count: n) { r in unary(op, vp, xp, yp, o, r, accumulate) }
        case .float64:
            let (vp, xp, yp, o) = (v.assumingMemoryBound(to: Double.self), x.assumingMemoryBound(to: Double.self),
                                   y.assumingMemoryBound(to: Double.self), out.assumingMemoryBound(to: Double.self))
            if n < Parallel.minimumParallelCount { unary(op, vp, xp, yp, o, 0..<n, accumulate); return }
            Parallel.forChunks(count: n) { r in unary(op, vp, xp, yp, o, r, accumulate) }
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }

    @inline(__always)
    private static func unary<Op: UnaryElementwise, T: TensorElement & Differentiable>(
        _ op: Op, _ v: UnsafeMutablePointer<T>, _ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
        _ out: UnsafeMutablePointer<T>, _ r: Range<Int>, _ accumulate: Bool) where T.Failure == Never {
        if accumulate {
            for i in r { out[i] += op.derivative(v[i], x: x[i], y: y[i]) }
        } else {
            for i in r { out[i] = op.derivative(v[i], x: x[i], y: y[i]) }
        }
    }

    /// out[i] = (accumulate ? out[i] : 0) + derivative(k, v[i], a[i], b[i], y[i]); as above.
    @inline(__always)
    static func binary<Op: BinaryElementwise>(_ op: Op, _ k: Int, dtype: DType, v: UnsafeMutableRawPointer, a: UnsafeMutableRawPointer,
                                              b: UnsafeMutableRawPointer, y: UnsafeMutableRawPointer,
                                              into out: UnsafeMutableRawPointer, count n: Int, accumulate: Bool) {
        switch dtype {
        case .float32:
            let (vp, ap, bp, yp, o) = (v.assumingMemoryBound(to: Float.self), a.assumingMemoryBound(to: Float.self),
                                       b.assumingMemoryBound(to: Float.self), y.assumingMemoryBound(to: Float.self),
                                       out.assumingMemoryBound(to: Float.self))
            if n < Parallel.minimumParallelCount { binary(op, k, vp, ap, bp, yp, o, 0..<n, accumulate); return }
            Parallel.forChunks(count: n) { r in binary(op, k, vp, ap, bp, yp, o, r, accumulate) }
        case .float64:
            let (vp, ap, bp, yp, o) = (v.assumingMemoryBound(to: Double.self), a.assumingMemoryBound(to: Double.self),
                                       b.assumingMemoryBound(to: Double.self), y.assumingMemoryBound(to: Double.self),
                                       out.assumingMemoryBound(to: Double.self))
            if n < Parallel.minimumParallelCount { binary(op, k, vp, ap, bp, yp, o, 0..<n, accumulate); return }
            Parallel.forChunks(count: n) { r in binary(op, k, vp, ap, bp, yp, o, r, accumulate) }
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }

    @inline(__always)
    private static func binary<Op: BinaryElementwise, T: TensorElement & Differentiable>(
        _ op: Op, _ k: Int, _ v: UnsafeMutablePointer<T>, _ a: UnsafeMutablePointer<T>, _ b: UnsafeMutablePointer<T>,
        _ y: UnsafeMutablePointer<T>, _ out: UnsafeMutablePointer<T>, _ r: Range<Int>, _ accumulate: Bool) where T.Failure == Never {
        if k == 0 {
            if accumulate { for i in r { out[i] += op.derivative(0, v[i], a: a[i], b: b[i], y: y[i]) } }
            else { for i in r { out[i] = op.derivative(0, v[i], a: a[i], b: b[i], y: y[i]) } }
        } else {
            if accumulate { for i in r { out[i] += op.derivative(1, v[i], a: a[i], b: b[i], y: y[i]) } }
            else { for i in r { out[i] = op.derivative(1, v[i], a: a[i], b: b[i], y: y[i]) } }
        }
    }
}

/// The elementwise op whose fused loop the backward pass may run for a node, as a typed value:
/// a unary op's UnaryKind or a binary op's BinaryKind, each enum declared beside its family's
/// ops (Ops/Unary.swift, Ops/Arithmetic.swift) with one dispatch line per op, so adding a fused
/// op touches its family file only. A node gets its op's kind only when every input has the
/// output's shape and dtype (no broadcast to undo); `.none` otherwise.
struct ElementwiseKind: Equatable {
    private let raw: UInt8

    static var none: ElementwiseKind { ElementwiseKind(raw: 0) }
    private init(raw: UInt8) { self.raw = raw }
    init(_ kind: UnaryKind) { raw = kind.rawValue }
    init(_ kind: BinaryKind) { raw = kind.rawValue }

    /// The kind decoded into its family's enum, for callers that dispatch many times (a replay).
    var decoded: DecodedElementwiseKind {
        if let kind = UnaryKind(rawValue: raw) { return .unary(kind) }
        if let kind = BinaryKind(rawValue: raw) { return .binary(kind) }
        return .none
    }

    /// Calls the visitor's visit(_:) with this kind's op: one dispatch, after which the op's
    /// loop and what surrounds it are specialised together.
    @inline(__always)
    func dispatch<V: ElementwiseVisitor>(to visitor: inout V) throws {
        if let kind = UnaryKind(rawValue: raw) {
            try kind.dispatch(to: &visitor)
        } else if let kind = BinaryKind(rawValue: raw) {
            try kind.dispatch(to: &visitor)
        }
    }
}

/// An ElementwiseKind decoded once (see ElementwiseKind.decoded).
enum DecodedElementwiseKind {
    case none
    case unary(UnaryKind)
    case binary(BinaryKind)

    @inline(__always)
    func dispatch<V: ElementwiseVisitor>(to visitor: inout V) throws {
        switch self {
        case .none: break
        case .unary(let kind): try kind.dispatch(to: &visitor)
        case .binary(let kind): try kind.dispatch(to: &visitor)
        }
    }
}

/// What is done with an elementwise op given its kind (the backward pass's fused delivery, a
/// replay's loop). Generic in the op, so each op's visit is specialised.
protocol ElementwiseVisitor {
    mutating func visit<Op: UnaryElementwise>(_ op: Op) throws
    mutating func visit<Op: BinaryElementwise>(_ op: Op) throws
}
