import Synchronization

/// A tensor's tangent in one forward-mode pass (a jvp), tagged with the pass's level so that a
/// tangent left on a tensor after its pass ended is never read by a later one.
final class Tangent {
    let level: UInt64
    let value: Tensor

    init(level: UInt64, value: Tensor) {
        self.level = level
        self.value = value
    }
}

/// Forward-mode differentiation: during a jvp, tensors carry tangents, and every op that sees
/// an input with a tangent computes its output's tangent from its JVP (stated next to its
/// forward). The tangent computation runs with forward mode suspended (its own ops carry no
/// tangents) and with grad mode as it is, so tangents are differentiable by reverse mode.
/// Costs nothing outside a jvp: an op reads its inputs' `tangentBox`, which is nil there.
enum ForwardMode {
    /// Levels handed out so far (each jvp gets a fresh one).
    private static let levels = Atomic<UInt64>(0)

    /// t's tangent in the forward-mode pass running on this thread, if it has one.
    @inline(__always)
    static func tangent(of t: Tensor) -> Tensor? {
        guard let box = t.tangentBox else { return nil }
        let level = ThreadState.current.forwardLevel
        return level != 0 && box.level == level ? box.value : nil
    }

    /// Whether a forward-mode pass is running on this thread.
    static var isRunning: Bool { ThreadState.current.forwardLevel != 0 }

    /// Runs `body` as a forward-mode pass: `seed` gives the inputs their tangents (on tensors
    /// made for it), and the pass's level is active on this thread until `body` returns.
    static func run<R>(_ body: (_ level: UInt64) throws -> R) throws -> R {
        let state = ThreadState.current
        guard state.forwardLevel == 0 else {
            throw AutogradError.state("a forward-mode pass is already running on this thread (a jvp, hvp, hessian or forward-mode jacobian inside the function of another, or inside an op's tangent); nest reverse mode inside forward mode instead (vjp, grad and reverse-mode jacobian may run there)")
        }
        let level = levels.add(1, ordering: .relaxed).newValue
        state.forwardLevel = level
        defer { state.forwardLevel = 0 }
        return try body(level)
    }

    /// Sets `out`'s tangent to `jvp()`, computed with forward mode suspended; checks that the
    /// rule gave a tangent of the output's shape and dtype.
    static func setTangent(of out: Tensor, _ jvp: () throws -> Tensor) throws {
        let state = ThreadState.current
        let level = state.forwardLevel
        guard level != 0 else { return }
        state.forwardLevel = 0
        defer { state.forwardLevel = level }
        let t = try jvp()
        guard t.shape == out.shape && t.dtype == out.dtype else {
            throw AutogradError.internal("a tangent rule gave \(t.dtype) \(t.shape) for an output of \(out.dtype) \(out.shape)")
        }
        out.tangentBox = Tangent(level: level, value: t)
    }
}

extension Tensor {
    /// Sets this result's tangent from input a's by `jvp`, when a has a tangent in the
    /// forward-mode pass running on this thread (see ForwardMode).
    @inline(__always)
    func deriveTangent(from a: Tensor, _ jvp: (Tensor) throws -> Tensor) throws {
        guard a.tangentBox != nil, a !== self, let ta = ForwardMode.tangent(of: a) else { return }
        try ForwardMode.setTangent(of: self) { try jvp(ta) }
    }

    /// The same for two inputs; the rule gets nil for an input without a tangent (its term is 0).
    @inline(__always)
    func deriveTangent(from a: Tensor, _ b: Tensor, _ jvp: (Tensor?, Tensor?) throws -> Tensor) throws {
        guard a.tangentBox != nil || b.tangentBox != nil else { return }
        let ta = ForwardMode.tangent(of: a), tb = ForwardMode.tangent(of: b)
        guard ta != nil || tb != nil, a !== self, b !== self else { return }
        try ForwardMode.setTangent(of: self) { try jvp(ta, tb) }
    }

    /// The sum of a JVP's terms (one per input; nil for an input without a tangent), broadcast
    /// to this output's shape; zeros when there is none.
    func tangentSum(_ terms: [Tensor?]) throws -> Tensor {
        var sum: Tensor? = nil
        for case let term? in terms { sum = try sum.map { try $0.adding(term) } ?? term }
        guard let sum else { return try Tensor.zeros(shape, dtype: dtype) }
        return sum.shape == shape ? sum : try sum.expanded(to: shape)
    }

    /// The same for any number of inputs.
    func deriveTangent(from inputs: [Tensor], _ jvp: ([Tensor?]) throws -> Tensor) throws {
        guard inputs.contains(where: { $0.tangentBox != nil }) else { return }
        let tangents = inputs.map { ForwardMode.tangent(of: $0) }
        guard tangents.contains(where: { $0 != nil }), !inputs.contains(where: { $0 === self }) else { return }
        try ForwardMode.setTangent(of: self) { try jvp(tangents) }
    }
}
