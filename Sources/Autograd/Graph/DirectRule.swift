/// The derivative rules of the commonest elementwise ops restated as one fused loop each, for
/// backward passes that are not recorded; these skip the op machinery for the many small nodes
/// of scalar graphs. A node gets one only when it has at most maximumCount elements and every
/// input has the output's shape and dtype (no broadcast to undo). The rules in Ops/ stay the
/// definition and run instead whenever the pass is recorded (create_graph) or is a grad()
/// (capture) pass, the node has hooks, or the node has no DirectRule. Each formula here is its
/// rule's formula in the same order of operations, so every path gives the same gradient
/// (FusedRuleAgreementTests checks them against each other, at the extremes too). Of the
/// rules' own one-kernel forms (used when the pass is not recorded), exp, tanh and sigmoid call
/// inputGradient below; mul (Tensor.gradient) and relu (agk_relu_grad) restate their formulas;
/// add, sub, div, neg and log run their tensor ops in every pass.
enum DirectRule: UInt8 {
    case none, add, sub, mul, div, neg, exp, log, tanh, sigmoid, relu

    /// Largest element count handled here; bigger tensors go through the rules (their one-kernel
    /// forms, or tensor ops whose add/sub/mul/div kernels are split over threads).
    static let maximumCount = 4096

    /// Whether input k's gradient is the incoming gradient itself (handed on, not computed).
    @inline(__always)
    func passesGradient(toInput k: Int) -> Bool {
        self == .add || (self == .sub && k == 0)
    }

    /// The gradient for input k at one element: g the incoming gradient, u and w the values the
    /// op saved (see Node.directValues), in the order the op saved them.
    @inline(__always)
    func inputGradient<T: TensorElement>(_ k: Int, g: T, u: T, w: T) -> T {
        switch self {
        case .none, .add: return g
        case .sub: return k == 0 ? g : -g
        case .mul: return k == 0 ? g * w : g * u                   // u = a, w = b
        case .div: return k == 0 ? g / w : -((g * (u / w)) / w)    // d(a/b) = 1/b, -a/b² (see Tensor.dividing)
        case .neg: return -g
        case .exp: return g * w                                    // w = exp(x), the output
        case .log: return g / u                                    // u = x
        case .tanh: return g * (1 - w * w)                         // w = tanh(x)
        case .sigmoid: return g * (w * (1 - w))                    // w = sigmoid(x)
        case .relu: return u <= 0 ? 0 : g                          // u = relu(x), 0 where x <= 0; selected
        }
    }

    /// out[i] = (accumulate ? out[i] : 0) + inputGradient(k, g[i], u[i], w[i]) for i < n.
    /// `out` may be `g` itself (each element is read before it is written).
    @inline(__always)
    func apply<T: TensorElement>(_ k: Int, g: UnsafePointer<T>, u: UnsafePointer<T>, w: UnsafePointer<T>,
                                 into out: UnsafeMutablePointer<T>, count n: Int, accumulate: Bool) {
        if accumulate {
            for i in 0..<n { out[i] += inputGradient(k, g: g[i], u: u[i], w: w[i]) }
        } else {
            for i in 0..<n { out[i] = inputGradient(k, g: g[i], u: u[i], w: w[i]) }
        }
    }

    /// The same over raw buffers of `dtype`.
    @inline(__always)
    func apply(_ k: Int, dtype: DType, g: UnsafeMutableRawPointer, u: UnsafeMutableRawPointer?, w: UnsafeMutableRawPointer?,
               into out: UnsafeMutableRawPointer, count n: Int, accumulate: Bool) {
        switch dtype {
        case .float32:
            let gp = g.assumingMemoryBound(to: Float.self)
            apply(k, g: gp, u: u?.assumingMemoryBound(to: Float.self) ?? gp, w: w?.assumingMemoryBound(to: Float.self) ?? gp,
                  into: out.assumingMemoryBound(to: Float.self), count: n, accumulate: accumulate)
        case .float64:
            let gp = g.assumingMemoryBound(to: Double.self)
            apply(k, g: gp, u: u?.assumingMemoryBound(to: Double.self) ?? gp, w: w?.assumingMemoryBound(to: Double.self) ?? gp,
                  into: out.assumingMemoryBound(to: Double.self), count: n, accumulate: accumulate)
        }
    }
}
