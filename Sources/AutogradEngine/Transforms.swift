/// Function transforms: forward mode (jvp), reverse mode (vjp), Jacobians in either mode,
/// Hessian-vector products (forward over reverse) and Hessians, as in JAX and torch.func.
/// Each takes the function as a closure over tensors and runs it as many times as it needs.
public enum Transforms {
    /// The Jacobian's two ways: one reverse pass per output element, or one forward pass per
    /// input element (cheaper when the input is the smaller).
    public enum JacobianMode: Sendable {
        case reverse, forward
    }

    /// f(primals) and the directional derivatives of its outputs along `tangents` (one per
    /// primal, same shape and dtype), in one forward-mode pass. The outputs are what f returned;
    /// an output that does not depend on the primals has a zero tangent. A tangent is recorded
    /// (differentiable by reverse mode) where the primals require grad and grad mode is on, and
    /// never shares memory with a tangent given.
    public static func jvp(_ f: ([Tensor]) throws -> [Tensor], primals: [Tensor], tangents: [Tensor]) throws
        -> (outputs: [Tensor], tangents: [Tensor]) {
        guard primals.count == tangents.count else {
            throw AutogradError.argument("jvp: \(tangents.count) tangents for \(primals.count) primals")
        }
        for (k, (p, t)) in zip(primals, tangents).enumerated() {
            guard t.dtype == p.dtype else {
                throw AutogradError.dtype("jvp: tangent \(k) is \(t.dtype) but its primal is \(p.dtype)")
            }
            try p.requireFloatingPoint("jvp", "primal \(k)")
            guard t.shape == p.shape else {
                throw AutogradError.shape("jvp: tangent \(k) has shape \(t.shape) but its primal has shape \(p.shape)")
            }
        }
        return try ForwardMode.run { level in
            let inputs = primals.enumerated().map { k, p in
                let x = p.alias()
                x.tangentBox = Tangent(level: level, value: tangents[k].detach())
                return x
            }
            let outputs = try f(inputs)
            let outTangents = try outputs.map { y -> Tensor in
                guard let t = ForwardMode.tangent(of: y) else { return try Tensor.zeros(y.shape, dtype: y.dtype) }
                // f returned an input (or a view of one): its tangent is the caller's, so copy it.
                return tangents.contains(where: { $0.storage === t.storage }) ? try t.copy() : t
            }
            return (outputs, outTangents)
        }
    }

    /// f(primals) and the gradients of Σₖ⟨outputs[k], cotangents[k]⟩ with respect to each
    /// primal (zeros for a primal the outputs do not depend on). With `createGraph` the
    /// gradients are recorded and the outputs keep their graph, both differentiable again, with
    /// respect to the primals that require grad (used themselves, as by `gradients`); without,
    /// neither has history, and every primal is differentiated as a value (through a new leaf:
    /// its own graph and hooks are not involved). Inside a forward-mode pass (a vjp in a jvp's
    /// function) the gradients carry their tangents: they are computed recorded, as hvp
    /// computes them. No result shares memory with a primal or a cotangent.
    public static func vjp(_ f: ([Tensor]) throws -> [Tensor], primals: [Tensor], cotangents: [Tensor],
                           createGraph: Bool = false) throws -> (outputs: [Tensor], gradients: [Tensor]) {
        let inputs = try primals.map { p -> Tensor in
            if p.requiresGrad && createGraph { return p }
            let x = p.detach()
            try x.setRequiresGrad(true)
            x.tangentBox = p.tangentBox  // inside a jvp, the primal's tangent goes on through f
            return x
        }
        let outputs = try GradMode.with(enabled: true) { try f(inputs) }
        guard outputs.count == cotangents.count else {
            throw AutogradError.argument("vjp: \(cotangents.count) cotangents for \(outputs.count) outputs")
        }
        for (k, (y, c)) in zip(outputs, cotangents).enumerated() {
            let (cot, out) = outputs.count == 1 ? ("the cotangent", "the function's output") : ("cotangent \(k)", "output \(k)")
            guard c.dtype == y.dtype else { throw AutogradError.dtype("vjp: \(cot) is \(c.dtype) but \(out) is \(y.dtype)") }
            guard c.shape == y.shape else { throw AutogradError.shape("vjp: \(cot) has shape \(c.shape) but \(out) has shape \(y.shape)") }
        }
        // Outputs that do not depend on the inputs add nothing.
        let live = outputs.indices.filter { outputs[$0].requiresGrad }
        let record = createGraph || ForwardMode.isRunning
        var grads = [Tensor?](repeating: nil, count: inputs.count)
        if !live.isEmpty {
            grads = try GradMode.with(enabled: record ? true : GradMode.isEnabled) {
                try Tensor.gradients(of: live.map { outputs[$0] }, withRespectTo: inputs, seeds: live.map { cotangents[$0] },
                                     retainGraph: record, createGraph: record, allowUnused: true)
            }
        }
        let given = primals + cotangents
        let gradients = try zip(inputs, grads).map { x, g -> Tensor in
            guard let g else { return try Tensor.zeros(x.shape, dtype: x.dtype) }
            guard record else { return g }  // handed out owned by `gradients`
            // A recorded gradient may be a cotangent or a primal itself: then a recorded copy
            // (which derives its tangent too).
            let own = given.contains { $0.storage === g.storage } ? try g * 1 : g
            return createGraph ? own : detachedKeepingTangent(own)
        }
        return (createGraph ? outputs : outputs.map(detachedKeepingTangent), gradients)
    }

