/// softmax, log_softmax, cross_entropy, mse_loss: composed of differentiable ops, in stable forms.
extension Tensor {
    /// e^x / sum(e^x) along `axis`, as e^z / sum(e^z) with z = x - max(x) computed once in x's
    /// dtype (no overflow, and no precision lost to a large common offset). A row holding +inf
    /// or nan, or only -inf, is all nan (as torch.softmax).
    package func softmax(axis: Int) throws -> Tensor {
        try requireFloatingPoint("softmax")
        let a = try Tensor.normalizeAxis(axis, rank: rank, "softmax")
        // Empty (an axis of extent 0, or another): made directly, with no buffer of the other
        // axes' size (they may be huge) and an empty zero gradient.
        if count == 0 { return try emptyResult("softmax") }
        let e = try shiftedByMax(axes: [a], finiteShift: false).shifted.exp()
        return try e.dividing(by: e.sum(axes: [a], keepDims: true))
    }

    /// log(softmax(x)) along `axis`, as z - log(sum(e^z)) with z = x - max(x) (see softmax).
    package func logSoftmax(axis: Int) throws -> Tensor {
        try requireFloatingPoint("log_softmax")
        let a = try Tensor.normalizeAxis(axis, rank: rank, "log_softmax")
        if count == 0 { return try emptyResult("log_softmax") }
        let z = try shiftedByMax(axes: [a], finiteShift: false).shifted
        return try z.subtracting(z.exp().sum(axes: [a], keepDims: true).log())
    }

    /// The result of softmax or log_softmax of an empty input: as empty as the input,
    /// made directly (no buffer of the other axes' size), with an (empty) zero gradient.
    private func emptyResult(_ name: StaticString) throws -> Tensor {
        let out = try Tensor(uninitialized: shape, dtype: dtype)
        if Tensor.shouldRecord(self) {
            let inputShape = shape, dt = dtype
            out.record(name, self) { _, _ in InputGradients(try Tensor.zeros(inputShape, dtype: dt)) }
        }
        if Trace.isRecording { Trace.note(out, name, [self]) { ins in try ins[0].emptyResult(name) } }
        try out.deriveTangent(from: self) { t in try Tensor.zeros(t.shape, dtype: t.dtype) }
        return out
    }

    /// The batch mean of -log_softmax(logits)[i, labels[i]] for logits (N, C).
    package func crossEntropy(labels: [Int]) throws -> Tensor {
        guard rank == 2 else { throw AutogradError.shape("cross_entropy: logits must be (N, C), got \(shape)") }
        guard labels.count == shape[0] else {
            throw AutogradError.shape("cross_entropy: \(labels.count) labels for \(shape[0]) rows of logits")
        }
        let classes = shape[1]
        for l in labels where l < 0 || l >= classes {
            throw AutogradError.argument("cross_entropy: label \(l) is out of range for \(classes) classes")
        }
        let picked = try logSoftmax(axis: 1).gathering(axis: 1, index: labels, indexShape: [labels.count, 1])
        return try picked.mean().negated()
    }

    /// mean((self - target)^2) over every element.
    package func mseLoss(_ target: Tensor) throws -> Tensor {
        guard shape == target.shape else {
            throw AutogradError.shape("mse_loss: prediction \(shape) and target \(target.shape) differ")
        }
        let d = try subtracting(target)
        return try d.multiplying(d).mean()
    }
}
