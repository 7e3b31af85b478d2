/// scaled_dot_product_attention (torch.nn.functional's), composed of differentiable ops.
extension Tensor {
    /// softmax(q kᵀ · scale + mask) v for q (..., L, E), k (..., S, E), v (..., S, Ev), the
    /// batch axes broadcasting (torch.nn.functional.scaled_dot_product_attention). `mask` is
    /// additive, float, of q's dtype, broadcasting to (..., L, S); `isCausal` masks the upper
    /// triangle (key j > query i) with -inf, aligned top-left as torch (not with a mask). `scale`
    /// 0 means 1/sqrt(E). A fully masked row (every score -inf) gives zeros and zero gradients,
    /// as torch 2.5+ (its "safe softmax"; a plain softmax would give nan).
    ///
    /// A composition rather than one fused op: q·scale, one batched GEMM against kᵀ (no copy of
    /// kᵀ when q and k share their batch axes), the mask added, a softmax over the keys written
    /// out here (max, sub, exp, sum, div, plus two selects on the (..., L, 1) row sums for the
    /// fully masked rows) and a GEMM with v. Every part is an existing differentiable op, so
    /// accuracy is theirs (softmax from x - max, sums accumulated in double for float32).
    /// Measured roughly (release build, float32, batch 32, 4 heads, L = S = E = 16, forward +
    /// backward of sum(sdpa), best of 300, in C through ag_scaled_dot_product_attention, on the
    /// 2-core build machine): 420 us at 1 thread (502 us causal), 433 us at 2 threads; the two
    /// GEMMs alone (transpose, matmul, matmul, their backward) take 181 us, a floor for a fused
    /// op, which could save up to about half; PyTorch 2.13 eager F.scaled_dot_product_attention
    /// takes 428 us (436 us causal) at 1 thread on the same machine. A fused op needs its own
    /// backward kernel and a differentiable rule for create_graph and forward mode; it is left
    /// for when B9 shows attention to matter.
    public static func scaledDotProductAttention(query q: Tensor, key k: Tensor, value v: Tensor, mask: Tensor? = nil,
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

    /// softmax over the last axis (extent > 0), with rows of only -inf giving 0 (not nan) and a
    /// zero gradient. The shift (the row max, or 0 on such rows) is a constant; the row sum is
    /// replaced by 1 on such rows (selected), where every exp is 0, so no 0/0 is formed in the
    /// value or in any derivative.
    static func safeSoftmaxOverLastAxis(_ x: Tensor) throws -> Tensor {
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
