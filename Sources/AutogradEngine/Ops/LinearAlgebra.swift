/// matmul (NumPy rules, batched), dot, outer, linear on OpenBLAS: forward and derivative rules.
extension Tensor {
    /// NumPy's matmul: 1-D·1-D inner product, 2-D products, and stacks of matrices whose batch
    /// axes broadcast; a 1-D left operand is a row, a 1-D right operand a column.
    package func matmul(_ other: Tensor) throws -> Tensor {
        guard dtype == other.dtype else {
            throw AutogradError.dtype("matmul: operands have different dtypes (\(dtype) and \(other.dtype))")
        }
        try requireFloatingPoint("matmul", "its operand")
        guard rank >= 1 && other.rank >= 1 else {
            throw AutogradError.shape("matmul: 0-d operands are not allowed (shapes \(shape) and \(other.shape))")
        }
        let a = rank == 1 ? try reshaped([1, shape[0]]) : self
        let b = other.rank == 1 ? try other.reshaped([other.shape[0], 1]) : other
        let (m, k) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (k2, n) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        guard k == k2 else {
            throw AutogradError.shape("matmul: inner extents differ: \(shape) @ \(other.shape)")
        }
        var result: Tensor
        if a.rank == 2 && b.rank == 2 {
            result = try Tensor.gemm(a, transA: false, b, transB: false)
        } else {
            let batch: [Int]
            do { batch = try Shape.broadcast(Array(a.shape.dropLast(2)), Array(b.shape.dropLast(2))) } catch let e as AutogradError {
                throw AutogradError.shape("matmul: batch axes: \(e.message)")
            }
            let count = try Shape.count(batch)
            if try Shape.count(batch + [m, n]) == 0 {
                result = try Tensor.emptyProduct(a, b, shape: batch + [m, n])
            } else {
                let a3 = try a.expanded(to: batch + [m, k]).reshaped([count, m, k])
                let b3 = try b.expanded(to: batch + [k, n]).reshaped([count, k, n])
                result = try Tensor.gemm(a3, transA: false, b3, transB: false).reshaped(batch + [m, n])
            }
        }
        if rank == 1 || other.rank == 1 {
            var s = result.shape
            if other.rank == 1 { s.removeLast() }
            if rank == 1 { s.remove(at: s.count - 1 - (other.rank == 1 ? 0 : 1)) }
            result = try result.reshaped(s)
        }
        return result
    }

    /// The product of a and b when it has no element (a batch, m or n of 0): an empty tensor of
    /// `shape`, made without broadcasting either operand to the batch axes (for [2^40, 0, 3] @
    /// [1, 3, 4] that copy alone would be 2^40 * 12 elements). Nothing depends on an empty
    /// result, so each operand's gradient is zeros of its own shape.
    static func emptyProduct(_ a: Tensor, _ b: Tensor, shape: [Int]) throws -> Tensor {
        let out = try Tensor(uninitialized: shape, dtype: a.dtype)
        if shouldRecord(a, b) {
            let shapeA = a.shape, shapeB = b.shape, dtype = a.dtype
            out.record("matmul", a, b) { _, node in
                InputGradients(node.needsGrad(0) ? try zeros(shapeA, dtype: dtype) : nil,
                               node.needsGrad(1) ? try zeros(shapeB, dtype: dtype) : nil)
            }
        }
        if Trace.isRecording { Trace.note(out, "matmul", [a, b]) { ins in try emptyProduct(ins[0], ins[1], shape: shape) } }
        try out.deriveTangent(from: a, b) { _, _ in try zeros(shape, dtype: a.dtype) }
        return out
    }

