#if canImport(Glibc)
import Glibc
#endif
import CKernels

/// An optimizer updates a fixed list of parameters (leaf tensors) in place from their `.grad`.
/// Parameters without a gradient are skipped. Updates write into the parameters' storage, so
/// tensors sharing it (detach) see the new values, as in PyTorch.
///
/// Sendable, checked by hand: the parameter list and hyper-parameters are immutable; the rate,
/// the step count and every state buffer (here and in the subclasses) are read and written
/// only under `GraphLock` (steps, `learningRate`, state save and restore), so steps from several
/// threads are serialised.
public class Optimizer: @unchecked Sendable {
    public let parameters: [Tensor]
    /// The learning rate; may change between steps (from any thread: under the graph lock).
    public var learningRate: Double {
        get { GraphLock.withLock { rate } }
        set { GraphLock.withLock { rate = newValue } }
    }
    private var rate: Double
    /// The learning rate, read inside a step (which already holds the graph lock).
    var rateInStep: Double { rate }
    /// Steps taken so far.
    public var steps: Int { GraphLock.withLock { stepCount } }
    /// Under the graph lock.
    private var stepCount = 0

    init(parameters: [Tensor], learningRate: Double) throws {
        guard !parameters.isEmpty else { throw AutogradError.argument("optimizer: no parameters given") }
        guard learningRate.isFinite && learningRate >= 0 else {
            throw AutogradError.argument("optimizer: the learning rate must be finite and >= 0, got \(learningRate)")
        }
        for (k, p) in parameters.enumerated() {
            guard p.isLeaf && p.requiresGrad else {
                throw AutogradError.state("optimizer: parameter \(k) must be a leaf that requires grad")
            }
            // Refused here, so no step ever writes part of a parameter list (a storage never
            // becomes read-only later).
            try p.storage.refuseReadOnly("optimizer: parameter \(k)")
        }
        for i in parameters.indices {
            for j in parameters.indices where j > i && parameters[i] === parameters[j] {
                throw AutogradError.argument("optimizer: parameter \(j) repeats parameter \(i)")
            }
        }
        self.parameters = parameters
        self.rate = learningRate
    }

    /// One update of every parameter that has a gradient.
    public func step() throws {
        try GraphLock.withLock { try unlockedStep() }
    }

    private func unlockedStep() throws {
        guard rate.isFinite && rate >= 0 else {
            throw AutogradError.argument("optimizer: the learning rate must be finite and >= 0, got \(rate)")
        }
        // Everything that can fail comes first (gradient copies, optimizer state), so a step
        // either updates every parameter that has a gradient or none.
        var work: [(k: Int, g: Tensor)] = []
        for (k, p) in parameters.enumerated() {
            guard let g = p.grad else { continue }
            guard g.shape == p.shape && g.dtype == p.dtype else {
                throw AutogradError.internal("optimizer: the gradient of parameter \(k) does not match it")
            }
            try prepare(k, count: p.count)
            work.append((k, g))
        }
        if Trace.recorder != nil {
            // A capture replays the step with the gradients it computed (see CapturedFunction).
            let ks = work.map(\.k)
            Trace.noteEffect("optimizer_step", reads: work.map(\.g), writes: ks.map { parameters[$0].storage }) { gs in
                try GraphLock.withLock { try self.apply(ks, gs) }
            }
        }
        try apply(work.map(\.k), work.map(\.g))
    }

    /// Updates parameter ks[i] from gs[i] for each i (under the graph lock; the state of each
    /// ks[i] already made).
    private func apply(_ ks: [Int], _ gs: [Tensor]) throws {
        guard rate.isFinite && rate >= 0 else {
            throw AutogradError.argument("optimizer: the learning rate must be finite and >= 0, got \(rate)")
        }
        // The update kernels take p and g as non-aliasing (restrict) pointers: a gradient sharing
        // its parameter's values is copied first (before any update, so a failure updates none).
        var gs = gs
        if zip(ks, gs).contains(where: { $1.storage === parameters[$0].storage }) {
            gs = try zip(ks, gs).map { k, g in g.storage === parameters[k].storage ? try g.copy() : g }
        }
        stepCount += 1
        for (k, g) in zip(ks, gs) {
            let p = parameters[k]
            switch p.dtype {
            case .float32: update(k, p.buffer(Float.self), g.buffer(Float.self))
            case .float64: update(k, p.buffer(Double.self), g.buffer(Double.self))
            case .int64, .bool: break  // unreachable: parameters require grad, so are floating point
            }
            // An in-place write: graphs that saved p's old values now refuse a backward.
            p.storage.bumpVersion()
        }
    }

