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
    /// an output that does not depend on the primals has a zero tangent.
    public static func jvp(_ f: ([Tensor]) throws -> [Tensor], primals: [Tensor], tangents: [Tensor]) throws
        -> (outputs: [Tensor], tangents: [Tensor]) {
        guard primals.count == tangents.count else {
            throw AutogradError.argument("jvp: \(tangents.count) tangents for \(primals.count) primals")
        }
        for (k, (p, t)) in zip(primals, tangents).enumerated() {
            guard t.dtype == p.dtype else {
                throw AutogradError.dtype("jvp: tangent \(k) is \(t.dtype) but its primal is \(p.dtype)")
            }
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
            let outTangents = try outputs.map { y in try ForwardMode.tangent(of: y) ?? Tensor.zeros(y.shape, dtype: y.dtype) }
            return (outputs, outTangents)
        }
    }

    /// f(primals) and the gradients of Σₖ⟨outputs[k], cotangents[k]⟩ with respect to each
    /// primal (zeros for a primal the outputs do not depend on). With `createGraph` the
    /// gradients are recorded (differentiable again).
    public static func vjp(_ f: ([Tensor]) throws -> [Tensor], primals: [Tensor], cotangents: [Tensor],
                           createGraph: Bool = false) throws -> (outputs: [Tensor], gradients: [Tensor]) {
        let inputs = try primals.map { p -> Tensor in
            if p.requiresGrad { return p }
            let x = p.detach()
            try x.setRequiresGrad(true)
            return x
        }
        let outputs = try GradMode.with(enabled: true) { try f(inputs) }
        guard outputs.count == cotangents.count else {
            throw AutogradError.argument("vjp: \(cotangents.count) cotangents for \(outputs.count) outputs")
        }
        for (k, (y, c)) in zip(outputs, cotangents).enumerated() {
            guard c.dtype == y.dtype else { throw AutogradError.dtype("vjp: cotangent \(k) is \(c.dtype) but output \(k) is \(y.dtype)") }
            guard c.shape == y.shape else { throw AutogradError.shape("vjp: cotangent \(k) has shape \(c.shape) but output \(k) has shape \(y.shape)") }
        }
        // Outputs that do not depend on the inputs add nothing.
        let live = outputs.indices.filter { outputs[$0].requiresGrad }
        var grads = [Tensor?](repeating: nil, count: inputs.count)
        if !live.isEmpty {
            grads = try Tensor.gradients(of: live.map { outputs[$0] }, withRespectTo: inputs, seeds: live.map { cotangents[$0] },
                                         retainGraph: createGraph, createGraph: createGraph, allowUnused: true)
        }
        let gradients = try zip(inputs, grads).map { x, g in try g ?? Tensor.zeros(x.shape, dtype: x.dtype) }
        return (outputs, gradients)
    }

    /// The Jacobian of f at x, of shape f(x).shape + x.shape (an empty shape for a scalar).
    public static func jacobian(_ f: (Tensor) throws -> Tensor, at x: Tensor, mode: JacobianMode = .reverse) throws -> Tensor {
        switch mode {
        case .reverse:
            let input = try freshLeaf(x)
            let y = try GradMode.with(enabled: true) { try f(input) }
            var rows: [Tensor] = []
            rows.reserveCapacity(y.count)
            for i in 0..<y.count {
                guard y.requiresGrad else { rows.append(try Tensor.zeros([x.count], dtype: y.dtype)); continue }
                let seed = try basis(i, shape: y.shape, dtype: y.dtype)
                let g = try Tensor.gradients(of: [y], withRespectTo: [input], seeds: [seed], retainGraph: true, allowUnused: true)[0]
                rows.append(try (g ?? Tensor.zeros(x.shape, dtype: x.dtype)).reshaped([x.count]))
            }
            let y0 = y
            return try assemble(rows, rows: y0.count, columns: x.count, transpose: false, shape: y0.shape + x.shape, dtype: y0.dtype)
        case .forward:
            var columns: [Tensor] = []
            var outShape: [Int] = []
            var outDType = x.dtype
            for j in 0..<x.count {
                let (outs, tans) = try jvp({ try [f($0[0])] }, primals: [x], tangents: [basis(j, shape: x.shape, dtype: x.dtype)])
                outShape = outs[0].shape
                outDType = outs[0].dtype
                columns.append(try tans[0].detach().reshaped([outs[0].count]))
            }
            if x.count == 0 { let y = try withNoGrad { try f(x) }; outShape = y.shape; outDType = y.dtype }
            let m = try Shape.count(outShape)
            return try assemble(columns, rows: m, columns: x.count, transpose: true, shape: outShape + x.shape, dtype: outDType)
        }
    }

    /// The Hessian-vector product H(x)·v of a scalar f, by forward over reverse: the tangent of
    /// f's gradient along v, in one pass (no Hessian is formed).
    public static func hvp(_ f: (Tensor) throws -> Tensor, at x: Tensor, vector v: Tensor) throws -> Tensor {
        guard v.dtype == x.dtype else { throw AutogradError.dtype("hvp: v is \(v.dtype) but x is \(x.dtype)") }
        guard v.shape == x.shape else { throw AutogradError.shape("hvp: v has shape \(v.shape) but x has shape \(x.shape)") }
        return try ForwardMode.run { level in
            let input = try freshLeaf(x)
            input.tangentBox = Tangent(level: level, value: v.detach())
            let y = try GradMode.with(enabled: true) { try f(input) }
            guard y.count == 1 else { throw AutogradError.shape("hvp: the function must return one element, it returned shape \(y.shape)") }
            guard y.requiresGrad else { return try Tensor.zeros(x.shape, dtype: x.dtype) }
            let g = try GradMode.with(enabled: true) {
                try Tensor.gradients(of: [y], withRespectTo: [input], createGraph: true, allowUnused: true)[0]
            }
            guard let g, let t = ForwardMode.tangent(of: g) else { return try Tensor.zeros(x.shape, dtype: x.dtype) }
            return t.detach()
        }
    }

    /// The Hessian of a scalar f at x, of shape x.shape + x.shape: one forward-over-reverse
    /// product per input element.
    public static func hessian(_ f: (Tensor) throws -> Tensor, at x: Tensor) throws -> Tensor {
        var columns: [Tensor] = []
        for j in 0..<x.count {
            columns.append(try hvp(f, at: x, vector: basis(j, shape: x.shape, dtype: x.dtype)).reshaped([x.count]))
        }
        return try assemble(columns, rows: x.count, columns: x.count, transpose: true, shape: x.shape + x.shape, dtype: x.dtype)
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
        }
        return e
    }

    /// A rows x columns matrix from flat vectors (each a row, or each a column when
    /// `transpose`), reshaped to `shape`; no history.
    private static func assemble(_ vectors: [Tensor], rows: Int, columns: Int, transpose: Bool, shape: [Int], dtype: DType) throws -> Tensor {
        let out = try Tensor.zeros(shape, dtype: dtype)
        func fill<T: TensorElement>(_ type: T.Type) {
            let o = out.buffer(type)
            for (k, v) in vectors.enumerated() {
                let src = v.buffer(type)
                for e in 0..<src.count {
                    let (r, c) = transpose ? (e, k) : (k, e)
                    if r < rows && c < columns { o[r * columns + c] = src[e] }
                }
            }
        }
        switch dtype {
        case .float32: fill(Float.self)
        case .float64: fill(Double.self)
        }
        return out
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