    /// op(a) @ op(b) for matrices (rank 2) or equal-length stacks of them (rank 3), op
    /// transposing the last two axes when asked: the differentiable primitive behind matmul,
    /// so backward needs no transposed copies.
    static func gemm(_ a: Tensor, transA: Bool, _ b: Tensor, transB: Bool) throws -> Tensor {
        try a.requireFloatingPoint("matmul", "its operand")
        let r = a.rank
        guard r == b.rank && (r == 2 || r == 3) && (r == 2 || a.shape[0] == b.shape[0]) else {
            throw AutogradError.internal("gemm: unsupported operand shapes \(a.shape), \(b.shape)")
        }
        let batch = r == 3 ? a.shape[0] : 1
        let (m, k) = transA ? (a.shape[r - 1], a.shape[r - 2]) : (a.shape[r - 2], a.shape[r - 1])
        let (k2, n) = transB ? (b.shape[r - 1], b.shape[r - 2]) : (b.shape[r - 2], b.shape[r - 1])
        guard k == k2 else {
            throw AutogradError.shape("matmul: inner extents differ: \(a.shape)\(transA ? "ᵀ" : "") @ \(b.shape)\(transB ? "ᵀ" : "")")
        }
        let limit = Int(Int32.max)
        guard m <= limit && n <= limit && k <= limit else {
            throw AutogradError.shape("matmul: extents above \(limit) are not supported by BLAS")
        }
        let out = try Tensor(uninitialized: r == 3 ? [batch, m, n] : [m, n], dtype: a.dtype)
        if out.count > 0 {
            if k == 0 {
                out.storage.raw!.initializeMemory(as: UInt8.self, repeating: 0, count: out.count * a.dtype.size)
            } else {
                switch a.dtype {
                case .float32: Gemm.multiply(a.buffer(Float.self).baseAddress!, transA: transA, b.buffer(Float.self).baseAddress!, transB: transB, into: out.buffer(Float.self).baseAddress!, m: m, n: n, k: k, batch: batch)
                case .float64: Gemm.multiply(a.buffer(Double.self).baseAddress!, transA: transA, b.buffer(Double.self).baseAddress!, transB: transB, into: out.buffer(Double.self).baseAddress!, m: m, n: n, k: k, batch: batch)
                case .int64, .bool: break  // unreachable: only floating-point operands get here
                }
            }
        }
        if shouldRecord(a, b) {
            out.record("matmul", a, b, savesInputs: true) { g, node in
                let (ga, gb) = try productGradients(g, node.saved(0), transA: transA, node.saved(1), transB: transB,
                                                    needs: (node.needsGrad(0), node.needsGrad(1)))
                return InputGradients(ga, gb)
            }
        }
        if Trace.isRecording {
            let dtype = a.dtype, size = out.count * a.dtype.size
            Trace.note(out, "matmul", [a, b], kernel: .buffers { args, o in
                if size == 0 { return }
                if k == 0 { o.initializeMemory(as: UInt8.self, repeating: 0, count: size); return }
                switch dtype {
                case .float32: Gemm.multiply(args[0].assumingMemoryBound(to: Float.self), transA: transA, args[1].assumingMemoryBound(to: Float.self), transB: transB, into: o.assumingMemoryBound(to: Float.self), m: m, n: n, k: k, batch: batch)
                case .float64: Gemm.multiply(args[0].assumingMemoryBound(to: Double.self), transA: transA, args[1].assumingMemoryBound(to: Double.self), transB: transB, into: o.assumingMemoryBound(to: Double.self), m: m, n: n, k: k, batch: batch)
                case .int64, .bool: break  // unreachable: only floating-point operands get here
                }
            }) { ins in try gemm(ins[0], transA: transA, ins[1], transB: transB) }
        }
        try out.deriveTangent(from: a, b) { ta, tb in
            try out.tangentSum(productTangents(ta, a, transA: transA, tb, b, transB: transB))
        }
        return out
    }

    /// The derivative of C = op(A) op(B), stated once (gemm and linear use it), as its VJP:
    /// d op(A) = G op(B)ᵀ, d op(B) = op(A)ᵀ G, transposed back when the operand itself was used
    /// transposed.
    static func productGradients(_ g: Tensor, _ a: Tensor, transA: Bool, _ b: Tensor, transB: Bool,
                                 needs: (Bool, Bool)) throws -> (Tensor?, Tensor?) {
        var ga: Tensor? = nil, gb: Tensor? = nil
        if needs.0 {
            ga = transA ? try gemm(b, transA: transB, g, transB: true) : try gemm(g, transA: false, b, transB: !transB)
        }
        if needs.1 {
            gb = transB ? try gemm(g, transA: true, a, transB: transA) : try gemm(a, transA: !transA, g, transB: false)
        }
        return (ga, gb)
    }

    /// ... and as its JVP: d(op(A) op(B)) = op(dA) op(B) + op(A) op(dB) (nil: no tangent).
    static func productTangents(_ ta: Tensor?, _ a: Tensor, transA: Bool, _ tb: Tensor?, _ b: Tensor, transB: Bool) throws -> [Tensor?] {
        [try ta.map { try gemm($0, transA: transA, b, transB: transB) },
         try tb.map { try gemm(a, transA: transA, $0, transB: transB) }]
    }

    /// The inner product of two 1-D tensors of equal length (a 0-d tensor).
    package func dot(_ other: Tensor) throws -> Tensor {
        guard rank == 1 && other.rank == 1 && shape == other.shape else {
            throw AutogradError.shape("dot: needs two 1-D tensors of equal length, got \(shape) and \(other.shape)")
        }
        return try matmul(other)
    }

    /// The outer product of two 1-D tensors: (m) x (n) -> (m, n).
    package func outer(_ other: Tensor) throws -> Tensor {
        guard rank == 1 && other.rank == 1 else {
            throw AutogradError.shape("outer: needs two 1-D tensors, got \(shape) and \(other.shape)")
        }
        return try reshaped([shape[0], 1]).multiplying(other.reshaped([1, other.shape[0]]))
    }