    /// The Jacobian of f at x, of shape f(x).shape + x.shape (an empty shape for a scalar).
    /// Forward mode runs f once per element of x, and f must give an output of the same shape
    /// and dtype every time (AutogradError.callback otherwise). The Jacobian's rank must not
    /// exceed Shape.maxRank (AutogradError.shape, found before any derivative is computed).
    /// Not inside a forward-mode pass (AutogradError.state).
    public static func jacobian(_ f: (Tensor) throws -> Tensor, at x: Tensor, mode: JacobianMode = .reverse) throws -> Tensor {
        // Assembled from values, a Jacobian carries no tangent: refused where one is expected.
        guard !ForwardMode.isRunning else {
            throw AutogradError.state("jacobian: a forward-mode pass is already running on this thread (a jacobian inside the function of a jvp, hvp, hessian or forward-mode jacobian); its result would carry no tangent. Use vjp or grad with create_graph there")
        }
        let n = x.count
        switch mode {
        case .reverse:
            let input = try freshLeaf(x)
            let y = try GradMode.with(enabled: true) { try f(input) }
            let jac = try matrix(y.shape + x.shape, dtype: y.dtype, "jacobian")
            guard y.requiresGrad else { return jac }
            for i in 0..<y.count {
                let seed = try basis(i, shape: y.shape, dtype: y.dtype)
                let g = try Tensor.gradients(of: [y], withRespectTo: [input], seeds: [seed], retainGraph: true, allowUnused: true)[0]
                if let g { try place(g, into: jac, row: i, rows: y.count, columns: n) }
            }
            return jac
        case .forward:
            guard n > 0 else {
                let y = try withNoGrad { try f(x.detach()) }
                return try matrix(y.shape + x.shape, dtype: y.dtype, "jacobian")
            }
            let x0 = x.detach()  // nothing to record: only the tangents are read
            var jac: Tensor? = nil
            var first: (shape: [Int], dtype: DType) = ([], x.dtype)
            for j in 0..<n {
                let (outs, tans) = try jvp({ try [f($0[0])] }, primals: [x0], tangents: [basis(j, shape: x.shape, dtype: x.dtype)])
                let y = outs[0]
                if let jac {
                    try sameOutput(y, as: first, call: j + 1, "jacobian")
                    try place(tans[0], into: jac, column: j, rows: y.count, columns: n)
                } else {
                    first = (y.shape, y.dtype)
                    let m = try matrix(y.shape + x.shape, dtype: y.dtype, "jacobian")
                    try place(tans[0], into: m, column: j, rows: y.count, columns: n)
                    jac = m
                }
            }
            guard let jac else { throw AutogradError.internal("jacobian: no column was computed for \(n) elements") }
            return jac
        }
    }

    /// The Hessian-vector product H(x)·v of a scalar f (one element, of any shape), by
    /// forward over reverse: the tangent of f's gradient along v, in one pass (no Hessian is
    /// formed). A function of more elements is AutogradError.shape.
    public static func hvp(_ f: (Tensor) throws -> Tensor, at x: Tensor, vector v: Tensor) throws -> Tensor {
        guard v.dtype == x.dtype else { throw AutogradError.dtype("hvp: v is \(v.dtype) but the input is \(x.dtype)") }
        guard v.shape == x.shape else { throw AutogradError.shape("hvp: v has shape \(v.shape) but the input has shape \(x.shape)") }
        return try hvpProduct(f, at: x, vector: v) { y in try scalarOutput(y, "hvp") }
    }

    /// The Hessian of a scalar f at x, of shape x.shape + x.shape: one forward-over-reverse
    /// product per element of x, so f runs once per element and must give the same one-element
    /// output every time (AutogradError.shape on the first call, .callback on a later one).
    public static func hessian(_ f: (Tensor) throws -> Tensor, at x: Tensor) throws -> Tensor {
        let n = x.count
        let h = try matrix(x.shape + x.shape, dtype: x.dtype, "hessian")
        var first: (shape: [Int], dtype: DType) = ([], x.dtype)
        for j in 0..<n {
            let column = try hvpProduct(f, at: x, vector: basis(j, shape: x.shape, dtype: x.dtype)) { y in
                if j == 0 {
                    try scalarOutput(y, "hessian")
                    first = (y.shape, y.dtype)
                } else {
                    try sameOutput(y, as: first, call: j + 1, "hessian")
                }
            }
            try place(column, into: h, column: j, rows: n, columns: n)
        }
        return h
    }

