import AutogradEngine

// Operations (the header's section of that name): each checks its handles and arguments, runs the
// engine op, returns a new handle.

// MARK: - Arithmetic, exp, log, relu, sum, mean, matmul

@_cdecl("ag_add")
public func ag_add(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_add", out) { let (a, b) = try Arg.tensors(a, b); return try a.adding(b) }
}

@_cdecl("ag_sub")
public func ag_sub(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_sub", out) { let (a, b) = try Arg.tensors(a, b); return try a.subtracting(b) }
}

@_cdecl("ag_mul")
public func ag_mul(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_mul", out) { let (a, b) = try Arg.tensors(a, b); return try a.multiplying(b) }
}

@_cdecl("ag_div")
public func ag_div(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_div", out) { let (a, b) = try Arg.tensors(a, b); return try a.dividing(by: b) }
}

@_cdecl("ag_neg")
public func ag_neg(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_neg", out) { try Arg.tensor(a, "a").negated() }
}

@_cdecl("ag_exp")
public func ag_exp(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_exp", out) { try Arg.tensor(a, "a").exp() }
}

@_cdecl("ag_log")
public func ag_log(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_log", out) { try Arg.tensor(a, "a").log() }
}

@_cdecl("ag_log1p")
public func ag_log1p(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_log1p", out) { try Arg.tensor(a, "a").log1p() }
}

@_cdecl("ag_expm1")
public func ag_expm1(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_expm1", out) { try Arg.tensor(a, "a").expm1() }
}

@_cdecl("ag_erf")
public func ag_erf(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_erf", out) { try Arg.tensor(a, "a").erf() }
}

@_cdecl("ag_relu")
public func ag_relu(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_relu", out) { try Arg.tensor(a, "a").relu() }
}

@_cdecl("ag_sum")
public func ag_sum(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_sum", out) { try Arg.tensor(a, "a").sum(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_mean")
public func ag_mean(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_mean", out) { try Arg.tensor(a, "a").mean(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_matmul")
public func ag_matmul(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_matmul", out) { let (a, b) = try Arg.tensors(a, b); return try a.matmul(b) }
}

// MARK: - Binary and scalar forms

@_cdecl("ag_pow")
public func ag_pow(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_pow", out) { try Arg.tensor(a, "a").pow(Arg.tensor(b, "b")) }
}

@_cdecl("ag_maximum")
public func ag_maximum(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_maximum", out) { try Arg.tensor(a, "a").maximum(Arg.tensor(b, "b")) }
}

@_cdecl("ag_minimum")
public func ag_minimum(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_minimum", out) { try Arg.tensor(a, "a").minimum(Arg.tensor(b, "b")) }
}

@_cdecl("ag_atan2")
public func ag_atan2(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_atan2", out) { try Arg.tensor(a, "a").atan2(Arg.tensor(b, "b")) }
}

/// Runs a scalar form: `op(a, s)` with s as a 0-d constant of a's dtype.
private func scalarForm(_ name: StaticString, _ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double,
                        _ op: (Tensor, Tensor) throws -> Tensor) -> Int32 {
    produce(name, out) {
        let t = try Arg.tensor(a, "a")
        return try op(t, Tensor.full([], s, dtype: t.dtype))
    }
}

@_cdecl("ag_add_scalar")
public func ag_add_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_add_scalar", out, a, s) { try $0.adding($1) } }
@_cdecl("ag_sub_scalar")
public func ag_sub_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_sub_scalar", out, a, s) { try $0.subtracting($1) } }
@_cdecl("ag_rsub_scalar")
public func ag_rsub_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_rsub_scalar", out, a, s) { try $1.subtracting($0) } }
@_cdecl("ag_mul_scalar")
public func ag_mul_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_mul_scalar", out, a, s) { try $0.multiplying($1) } }
@_cdecl("ag_div_scalar")
public func ag_div_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_div_scalar", out, a, s) { try $0.dividing(by: $1) } }
@_cdecl("ag_rdiv_scalar")
public func ag_rdiv_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_rdiv_scalar", out, a, s) { try $1.dividing(by: $0) } }
@_cdecl("ag_pow_scalar")
public func ag_pow_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_pow_scalar", out, a, s) { try $0.pow($1) } }
@_cdecl("ag_rpow_scalar")
public func ag_rpow_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_rpow_scalar", out, a, s) { try $1.pow($0) } }
@_cdecl("ag_maximum_scalar")
public func ag_maximum_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_maximum_scalar", out, a, s) { try $0.maximum($1) } }
@_cdecl("ag_minimum_scalar")
public func ag_minimum_scalar(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ s: Double) -> Int32 { scalarForm("ag_minimum_scalar", out, a, s) { try $0.minimum($1) } }

// MARK: - Unary

