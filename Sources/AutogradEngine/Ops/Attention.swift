import CKernels

/// scaled_dot_product_attention (torch.nn.functional's), composed of differentiable ops and a
/// safe softmax primitive.
extension Tensor {
    /// softmax(q kᵀ · scale + mask) v for q (..., L, E), k (..., S, E), v (..., S, Ev), the
    /// batch axes broadcasting (torch.nn.functional.scaled_dot_product_attention). `mask` is
    /// additive, float, of q's dtype, broadcasting to (..., L, S); `isCausal` masks the upper
    /// triangle (key j > query i) with -inf, aligned top-left as torch (not with a mask). `scale`
    /// 0 means 1/sqrt(E). A fully masked row (every score -inf) gives zeros and zero gradients,
    /// as torch 2.5+ (its "safe softmax"; a plain softmax would give nan).
    ///
    /// A composition rather than one fused op: q·scale, one batched GEMM against kᵀ (no copy of
    /// kᵀ when q and k share their batch axes), the mask added, a softmax over the keys (one
    /// primitive with row kernels, which gives the fully masked rows their zeros) and a GEMM
    /// with v. Measured (release build, float32, batch 32, 4 heads, L = S = E = 16, forward +
    /// backward of sum(sdpa), best of 300, in C through ag_scaled_dot_product_attention, on the
    /// 2-core build machine, issue 18): 381 us at 1 thread (367 us causal); with the softmax
    /// written out of eight differentiable ops it was 417 us (520 us causal). The two GEMMs
    /// alone (transpose, matmul, matmul, their backward) take 181 us, a floor for a fused op;
    /// PyTorch 2.13 eager F.scaled_dot_product_attention takes 428 us (436 us causal) at 1
    /// thread on the same machine.
    package static func scaledDotProductAttention(query q: Tensor, key k: Tensor, value v: Tensor, mask: Tensor? = nil,
                                                 isCausal: Bool = false, scale: Double = 0) throws -> Tensor {
        let op = "scaled_dot_product_attention"
        try q.requireFloatingPoint(op, "query")
        try k.requireFloatingPoint(op, "key")
        try v.requireFloatingPoint(op, "value")
        if let mask { try mask.requireFloatingPoint(op, "attn_mask") }
        for (name, t) in [("key", k), ("value", v), ("attn_mask", mask)] {
            if let t, t.dtype != q.dtype {
                throw AutogradError.dtype("\(op): \(name) is \(t.dtype) but query is \(q.dtype)")
            }
        }
        for (name, t) in [("query", q), ("key", k), ("value", v)] where t.rank < 2 {
            throw AutogradError.shape("\(op): \(name) must have rank >= 2 (..., length, features), got shape \(t.shape)")
        }
        let (l, e) = (q.shape[q.rank - 2], q.shape[q.rank - 1])
        let (s, ek) = (k.shape[k.rank - 2], k.shape[k.rank - 1])
        guard ek == e else {
            throw AutogradError.shape("\(op): query \(q.shape) and key \(k.shape) have different feature extents (\(e) and \(ek))")
        }
        guard v.shape[v.rank - 2] == s else {
            throw AutogradError.shape("\(op): key \(k.shape) and value \(v.shape) have different lengths (\(s) and \(v.shape[v.rank - 2]))")
        }
        let batch: [Int]
        do {
            batch = try Shape.broadcast(Shape.broadcast(Array(q.shape.dropLast(2)), Array(k.shape.dropLast(2))), Array(v.shape.dropLast(2)))
        } catch let error as AutogradError {
            throw AutogradError.shape("\(op): the batch axes of query \(q.shape), key \(k.shape) and value \(v.shape) do not broadcast (\(error.message))")
        }
        let scoreShape = batch + [l, s]
        if let mask {
            let fits = (try? Shape.broadcast(mask.shape, scoreShape)) == scoreShape
            guard fits else {
                throw AutogradError.shape("\(op): attn_mask of shape \(mask.shape) does not broadcast to the scores' shape \(scoreShape)")
            }
            guard !isCausal else {
                throw AutogradError.argument("\(op): attn_mask and is_causal cannot both be set (as torch)")
            }
        }
        guard scale.isFinite else { throw AutogradError.argument("\(op): scale must be finite (0: 1/sqrt(E)), got \(scale)") }
        _ = try Shape.count(scoreShape)

        let factor = scale != 0 ? scale : 1 / Double(e).squareRoot()
        let scaled = try q.multiplying(q.constant(factor))
        var scores: Tensor
        let qBatch = Array(q.shape.dropLast(2))
        if qBatch == Array(k.shape.dropLast(2)) && q.count > 0 && k.count > 0 {
            // One batched GEMM with k transposed in place (no kᵀ copy).
            let b = qBatch.reduce(1, *)
            scores = try Tensor.gemm(scaled.reshaped([b, l, e]), transA: false, k.reshaped([b, s, e]), transB: true).reshaped(qBatch + [l, s])
        } else {
            scores = try scaled.matmul(k.transposed(-2, -1))
        }
        // (No mask for empty scores: a batch of 0 allows any L·S, which the mask would allocate.)
        if isCausal && scores.count > 0 { scores = try scores.adding(causalMask(l, s, dtype: q.dtype)) }
        if let mask { scores = try scores.adding(mask) }
        if s == 0 { return try scores.matmul(v) }  // no keys: zeros (an empty sum), as torch
        return try safeSoftmaxOverLastAxis(scores).matmul(v)
    }

    /// (L, S): 0 where key j <= query i, -inf above (torch's is_causal, aligned top-left).
    private static func causalMask(_ l: Int, _ s: Int, dtype: DType) throws -> Tensor {
        var values = [Double](repeating: 0, count: l * s)
        for i in 0..<l { for j in 0..<s where j > i { values[i * s + j] = -.infinity } }
        return try Tensor(values, shape: [l, s], dtype: dtype)
    }

