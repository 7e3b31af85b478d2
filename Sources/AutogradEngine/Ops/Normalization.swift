import CKernels

/// layer_norm, batch_norm, group_norm (torch.nn.functional's). batch_norm and group_norm are
/// composed of differentiable ops (mean, var with correction 0, sub, add, sqrt, div, mul), so
/// the VJP, the JVP, capture/replay and higher orders come from those ops; layer_norm's core
/// (standardizing over the trailing axes) is one primitive with row kernels, its rule stated
/// over the same ops. Statistics use the biased variance, as PyTorch;
/// float32 sums are accumulated as Reduction does (pairwise, in double), so they stay accurate.
extension Tensor {
    /// torch.nn.functional.layer_norm: (x - mean) / sqrt(var + eps) over the last
    /// `normalizedAxes` axes (var biased), times `weight` plus `bias` (each of the shape of
    /// those axes, or nil).
    package func layerNorm(normalizedAxes k: Int, weight: Tensor? = nil, bias: Tensor? = nil, eps: Double = 1e-5) throws -> Tensor {
        try Tensor.checkNormOperands("layer_norm", self, weight, bias, eps: eps)
        guard k >= 1 && k <= rank else {
            throw AutogradError.argument("layer_norm: normalized_ndim must be in 1...\(rank) for an input of shape \(shape), got \(k)")
        }
        let normalizedShape = Array(shape[(rank - k)...])
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if let t, t.shape != normalizedShape {
                throw AutogradError.shape("layer_norm: \(name) has shape \(t.shape), the normalized axes of \(shape) are \(normalizedShape)")
            }
        }
        let y = count > 0 ? try Tensor.standardizedOverLastAxes(self, k, eps: eps)
                          : try Tensor.standardized(self, axes: Array((rank - k)..<rank), eps: eps)
        return try Tensor.scaledAndShifted(y, weight, bias)
    }

    /// torch.nn.functional.batch_norm for x (N, C, *): each channel normalised by its mean and
    /// biased variance over the batch and spatial axes (training) or by the running statistics
    /// (eval), times `weight` plus `bias` (each (C) or nil). In training, given running_mean and
    /// running_var (both or neither, (C), not requiring grad), they are updated in place:
    /// r = (1 - momentum) r + momentum s, with the batch mean and the unbiased batch variance (a
    /// version bump, as an optimizer step). N·spatial == 1 in training is an error (torch's);
    /// N·spatial == 0 gives an empty result and leaves the running statistics unchanged.
    package func batchNorm(runningMean: Tensor?, runningVar: Tensor?, weight: Tensor? = nil, bias: Tensor? = nil,
                          training: Bool, momentum: Double = 0.1, eps: Double = 1e-5) throws -> Tensor {
        try Tensor.checkNormOperands("batch_norm", self, weight, bias, runningMean, runningVar, eps: eps)
        guard rank >= 2 else {
            throw AutogradError.shape("batch_norm: the input must be (N, C, *) with rank >= 2, got shape \(shape)")
        }
        let c = shape[1]
        for (name, t) in [("weight", weight), ("bias", bias), ("running_mean", runningMean), ("running_var", runningVar)] {
            if let t, t.shape != [c] {
                throw AutogradError.shape("batch_norm: \(name) has shape \(t.shape), it must be [\(c)] (the channels of \(shape))")
            }
        }
        guard (runningMean == nil) == (runningVar == nil) else {
            throw AutogradError.argument("batch_norm: running_mean and running_var must both be given or both be none")
        }
        guard momentum.isFinite else { throw AutogradError.argument("batch_norm: momentum must be finite, got \(momentum)") }
        var channelShape = [Int](repeating: 1, count: rank)
        channelShape[1] = c
        let axes = [0] + Array(2..<rank)
        let n = axes.reduce(1) { $0 * shape[$1] }  // a product of the input's extents: fits
        guard training else {
            guard let runningMean, let runningVar else {
                throw AutogradError.argument("batch_norm: eval mode (training false) needs running_mean and running_var")
            }
            let mean = try runningMean.reshaped(channelShape), variance = try runningVar.reshaped(channelShape)
            let y = try subtracting(mean).dividing(by: variance.adding(constant(eps)).sqrt())
            return try Tensor.scaledAndShifted(y, weight?.reshaped(channelShape), bias?.reshaped(channelShape))
        }
        guard n != 1 else {
            throw AutogradError.argument("batch_norm: expected more than 1 value per channel when training, got input shape \(shape)")
        }
        if let runningMean, let runningVar {
            for (name, t) in [("running_mean", runningMean), ("running_var", runningVar)] {
                if t.requiresGrad {
                    throw AutogradError.state("batch_norm: \(name) requires grad; running statistics are updated in place in training and must not require grad")
                }
                if t.gradFn != nil {
                    throw AutogradError.state("batch_norm: \(name) is the result of a recorded operation; running statistics are updated in place and must be leaves")
                }
                try t.storage.refuseReadOnly("batch_norm: \(name) (updated in place in training)")
            }
            if runningMean.storage === runningVar.storage {
                throw AutogradError.argument("batch_norm: running_mean and running_var share their values")
            }
        }
        let mean = try self.mean(axes: axes, keepDims: true)
        let variance = try self.variance(axes: axes, correction: 0, keepDims: true)
        let y = try subtracting(mean).dividing(by: variance.adding(constant(eps)).sqrt())
        let out = try Tensor.scaledAndShifted(y, weight?.reshaped(channelShape), bias?.reshaped(channelShape))
        if let runningMean, let runningVar, n > 0 {
            try withNoGrad {
                let keep = try constant(1 - momentum), step = try constant(momentum)
                let newMean = try runningMean.detach().multiplying(keep).adding(mean.detach().reshaped([c]).multiplying(step))
                let unbiased = try variance.detach().reshaped([c]).multiplying(constant(Double(n) / Double(n - 1)))
                let newVar = try runningVar.detach().multiplying(keep).adding(unbiased.multiplying(step))
                try runningMean.replaceValues(with: newMean)
                try runningVar.replaceValues(with: newVar)
            }
        }
        return out
    }

    /// torch.nn.functional.group_norm for x (N, C, *): the C channels split into `groups`
    /// groups of C/groups consecutive channels, each group of each sample normalised over its
    /// channels and spatial positions (biased variance), times `weight` plus `bias` ((C) or nil).
    package func groupNorm(groups: Int, weight: Tensor? = nil, bias: Tensor? = nil, eps: Double = 1e-5) throws -> Tensor {
        try Tensor.checkNormOperands("group_norm", self, weight, bias, eps: eps)
        guard rank >= 2 else {
            throw AutogradError.shape("group_norm: the input must be (N, C, *) with rank >= 2, got shape \(shape)")
        }
        let c = shape[1]
        guard groups >= 1 && c % groups == 0 else {
            throw AutogradError.argument("group_norm: groups must be positive and divide the \(c) channels, got \(groups)")
        }
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if let t, t.shape != [c] {
                throw AutogradError.shape("group_norm: \(name) has shape \(t.shape), it must be [\(c)] (the channels of \(shape))")
            }
        }
        // Products of non-zero extents fit (Shape.count checked the input's), so these do.
        let spatial = shape[2...].reduce(1, *)
        let grouped = try reshaped([shape[0], groups, (c / groups) * spatial])
        let y = try Tensor.standardized(grouped, axes: [2], eps: eps).reshaped(shape)
        var channelShape = [Int](repeating: 1, count: rank)
        channelShape[1] = c
        return try Tensor.scaledAndShifted(y, weight?.reshaped(channelShape), bias?.reshaped(channelShape))
    }

    /// (x - mean) / sqrt(var + eps) over `axes` (biased variance, axes kept for broadcasting).
    static func standardized(_ x: Tensor, axes: [Int], eps: Double) throws -> Tensor {
        let mean = try x.mean(axes: axes, keepDims: true)
        let variance = try x.variance(axes: axes, correction: 0, keepDims: true)
        return try x.subtracting(mean).dividing(by: variance.adding(x.constant(eps)).sqrt())
    }

    /// `standardized` over the last k axes of a non-empty x as one primitive (row kernels in
    /// C, agk_standardize): layer norm's core, one pass per row instead of a dozen ops. Its VJP is
    /// `standardizedBackward`, whose composite form is the rule stated over differentiable ops.
    static func standardizedOverLastAxes(_ x: Tensor, _ k: Int, eps: Double) throws -> Tensor {
        let width = x.shape[(x.rank - k)...].reduce(1, *), rows = x.count / width
        let out = try Tensor(uninitialized: x.shape, dtype: x.dtype)
        runStandardize(x.dtype, x.storage.raw, out.storage.raw, rows, width, eps)
        if shouldRecord(x) {
            out.record("layer_norm_standardize", x, savesInput: true) { g, node in
                InputGradients(try standardizedBackward(g, node.saved(0), k, eps: eps))
            }
        }
        if Trace.isRecording {
            let dtype = x.dtype
            Trace.note(out, "layer_norm_standardize", [x], kernel: .buffers { args, o in
                runStandardize(dtype, args[0], o, rows, width, eps)
            }) { ins in try standardizedOverLastAxes(ins[0], k, eps: eps) }
        }
        // JVP: with r = 1 / sqrt(var + eps) and u = t - mean(t), dy = r (u - y mean(y u)).
        try out.deriveTangent(from: x) { t in
            let axes = Array((x.rank - k)..<x.rank)
            let u = try t.subtracting(t.mean(axes: axes, keepDims: true))
            let yu = try out.multiplying(u).mean(axes: axes, keepDims: true)
            return try u.subtracting(out.multiplying(yu)).dividing(by: standardDeviation(x, axes, eps))
        }
        return out
    }

    /// The VJP of standardizedOverLastAxes at x for the gradient g: with y the standardised x
    /// and s = sqrt(var + eps) over the row, dx = (g - mean(g) - y mean(g y)) / s. Stated over
    /// differentiable ops (the rule), which run when this gradient is itself differentiated
    /// (create_graph, forward mode); otherwise the agk_standardize_backward kernel computes it.
    static func standardizedBackward(_ g: Tensor, _ x: Tensor, _ k: Int, eps: Double) throws -> Tensor {
        if backwardNeedsRule(g, x) {
            let axes = Array((x.rank - k)..<x.rank)
            let y = try standardizedOverLastAxes(x, k, eps: eps)
            let meanG = try g.mean(axes: axes, keepDims: true)
            let meanGY = try g.multiplying(y).mean(axes: axes, keepDims: true)
            return try g.subtracting(meanG).subtracting(y.multiplying(meanGY)).dividing(by: standardDeviation(x, axes, eps))
        }
        let width = x.shape[(x.rank - k)...].reduce(1, *), rows = x.count / width
        let out = try Tensor(uninitialized: x.shape, dtype: x.dtype)
        runStandardizeBackward(x.dtype, g.storage.raw, x.storage.raw, out.storage.raw, rows, width, eps)
        if Trace.isRecording {
            let dtype = x.dtype
            Trace.note(out, "layer_norm_standardize_backward", [g, x], kernel: .buffers { args, o in
                runStandardizeBackward(dtype, args[0], args[1], o, rows, width, eps)
            }) { ins in try standardizedBackward(ins[0], ins[1], k, eps: eps) }
        }
        return out
    }

    /// sqrt(var + eps) over `axes` (biased variance, kept dims), differentiable.
    private static func standardDeviation(_ x: Tensor, _ axes: [Int], _ eps: Double) throws -> Tensor {
        try x.variance(axes: axes, correction: 0, keepDims: true).adding(x.constant(eps)).sqrt()
    }

    private static func runStandardize(_ dtype: DType, _ x: UnsafeMutableRawPointer?, _ y: UnsafeMutableRawPointer?,
                                       _ rows: Int, _ width: Int, _ eps: Double) {
        guard rows > 0 && width > 0, let x, let y else { return }
        if dtype == .float32 {
            agk_standardize_f32(x.assumingMemoryBound(to: Float.self), y.assumingMemoryBound(to: Float.self), Int64(rows), Int64(width), eps)
        } else {
            agk_standardize_f64(x.assumingMemoryBound(to: Double.self), y.assumingMemoryBound(to: Double.self), Int64(rows), Int64(width), eps)
        }
    }

    private static func runStandardizeBackward(_ dtype: DType, _ g: UnsafeMutableRawPointer?, _ x: UnsafeMutableRawPointer?,
                                               _ out: UnsafeMutableRawPointer?, _ rows: Int, _ width: Int, _ eps: Double) {
        guard rows > 0 && width > 0, let g, let x, let out else { return }
        if dtype == .float32 {
            agk_standardize_backward_f32(g.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
                                         out.assumingMemoryBound(to: Float.self), Int64(rows), Int64(width), eps)
        } else {
            agk_standardize_backward_f64(g.assumingMemoryBound(to: Double.self), x.assumingMemoryBound(to: Double.self),
                                         out.assumingMemoryBound(to: Double.self), Int64(rows), Int64(width), eps)
        }
    }

    /// y * weight + bias, each optional (already shaped to broadcast with y).
    static func scaledAndShifted(_ y: Tensor, _ weight: Tensor?, _ bias: Tensor?) throws -> Tensor {
        var out = y
        if let weight { out = try out.multiplying(weight) }
        if let bias { out = try out.adding(bias) }
        return out
    }

    /// The checks every normalisation makes first: floating point operands of one dtype, and
    /// eps finite and >= 0.
    static func checkNormOperands(_ op: String, _ x: Tensor, _ others: Tensor?..., eps: Double) throws {
        try x.requireFloatingPoint(op, "the input")
        let names = ["weight", "bias", "running_mean", "running_var"]
        for (i, t) in others.enumerated() {
            guard let t else { continue }
            try t.requireFloatingPoint(op, names[i])
            guard t.dtype == x.dtype else {
                throw AutogradError.dtype("\(op): \(names[i]) is \(t.dtype) but the input is \(x.dtype)")
            }
        }
        guard eps.isFinite && eps >= 0 else {
            throw AutogradError.argument("\(op): eps must be finite and >= 0, got \(eps)")
        }
    }
}