@_cdecl("ag_sqrt")
public func ag_sqrt(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_sqrt", out) { try Arg.tensor(a, "a").sqrt() } }
@_cdecl("ag_abs")
public func ag_abs(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_abs", out) { try Arg.tensor(a, "a").abs() } }
@_cdecl("ag_sin")
public func ag_sin(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_sin", out) { try Arg.tensor(a, "a").sin() } }
@_cdecl("ag_cos")
public func ag_cos(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_cos", out) { try Arg.tensor(a, "a").cos() } }
@_cdecl("ag_tanh")
public func ag_tanh(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_tanh", out) { try Arg.tensor(a, "a").tanh() } }
@_cdecl("ag_sigmoid")
public func ag_sigmoid(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_sigmoid", out) { try Arg.tensor(a, "a").sigmoid() } }
@_cdecl("ag_gelu")
public func ag_gelu(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_gelu", out) { try Arg.tensor(a, "a").gelu() } }
@_cdecl("ag_softplus")
public func ag_softplus(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 { produce("ag_softplus", out) { try Arg.tensor(a, "a").softplus() } }

@_cdecl("ag_leaky_relu")
public func ag_leaky_relu(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ slope: Double) -> Int32 {
    produce("ag_leaky_relu", out) {
        guard slope.isFinite else { throw AutogradError.argument("leaky_relu: negative_slope must be finite, got \(slope)") }
        return try Arg.tensor(a, "a").leakyRelu(negativeSlope: slope)
    }
}

/// -inf and +inf stand for a missing bound (the same values and gradients as no bound).
@_cdecl("ag_clamp")
public func ag_clamp(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ min: Double, _ max: Double) -> Int32 {
    produce("ag_clamp", out) { try Arg.tensor(a, "a").clamp(min: min, max: max) }
}

// MARK: - Reductions

@_cdecl("ag_max")
public func ag_max(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_max", out) { try Arg.tensor(a, "a").max(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_min")
public func ag_min(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_min", out) { try Arg.tensor(a, "a").min(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_var")
public func ag_var(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64,
                   _ correction: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_var", out) {
        try Arg.tensor(a, "a").variance(axes: Arg.axes(axes, naxes), correction: Int(correction), keepDims: keepdims != 0)
    }
}

@_cdecl("ag_logsumexp")
public func ag_logsumexp(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_logsumexp", out) { try Arg.tensor(a, "a").logSumExp(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_cumsum")
public func ag_cumsum(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64) -> Int32 {
    produce("ag_cumsum", out) { try Arg.tensor(a, "a").cumsum(axis: Int(axis)) }
}

// MARK: - Shape

@_cdecl("ag_reshape")
public func ag_reshape(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ shape: UnsafePointer<Int64>?, _ ndim: Int64) -> Int32 {
    produce("ag_reshape", out) {
        let t = try Arg.tensor(a, "a")
        return try t.reshaped(Arg.shape(shape, ndim, inferringFrom: t.count))
    }
}

@_cdecl("ag_transpose")
public func ag_transpose(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ dim0: Int64, _ dim1: Int64) -> Int32 {
    produce("ag_transpose", out) { try Arg.tensor(a, "a").transposed(Int(dim0), Int(dim1)) }
}

@_cdecl("ag_permute")
public func ag_permute(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ perm: UnsafePointer<Int64>?, _ n: Int64) -> Int32 {
    produce("ag_permute", out) {
        let t = try Arg.tensor(a, "a")
        guard n == Int64(t.rank) else { throw AutogradError.argument("permute: \(n) axes given for a tensor of rank \(t.rank)") }
        return try t.permuted(Arg.axes(perm, n, "perm", count: "n"))
    }
}

@_cdecl("ag_expand")
public func ag_expand(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ shape: UnsafePointer<Int64>?, _ ndim: Int64) -> Int32 {
    produce("ag_expand", out) {
        let t = try Arg.tensor(a, "a")
        var target = try Arg.extents(shape, ndim)
        let lead = target.count - t.rank
        guard lead >= 0 else { throw AutogradError.shape("expand: cannot expand shape \(t.shape) to fewer axes \(target)") }
        for i in 0..<target.count where target[i] == -1 {
            guard i >= lead else { throw AutogradError.shape("expand: -1 is not allowed for the new leading axis \(i)") }
            target[i] = t.shape[i - lead]
        }
        _ = try Shape.count(target)
        return try t.expanded(to: target)
    }
}

@_cdecl("ag_squeeze")
public func ag_squeeze(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64) -> Int32 {
    produce("ag_squeeze", out) { try Arg.tensor(a, "a").squeezed(Arg.axes(axes, naxes)) }
}

@_cdecl("ag_unsqueeze")
public func ag_unsqueeze(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64) -> Int32 {
    produce("ag_unsqueeze", out) { try Arg.tensor(a, "a").unsqueezed(Int(axis)) }
}

@_cdecl("ag_concat")
public func ag_concat(_ out: UnsafeMutablePointer<UInt64>?, _ tensors: UnsafePointer<UInt64>?, _ n: Int64, _ axis: Int64) -> Int32 {
    produce("ag_concat", out) { try Tensor.concat(Arg.tensorList(tensors, n), axis: Int(axis)) }
}

@_cdecl("ag_stack")
public func ag_stack(_ out: UnsafeMutablePointer<UInt64>?, _ tensors: UnsafePointer<UInt64>?, _ n: Int64, _ axis: Int64) -> Int32 {
    produce("ag_stack", out) { try Tensor.stack(Arg.tensorList(tensors, n), axis: Int(axis)) }
}

@_cdecl("ag_slice")
public func ag_slice(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64, _ start: Int64, _ stop: Int64, _ step: Int64) -> Int32 {
    produce("ag_slice", out) { try Arg.tensor(a, "a").slice(axis: Int(axis), start: Int(start), stop: Int(stop), step: Int(step)) }
}

@_cdecl("ag_index_select")
public func ag_index_select(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64, _ indices: UnsafePointer<Int64>?, _ n: Int64) -> Int32 {
    produce("ag_index_select", out) {
        let t = try Arg.tensor(a, "a")
        return try t.indexSelect(axis: Int(axis), Arg.indices(indices, n, "indices"))
    }
}

@_cdecl("ag_gather")
public func ag_gather(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64, _ index: UnsafePointer<Int64>?,
                      _ indexShape: UnsafePointer<Int64>?, _ indexNdim: Int64) -> Int32 {
    produce("ag_gather", out) {
        let t = try Arg.tensor(a, "a")
        let shape = try Arg.shape(indexShape, indexNdim)
        let idx = try Arg.indices(index, Int64(Shape.count(shape)), "index")
        return try t.gather(axis: Int(axis), index: idx, indexShape: shape)
    }
}

// MARK: - Linear algebra and nn

@_cdecl("ag_dot")
public func ag_dot(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_dot", out) { try Arg.tensor(a, "a").dot(Arg.tensor(b, "b")) }
}

@_cdecl("ag_outer")
public func ag_outer(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_outer", out) { try Arg.tensor(a, "a").outer(Arg.tensor(b, "b")) }
}

@_cdecl("ag_softmax")
public func ag_softmax(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64) -> Int32 {
    produce("ag_softmax", out) { try Arg.tensor(a, "a").softmax(axis: Int(axis)) }
}

@_cdecl("ag_log_softmax")
public func ag_log_softmax(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64) -> Int32 {
    produce("ag_log_softmax", out) { try Arg.tensor(a, "a").logSoftmax(axis: Int(axis)) }
}

@_cdecl("ag_cross_entropy")
public func ag_cross_entropy(_ out: UnsafeMutablePointer<UInt64>?, _ logits: UInt64, _ labels: UnsafePointer<Int64>?, _ n: Int64) -> Int32 {
    produce("ag_cross_entropy", out) {
        let t = try Arg.tensor(logits, "logits")
        guard t.rank == 2 else { throw AutogradError.shape("cross_entropy: logits must be (N, C), got \(t.shape)") }
        guard n == Int64(t.shape[0]) else {
            throw AutogradError.shape("cross_entropy: \(n) labels for \(t.shape[0]) rows of logits")
        }
        return try t.crossEntropy(labels: Arg.indices(labels, n, "labels"))
    }
}

@_cdecl("ag_mse_loss")
public func ag_mse_loss(_ out: UnsafeMutablePointer<UInt64>?, _ pred: UInt64, _ target: UInt64) -> Int32 {
    produce("ag_mse_loss", out) { try Arg.tensor(pred, "pred").mseLoss(Arg.tensor(target, "target")) }
}

@_cdecl("ag_linear")
public func ag_linear(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ weight: UInt64, _ bias: UInt64) -> Int32 {
    produce("ag_linear", out) {
        try Arg.tensor(x, "x").linear(weight: Arg.tensor(weight, "weight"), bias: bias == 0 ? nil : Arg.tensor(bias, "bias"))
    }
}

// MARK: - Comparisons and where

@_cdecl("ag_eq")
public func ag_eq(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 { produce("ag_eq", out) { try Arg.tensor(a, "a").eq(Arg.tensor(b, "b")) } }
@_cdecl("ag_ne")
public func ag_ne(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 { produce("ag_ne", out) { try Arg.tensor(a, "a").ne(Arg.tensor(b, "b")) } }
@_cdecl("ag_lt")
public func ag_lt(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 { produce("ag_lt", out) { try Arg.tensor(a, "a").lt(Arg.tensor(b, "b")) } }
@_cdecl("ag_le")
public func ag_le(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 { produce("ag_le", out) { try Arg.tensor(a, "a").le(Arg.tensor(b, "b")) } }
@_cdecl("ag_gt")
public func ag_gt(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 { produce("ag_gt", out) { try Arg.tensor(a, "a").gt(Arg.tensor(b, "b")) } }
@_cdecl("ag_ge")
public func ag_ge(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 { produce("ag_ge", out) { try Arg.tensor(a, "a").ge(Arg.tensor(b, "b")) } }

@_cdecl("ag_where")
public func ag_where(_ out: UnsafeMutablePointer<UInt64>?, _ cond: UInt64, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_where", out) { try Tensor.where(Arg.tensor(cond, "cond"), Arg.tensor(a, "a"), Arg.tensor(b, "b")) }
}
