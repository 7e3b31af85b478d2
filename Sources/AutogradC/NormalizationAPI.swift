import AutogradEngine

// Normalisation, attention and training helpers (the header's section of that name).

/// The tensor behind an optional handle (AG_NULL_TENSOR: none).
private func optionalTensor(_ handle: UInt64, _ what: String) throws -> Tensor? {
    handle == 0 ? nil : try Arg.tensor(handle, what)
}

@_cdecl("ag_layer_norm")
public func ag_layer_norm(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ normalizedNdim: Int64, _ weight: UInt64,
                          _ bias: UInt64, _ eps: Double) -> Int32 {
    produce("ag_layer_norm", out) {
        try Arg.tensor(x, "x").layerNorm(normalizedAxes: Int(normalizedNdim), weight: optionalTensor(weight, "weight"),
                                         bias: optionalTensor(bias, "bias"), eps: eps)
    }
}

@_cdecl("ag_batch_norm")
public func ag_batch_norm(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ runningMean: UInt64, _ runningVar: UInt64,
                          _ weight: UInt64, _ bias: UInt64, _ training: UInt8, _ momentum: Double, _ eps: Double) -> Int32 {
    produce("ag_batch_norm", out) {
        try Arg.tensor(x, "x").batchNorm(runningMean: optionalTensor(runningMean, "running_mean"),
                                         runningVar: optionalTensor(runningVar, "running_var"),
                                         weight: optionalTensor(weight, "weight"), bias: optionalTensor(bias, "bias"),
                                         training: training != 0, momentum: momentum, eps: eps)
    }
}

@_cdecl("ag_group_norm")
public func ag_group_norm(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ groups: Int64, _ weight: UInt64,
                          _ bias: UInt64, _ eps: Double) -> Int32 {
    produce("ag_group_norm", out) {
        try Arg.tensor(x, "x").groupNorm(groups: Int(groups), weight: optionalTensor(weight, "weight"),
                                         bias: optionalTensor(bias, "bias"), eps: eps)
    }
}

@_cdecl("ag_scaled_dot_product_attention")
public func ag_scaled_dot_product_attention(_ out: UnsafeMutablePointer<UInt64>?, _ q: UInt64, _ k: UInt64, _ v: UInt64,
                                            _ attnMask: UInt64, _ isCausal: UInt8, _ scale: Double) -> Int32 {
    produce("ag_scaled_dot_product_attention", out) {
        try Tensor.scaledDotProductAttention(query: Arg.tensor(q, "q"), key: Arg.tensor(k, "k"), value: Arg.tensor(v, "v"),
                                             mask: optionalTensor(attnMask, "attn_mask"), isCausal: isCausal != 0, scale: scale)
    }
}

@_cdecl("ag_clip_grad_norm")
public func ag_clip_grad_norm(_ outTotalNorm: UnsafeMutablePointer<Double>?, _ params: UnsafePointer<UInt64>?, _ n: Int64,
                              _ maxNorm: Double, _ normType: Double) -> Int32 {
    guarded("ag_clip_grad_norm") {
        let out = try Arg.out(outTotalNorm, "out_total_norm")
        guard n >= 0 else { throw AutogradError.argument("n (\(n)) is negative") }
        let parameters = n == 0 ? [] : try Arg.tensorList(params, n, "params")
        out.pointee = try GradientClipping.clipGradNorm(parameters, maxNorm: maxNorm, normType: normType)
    }
}

@_cdecl("ag_lr_warmup_cosine")
public func ag_lr_warmup_cosine(_ out: UnsafeMutablePointer<Double>?, _ step: Int64, _ warmupSteps: Int64, _ totalSteps: Int64,
                                _ baseLR: Double, _ minLR: Double) -> Int32 {
    guarded("ag_lr_warmup_cosine") {
        let out = try Arg.out(out)
        out.pointee = try LearningRateSchedule.warmupCosine(base: baseLR, minimum: minLR, warmupSteps: Int(warmupSteps),
                                                            totalSteps: Int(totalSteps)).rate(at: Int(step))
    }
}
