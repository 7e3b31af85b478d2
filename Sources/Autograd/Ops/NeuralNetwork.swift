/// softmax, log_softmax, cross_entropy, mse_loss: composed of differentiable ops, in stable forms.
extension Tensor {
    /// e^x / sum(e^x) along `axis`, as exp(x - logsumexp(x)) (no overflow).
    public func softmax(axis: Int) throws -> Tensor {
        let a = try Tensor.normalizeAxis(axis, rank: rank, "softmax")
        // Empty: an empty result (and gradient), without the logsumexp over an axis of extent
        // 0, whose result [.., 1, ..] may be huge when another axis is.
        if count == 0 { return try reshaped(shape) }
        return try subtracting(logSumExp(axes: [a], keepDims: true)).exp()
    }

    /// log(softmax(x)) along `axis`, as x - logsumexp(x).
    public func logSoftmax(axis: Int) throws -> Tensor {
        let a = try Tensor.normalizeAxis(axis, rank: rank, "log_softmax")
        if count == 0 { return try reshaped(shape) }  // as softmax
        return try subtracting(logSumExp(axes: [a], keepDims: true))
    }

    /// The batch mean of -log_softmax(logits)[i, labels[i]] for logits (N, C).
    public func crossEntropy(labels: [Int]) throws -> Tensor {
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
    public func mseLoss(_ target: Tensor) throws -> Tensor {
        guard shape == target.shape else {
            throw AutogradError.shape("mse_loss: prediction \(shape) and target \(target.shape) differ")
        }
        let d = try subtracting(target)
        return try d.multiplying(d).mean()
    }
}