    /// PyTorch's linear: self (..., in) @ weightᵀ + bias, weight (out, in), bias (out) or nil.
    package func linear(weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        guard rank >= 1, weight.rank == 2, weight.shape[1] == shape[rank - 1] else {
            throw AutogradError.shape("linear: input \(shape) does not fit weight \(weight.shape) (want input (..., in) and weight (out, in))")
        }
        guard dtype == weight.dtype else {
            throw AutogradError.dtype("linear: input is \(dtype), weight is \(weight.dtype)")
        }
        try requireFloatingPoint("linear")
        if let bias, bias.shape != [weight.shape[0]] {
            throw AutogradError.shape("linear: bias has shape \(bias.shape), want [\(weight.shape[0])]")
        }
        let x2 = try reshaped([Array(shape.dropLast()).reduce(1, *), shape[rank - 1]])
        let y = try bias.map { try Tensor.affine(x2, weight, $0) } ?? Tensor.gemm(x2, transA: false, weight, transB: true)
        return try y.reshaped(Array(shape.dropLast()) + [weight.shape[0]])
    }

    /// x @ wᵀ + b for x (n, in), w (out, in), b (out) in one BLAS call (C starts as b in every
    /// row, and the product is added to it): PyTorch's addmm, the forward of linear.
    static func affine(_ x: Tensor, _ w: Tensor, _ b: Tensor) throws -> Tensor {
        guard b.dtype == x.dtype else {
            throw AutogradError.dtype("linear: input is \(x.dtype), bias is \(b.dtype)")
        }
        let (m, k, n) = (x.shape[0], x.shape[1], w.shape[0])
        let limit = Int(Int32.max)
        guard m <= limit && n <= limit && k <= limit else {
            throw AutogradError.shape("matmul: extents above \(limit) are not supported by BLAS")
        }
        let out = try Tensor(uninitialized: [m, n], dtype: x.dtype)
        if out.count > 0 {
            switch x.dtype {
            case .float32: affineKernel(x.buffer(Float.self), w.buffer(Float.self), b.buffer(Float.self), out.buffer(Float.self), m: m, n: n, k: k)
            case .float64: affineKernel(x.buffer(Double.self), w.buffer(Double.self), b.buffer(Double.self), out.buffer(Double.self), m: m, n: n, k: k)
            case .int64, .bool: break  // unreachable: only floating-point operands get here
            }
        }
        if shouldRecord([x, w, b]) {
            // x wᵀ + b: the product's derivative, and the bias's (summed over the rows).
            out.record("linear", inputs: [x, w, b], saved: [x, w]) { g, node in
                let (gx, gw) = try productGradients(g, node.saved(0), transA: false, node.saved(1), transB: true,
                                                    needs: (node.needsGrad(0), node.needsGrad(1)))
                return [gx, gw, node.needsGrad(2) ? try g.sum(axes: [0]) : nil]
            }
        }
        if Trace.isRecording {
            let dtype = x.dtype
            Trace.note(out, "linear", [x, w, b], kernel: .buffers { args, o in
                switch dtype {
                case .float32: affineKernel(elements(args[0], Float.self, [m, k]), elements(args[1], Float.self, [n, k]), elements(args[2], Float.self, [n]), elements(o, Float.self, [m, n]), m: m, n: n, k: k)
                case .float64: affineKernel(elements(args[0], Double.self, [m, k]), elements(args[1], Double.self, [n, k]), elements(args[2], Double.self, [n]), elements(o, Double.self, [m, n]), m: m, n: n, k: k)
                case .int64, .bool: break  // unreachable: only floating-point operands get here
                }
            }) { ins in try affine(ins[0], ins[1], ins[2]) }
        }
        try out.deriveTangent(from: [x, w, b]) { ts in
            try out.tangentSum(productTangents(ts[0], x, transA: false, ts[1], w, transB: true) + [ts[2]])
        }
        return out
    }

    private static func affineKernel<T: TensorElement>(_ x: UnsafeMutableBufferPointer<T>, _ w: UnsafeMutableBufferPointer<T>,
                                                       _ b: UnsafeMutableBufferPointer<T>, _ out: UnsafeMutableBufferPointer<T>,
                                                       m: Int, n: Int, k: Int) {
        guard let o = out.baseAddress, let bp = b.baseAddress else { return }
        for i in 0..<m { (o + i * n).update(from: bp, count: n) }
        guard k > 0, let xp = x.baseAddress, let wp = w.baseAddress else { return }
        Gemm.multiply(xp, transA: false, wp, transB: true, into: o, m: m, n: n, k: k, accumulate: true)
    }
}