    /// Clears every parameter's gradient.
    public func zeroGrad() {
        for p in parameters { p.zeroGrad() }
    }

    /// Makes the state parameter k's update reads (called before `update`, which cannot fail).
    func prepare(_ k: Int, count: Int) throws {}

    /// Per-parameter state, float64 whatever the parameter's dtype (exact for float32 too), made
    /// zero on first use. Through Storage, so a parameter too large for the memory left is
    /// AutogradError.outOfMemory, not an abort in the runtime's array allocation.
    func makeState(_ slots: inout [Storage?], _ k: Int, count: Int) throws {
        if slots.count < parameters.count { slots = [Storage?](repeating: nil, count: parameters.count) }
        guard slots[k] == nil else { return }
        let storage = try Storage.make(dtype: .float64, count: count)
        storage.buffer(Double.self).update(repeating: 0)
        slots[k] = storage
    }

    // One override per dtype (a generic override would run unspecialised: a dynamic cast per
    // element); subclasses forward both to one @inline(__always) generic body.
    func update(_ k: Int, _ p: UnsafeMutableBufferPointer<Float>, _ g: UnsafeMutableBufferPointer<Float>) {}
    func update(_ k: Int, _ p: UnsafeMutableBufferPointer<Double>, _ g: UnsafeMutableBufferPointer<Double>) {}

    // MARK: State, for checkpoints (see Checkpoint)

    /// The optimizer's kind as a checkpoint names it: "sgd", "adam" or "adamw".
    public var kindName: String { "" }

    /// The hyper-parameters fixed at construction (the learning rate is apart): a checkpoint
    /// records them and a restore refuses an optimizer whose values differ.
    public var hyperparameters: [(name: String, value: Double)] { [] }

    /// The names of the state tensors a parameter has once it has been stepped (in order).
    public var stateSlotNames: [String] { [] }

    /// A copy of parameter k's state tensors, named as `stateSlotNames`; empty while parameter
    /// k has no state yet (never stepped, or an optimizer without state).
    public func stateTensors(ofParameter k: Int) throws -> [(slot: String, tensor: Tensor)] {
        guard parameters.indices.contains(k) else {
            throw AutogradError.argument("optimizer: parameter index \(k) is out of range 0..<\(parameters.count)")
        }
        return try GraphLock.withLock { try lockedStateTensors(k) }
    }

    /// Replaces the whole state: the learning rate, the step count and, per parameter, its
    /// state tensors (nil: no state, as before its first step). Each parameter's tensors must be
    /// exactly `stateSlotNames`, of the shapes and dtypes `stateTensors` gives; everything is
    /// checked before anything changes.
    public func restoreState(learningRate lr: Double, steps newSteps: Int, tensors: [[String: Tensor]?]) throws {
        guard lr.isFinite && lr >= 0 else {
            throw AutogradError.argument("optimizer: the learning rate must be finite and >= 0, got \(lr)")
        }
        guard newSteps >= 0 && newSteps <= Optimizer.maximumSteps else {
            throw AutogradError.argument("optimizer: a step count must be in 0...\(Optimizer.maximumSteps), got \(newSteps)")
        }
        guard tensors.count == parameters.count else {
            throw AutogradError.argument("optimizer: state for \(tensors.count) parameters, but the optimizer has \(parameters.count)")
        }
        for (k, slots) in tensors.enumerated() {
            guard let slots else { continue }
            let names = stateSlotNames
            guard Set(slots.keys) == Set(names) else {
                throw AutogradError.argument("optimizer: the state of parameter \(k) has the slots \(slots.keys.sorted()), want \(names)")
            }
            for name in names {
                let t = slots[name]!  // present: the key sets are equal
                let (shape, dtype) = slotLayout(name, parameter: parameters[k])
                guard t.shape == shape && t.dtype == dtype else {
                    throw AutogradError.argument("optimizer: state '\(name)' of parameter \(k) is \(t.dtype) \(t.shape), want \(dtype) \(shape)")
                }
            }
            try checkRestoredSlots(slots, k)
        }
        // Copies first (they may fail for memory); then the state is replaced under the lock.
        let copies: [[String: Storage]?] = try tensors.map { slots in
            try slots.map { try $0.mapValues { t in try t.copy().storage } }
        }
        GraphLock.withLock {
            rate = lr
            stepCount = newSteps
            replaceState(copies)
        }
    }

    /// The largest step count a restore accepts (2^53: counted exactly as a Double in Adam's bias
    /// corrections). A count from a file near Int.max would trap on the next step's `+= 1`.
    static let maximumSteps = 1 << 53