    /// softmax over the last axis, with rows of only -inf giving 0 (not nan) and a zero
    /// gradient: one primitive with row kernels (agk_safe_softmax), whose VJP from the output y
    /// is y (g - sum(g y)) (`safeSoftmaxBackward`, stated there over differentiable ops too).
    static func safeSoftmaxOverLastAxis(_ x: Tensor) throws -> Tensor {
        guard x.count > 0 else { return try safeSoftmaxComposite(x) }
        let width = x.shape[x.rank - 1], rows = x.count / width
        let out = try Tensor(uninitialized: x.shape, dtype: x.dtype)
        runSafeSoftmax(x.dtype, x.storage.raw, out.storage.raw, rows, width)
        if shouldRecord(x) {
            out.record("safe_softmax", x, savesInput: true, savesOutput: true) { g, node in
                InputGradients(try safeSoftmaxBackward(g, x: node.saved(0), y: node.output()))
            }
        }
        if Trace.isRecording {
            let dtype = x.dtype
            Trace.note(out, "safe_softmax", [x], kernel: .buffers { args, o in runSafeSoftmax(dtype, args[0], o, rows, width) }) { ins in
                try safeSoftmaxOverLastAxis(ins[0])
            }
        }
        // JVP: dy = y (t - sum(t y)).
        try out.deriveTangent(from: x) { t in
            try out.multiplying(t.subtracting(t.multiplying(out).sum(axes: [x.rank - 1], keepDims: true)))
        }
        return out
    }

    /// The VJP of safeSoftmaxOverLastAxis at x (output y) for the gradient g: y (g - sum(g y))
    /// over the last axis. Stated over differentiable ops (y recomputed from x with its
    /// history), which run when this gradient is itself differentiated (create_graph, forward
    /// mode); otherwise the agk_safe_softmax_backward kernel computes it from y.
    static func safeSoftmaxBackward(_ g: Tensor, x: Tensor, y: Tensor) throws -> Tensor {
        let axis = x.rank - 1
        if backwardNeedsRule(g, x) {
            let yh = try safeSoftmaxOverLastAxis(x)
            return try yh.multiplying(g.subtracting(g.multiplying(yh).sum(axes: [axis], keepDims: true)))
        }
        return try safeSoftmaxBackwardKernel(g, y: y)
    }

    /// y (g - sum(g y)) by the kernel, recorded for a capture (not for differentiation: see
    /// safeSoftmaxBackward).
    private static func safeSoftmaxBackwardKernel(_ g: Tensor, y: Tensor) throws -> Tensor {
        let width = y.shape[y.rank - 1], rows = y.count / width
        let out = try Tensor(uninitialized: y.shape, dtype: y.dtype)
        runSafeSoftmaxBackward(y.dtype, g.storage.raw, y.storage.raw, out.storage.raw, rows, width)
        if Trace.isRecording {
            let dtype = y.dtype
            Trace.note(out, "safe_softmax_backward", [g, y], kernel: .buffers { args, o in
                runSafeSoftmaxBackward(dtype, args[0], args[1], o, rows, width)
            }) { ins in try safeSoftmaxBackwardKernel(ins[0], y: ins[1]) }
        }
        return out
    }

    private static func runSafeSoftmax(_ dtype: DType, _ x: UnsafeMutableRawPointer?, _ y: UnsafeMutableRawPointer?, _ rows: Int, _ width: Int) {
        guard rows > 0 && width > 0, let x, let y else { return }
        if dtype == .float32 {
            agk_safe_softmax_f32(x.assumingMemoryBound(to: Float.self), y.assumingMemoryBound(to: Float.self), Int64(rows), Int64(width))
        } else {
            agk_safe_softmax_f64(x.assumingMemoryBound(to: Double.self), y.assumingMemoryBound(to: Double.self), Int64(rows), Int64(width))
        }
    }

    private static func runSafeSoftmaxBackward(_ dtype: DType, _ g: UnsafeMutableRawPointer?, _ y: UnsafeMutableRawPointer?,
                                               _ out: UnsafeMutableRawPointer?, _ rows: Int, _ width: Int) {
        guard rows > 0 && width > 0, let g, let y, let out else { return }
        if dtype == .float32 {
            agk_safe_softmax_backward_f32(g.assumingMemoryBound(to: Float.self), y.assumingMemoryBound(to: Float.self),
                                          out.assumingMemoryBound(to: Float.self), Int64(rows), Int64(width))
        } else {
            agk_safe_softmax_backward_f64(g.assumingMemoryBound(to: Double.self), y.assumingMemoryBound(to: Double.self),
                                          out.assumingMemoryBound(to: Double.self), Int64(rows), Int64(width))
        }
    }

    /// The same softmax composed of differentiable ops (used for empty inputs): the shift (the
    /// row max, or 0 on rows of only -inf) is a constant; the row sum is replaced by 1 on such
    /// rows (selected), where every exp is 0, so no 0/0 is formed in the value or in any
    /// derivative.
    static func safeSoftmaxComposite(_ x: Tensor) throws -> Tensor {
        let axis = x.rank - 1
        let (shift, dead) = try withNoGrad { () -> (Tensor, Tensor) in
            let m = try x.detach().max(axes: [axis], keepDims: true)
            let dead = try m.eq(x.constant(-.infinity))
            return (try Tensor.where(dead, x.constant(0), m), dead)
        }
        let e = try x.subtracting(shift).exp()
        let sums = try e.sum(axes: [axis], keepDims: true)
        return try e.dividing(by: Tensor.where(dead, x.constant(1), sums))
    }
}