    /// H(x)·v by forward over reverse; `check` sees f's output before it is differentiated.
    private static func hvpProduct(_ f: (Tensor) throws -> Tensor, at x: Tensor, vector v: Tensor,
                                   check: (Tensor) throws -> Void) throws -> Tensor {
        try ForwardMode.run { level in
            let input = try freshLeaf(x)
            input.tangentBox = Tangent(level: level, value: v.detach())
            let y = try GradMode.with(enabled: true) { try f(input) }
            try check(y)
            guard y.requiresGrad else { return try Tensor.zeros(x.shape, dtype: x.dtype) }
            let g = try GradMode.with(enabled: true) {
                try Tensor.gradients(of: [y], withRespectTo: [input], createGraph: true, allowUnused: true)[0]
            }
            guard let g, let t = ForwardMode.tangent(of: g) else { return try Tensor.zeros(x.shape, dtype: x.dtype) }
            return t.storage === v.storage ? try t.copy() : t.detach()
        }
    }

    /// Refuses an output of more than one element, for a transform that needs a scalar f.
    private static func scalarOutput(_ y: Tensor, _ what: String) throws {
        guard y.count == 1 else {
            throw AutogradError.shape("\(what): the function must return one element (a scalar), it returned shape \(y.shape)")
        }
    }

    /// Refuses an output whose shape or dtype differs from the first call's.
    private static func sameOutput(_ y: Tensor, as first: (shape: [Int], dtype: DType), call: Int, _ what: String) throws {
        guard y.shape == first.shape && y.dtype == first.dtype else {
            throw AutogradError.callback("\(what): the function's output changed between calls: \(first.dtype) \(first.shape) on call 1, \(y.dtype) \(y.shape) on call \(call) (it must have the same shape and dtype on every call)")
        }
    }

    /// A zero tensor for a Jacobian or Hessian of `shape`, refusing a rank beyond Shape.maxRank.
    private static func matrix(_ shape: [Int], dtype: DType, _ what: String) throws -> Tensor {
        guard shape.count <= Shape.maxRank else {
            throw AutogradError.shape("\(what): the result's shape \(shape) has rank \(shape.count), more than the \(Shape.maxRank) allowed")
        }
        return try Tensor.zeros(shape, dtype: dtype)
    }

    /// t without history, keeping its tangent in the forward-mode pass running (if any).
    private static func detachedKeepingTangent(_ t: Tensor) -> Tensor {
        let d = t.detach()
        d.tangentBox = t.tangentBox
        return d
    }

    /// A new leaf with x's values that requires grad and is part of no graph.
    private static func freshLeaf(_ x: Tensor) throws -> Tensor {
        let leaf = x.detach()
        try leaf.setRequiresGrad(true)
        return leaf
    }

    /// The one-hot tensor with a 1 at flat index i.
    private static func basis(_ i: Int, shape: [Int], dtype: DType) throws -> Tensor {
        let e = try Tensor.zeros(shape, dtype: dtype)
        switch dtype {
        case .float32: e.buffer(Float.self)[i] = 1
        case .float64: e.buffer(Double.self)[i] = 1
        case .int64, .bool: break  // unreachable: differentiated values are floating point (checked on entry)
        }
        return e
    }

    /// Writes v's elements into row `row` of `out` read as a rows x columns matrix.
    private static func place(_ v: Tensor, into out: Tensor, row: Int, rows: Int, columns: Int) throws {
        guard v.count == columns && row < rows, columns > 0, let dst = out.storage.raw else { return }
        try v.copyValues(to: dst + row * columns * out.dtype.size, capacity: columns, dtype: out.dtype)
    }

    /// Writes v's elements into column `column` of `out` read as a rows x columns matrix.
    private static func place(_ v: Tensor, into out: Tensor, column: Int, rows: Int, columns: Int) throws {
        guard v.count == rows && column < columns else { return }
        let src = try v.converted(to: out.dtype)
        func fill<T: TensorElement>(_ type: T.Type) {
            let s = src.buffer(type), o = out.buffer(type)
            for r in 0..<rows { o[r * columns + column] = s[r] }
        }
        switch out.dtype {
        case .float32: fill(Float.self)
        case .float64: fill(Double.self)
        case .int64, .bool: break  // unreachable: differentiated values are floating point (checked on entry)
        }
    }
}

extension Tensor {
    /// A new tensor object for the same value: same values, and the same place in the graph (a
    /// result keeps its node; a leaf that requires grad is a stand-in sharing its anchor, so
    /// gradients still reach it). What a transform hands its function in place of a primal.
    func alias() -> Tensor {
        if let fn = gradFn {
            let t = Tensor(shape: shape, storage: storage)
            t.gradFn = fn
            t.requiresGrad = true
            return t
        }
        if requiresGrad { return Tensor(standingInFor: anchor) }
        return detach()
    }
}