    /// The shape and dtype of a state slot of parameter p (float64 moments, int64 step counts).
    func slotLayout(_ name: String, parameter p: Tensor) -> (shape: [Int], dtype: DType) { (p.shape, .float64) }

    /// Subclass checks of restored values beyond shape and dtype (a step count >= 1, ...).
    func checkRestoredSlots(_ slots: [String: Tensor], _ k: Int) throws {}

    func lockedStateTensors(_ k: Int) throws -> [(slot: String, tensor: Tensor)] { [] }

    func replaceState(_ slots: [[String: Storage]?]) {}

    /// A tensor holding a copy of a state buffer, in parameter k's shape.
    func stateCopy(_ storage: Storage, _ k: Int) throws -> Tensor {
        try Tensor(shape: parameters[k].shape, storage: storage).copy()
    }
}

/// Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay
/// (torch.optim.SGD with dampening 0).
public final class SGD: Optimizer, @unchecked Sendable {
    public let momentum: Double
    public let nesterov: Bool
    public let weightDecay: Double
    private var buffers: [Storage?] = []
    /// Whether parameter k's momentum buffer holds a value yet (the first step sets it to d).
    private var started: [Bool] = []

    public init(parameters: [Tensor], learningRate: Double, momentum: Double = 0, nesterov: Bool = false, weightDecay: Double = 0) throws {
        guard momentum.isFinite && momentum >= 0 && weightDecay.isFinite && weightDecay >= 0 else {
            throw AutogradError.argument("SGD: momentum and weight decay must be finite and >= 0")
        }
        guard !nesterov || momentum > 0 else { throw AutogradError.argument("SGD: Nesterov momentum needs momentum > 0") }
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        try super.init(parameters: parameters, learningRate: learningRate)
    }

    override func prepare(_ k: Int, count: Int) throws {
        guard momentum != 0 else { return }
        if started.count < parameters.count { started = [Bool](repeating: false, count: parameters.count) }
        try makeState(&buffers, k, count: count)
    }

    public override var kindName: String { "sgd" }
    public override var hyperparameters: [(name: String, value: Double)] {
        [("momentum", momentum), ("nesterov", nesterov ? 1 : 0), ("weight_decay", weightDecay)]
    }
    public override var stateSlotNames: [String] { momentum == 0 ? [] : ["momentum_buffer"] }

    override func lockedStateTensors(_ k: Int) throws -> [(slot: String, tensor: Tensor)] {
        guard k < started.count, started[k], let b = buffers[k] else { return [] }
        return [("momentum_buffer", try stateCopy(b, k))]
    }

    override func replaceState(_ slots: [[String: Storage]?]) {
        buffers = slots.map { $0?["momentum_buffer"] }
        started = buffers.map { $0 != nil }
    }

    // Without momentum the update is one vectorised C loop (same double arithmetic).
    override func update(_ k: Int, _ p: UnsafeMutableBufferPointer<Float>, _ g: UnsafeMutableBufferPointer<Float>) {
        if momentum == 0 { agk_sgd_f32(p.baseAddress, g.baseAddress, Int64(p.count), rateInStep, weightDecay); return }
        apply(k, p, g)
    }
    override func update(_ k: Int, _ p: UnsafeMutableBufferPointer<Double>, _ g: UnsafeMutableBufferPointer<Double>) {
        if momentum == 0 { agk_sgd_f64(p.baseAddress, g.baseAddress, Int64(p.count), rateInStep, weightDecay); return }
        apply(k, p, g)
    }

    /// The step with momentum (momentum > 0: update() runs the C loop otherwise).
    @inline(__always)
    private func apply<T: TensorElement>(_ k: Int, _ p: UnsafeMutableBufferPointer<T>, _ g: UnsafeMutableBufferPointer<T>) {
        let lr = rateInStep
        let first = !started[k]
        started[k] = true
        let buf = buffers[k]!.buffer(Double.self)
        for i in 0..<p.count {
            let d = Double(g[i]) + weightDecay * Double(p[i])
            let b = first ? d : momentum * buf[i] + d
            buf[i] = b
            p[i] = T(Double(p[i]) - lr * (nesterov ? d + momentum * b : b))
        }
    }
}

/// Adam (torch.optim.Adam: L2 weight decay added to the gradient) and AdamW (decoupled weight
/// decay: the parameter shrinks by lr·weightDecay before the Adam step).
public final class Adam: Optimizer, @unchecked Sendable {
    public let beta1: Double
    public let beta2: Double
    public let epsilon: Double
    public let weightDecay: Double
    public let decoupledWeightDecay: Bool
    private var m: [Storage?] = []
    private var v: [Storage?] = []
    private var paramSteps: [Int] = []

    public init(parameters: [Tensor], learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-8, weightDecay: Double = 0, decoupledWeightDecay: Bool = false) throws {
        guard beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 else {
            throw AutogradError.argument("Adam: betas must be in [0, 1), got \(beta1), \(beta2)")
        }
        guard epsilon.isFinite && epsilon >= 0 && weightDecay.isFinite && weightDecay >= 0 else {
            throw AutogradError.argument("Adam: eps and weight decay must be finite and >= 0")
        }
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupledWeightDecay
        try super.init(parameters: parameters, learningRate: learningRate)
        paramSteps = [Int](repeating: 0, count: parameters.count)
    }

    /// AdamW: Adam with decoupled weight decay (default 0.01, as torch.optim.AdamW).
    public static func adamW(parameters: [Tensor], learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999,
                             epsilon: Double = 1e-8, weightDecay: Double = 0.01) throws -> Adam {
        try Adam(parameters: parameters, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                 weightDecay: weightDecay, decoupledWeightDecay: true)
    }

    override func prepare(_ k: Int, count: Int) throws {
        try makeState(&m, k, count: count)
        try makeState(&v, k, count: count)
    }

    public override var kindName: String { decoupledWeightDecay ? "adamw" : "adam" }
    public override var hyperparameters: [(name: String, value: Double)] {
        [("beta1", beta1), ("beta2", beta2), ("eps", epsilon), ("weight_decay", weightDecay)]
    }
    /// torch.optim.Adam's names for the two moments and the step count.
    public override var stateSlotNames: [String] { ["exp_avg", "exp_avg_sq", "step"] }

    override func slotLayout(_ name: String, parameter p: Tensor) -> (shape: [Int], dtype: DType) {
        name == "step" ? ([], .int64) : (p.shape, .float64)
    }

    override func checkRestoredSlots(_ slots: [String: Tensor], _ k: Int) throws {
        let t = slots["step"]!.int64Values[0]  // a 0-d int64 tensor: checked by the caller
        guard t >= 1 && t <= Optimizer.maximumSteps else {
            throw AutogradError.argument("Adam: the step count of parameter \(k) must be in 1...\(Optimizer.maximumSteps) with its moments, got \(t)")
        }
    }

    override func lockedStateTensors(_ k: Int) throws -> [(slot: String, tensor: Tensor)] {
        guard k < m.count, let mk = m[k], let vk = v[k], paramSteps[k] > 0 else { return [] }
        return [("exp_avg", try stateCopy(mk, k)), ("exp_avg_sq", try stateCopy(vk, k)),
                ("step", try withUnsafeBytes(of: Int64(paramSteps[k])) { try Tensor(copying: $0.baseAddress, shape: [], dtype: .int64) })]
    }

    override func replaceState(_ slots: [[String: Storage]?]) {
        m = slots.map { $0?["exp_avg"] }
        v = slots.map { $0?["exp_avg_sq"] }
        paramSteps = slots.map { s in
            // A 0-d int64 storage (checked by restoreState): one element, never nil.
            guard let step = s?["step"], let raw = step.raw else { return 0 }
            return Int(raw.load(as: Int64.self))
        }
    }

    // One vectorised C loop per dtype (the arithmetic of the step, in double; see ckernels.h).
    override func update(_ k: Int, _ p: UnsafeMutableBufferPointer<Float>, _ g: UnsafeMutableBufferPointer<Float>) {
        var constants = stepConstants(k)
        agk_adam_f32(p.baseAddress, g.baseAddress, m[k]!.buffer(Double.self).baseAddress,
                     v[k]!.buffer(Double.self).baseAddress, Int64(p.count), &constants)
    }
    override func update(_ k: Int, _ p: UnsafeMutableBufferPointer<Double>, _ g: UnsafeMutableBufferPointer<Double>) {
        var constants = stepConstants(k)
        agk_adam_f64(p.baseAddress, g.baseAddress, m[k]!.buffer(Double.self).baseAddress,
                     v[k]!.buffer(Double.self).baseAddress, Int64(p.count), &constants)
    }

    /// Counts parameter k's step and returns that step's constants (bias corrections 1 - β^t).
    private func stepConstants(_ k: Int) -> agk_adam_constants {
        paramSteps[k] += 1
        let t = Double(paramSteps[k])
        return agk_adam_constants(lr: rateInStep, beta1: beta1, beta2: beta2, eps: epsilon, weight_decay: weightDecay,
                                  correction1: 1 - pow(beta1, t), correction2: 1 - pow(beta2, t),
                                  decoupled: decoupledWeightDecay ? 1 : 0)
    }
}
