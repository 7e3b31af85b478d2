/// clip_grad_norm (torch.nn.utils.clip_grad_norm_): the norm of all gradients together, and
/// every gradient scaled down so that norm is at most `maxNorm`.
public enum GradientClipping {
    /// The total norm of order `normType` (> 0, or +inf) of the `.grad` of `parameters` (those
    /// without one are skipped; none: 0), taken as the norm of the per-parameter norms, in
    /// float64 whatever the gradients' dtype (so float32 gradients do not overflow or lose
    /// digits; torch works in their dtype). When c = maxNorm / (total + 1e-6) is below 1, each
    /// `.grad` is replaced by c·grad (in its dtype, no history), as torch multiplies by
    /// min(c, 1). The replacement is out of place, as backward's accumulation is: a gradient
    /// read earlier keeps its values. A non-finite total scales as torch does: nan makes every
    /// gradient nan, inf scales by 0 (an infinite element then becomes nan); with
    /// `errorIfNonfinite` it is an error instead (nothing changed). Inside a capture the scaling
    /// is always recorded (by min(c, 1)), so a replay follows each call's gradients; the Double
    /// returned is the capture's. Gradients written by another thread meanwhile are a race, as
    /// with an optimizer step.
    @discardableResult
    public static func clipGradNorm(_ parameters: [Tensor], maxNorm: Double, normType: Double = 2,
                                    errorIfNonfinite: Bool = false) throws -> Double {
        guard !maxNorm.isNaN && maxNorm >= 0 else {
            throw AutogradError.argument("clip_grad_norm: max_norm must be >= 0 (not nan), got \(maxNorm)")
        }
        guard normType == .infinity || (normType.isFinite && normType > 0) else {
            throw AutogradError.argument("clip_grad_norm: norm_type must be > 0 or inf, got \(normType)")
        }
        for i in parameters.indices {
            for j in parameters.indices where j > i && parameters[i] === parameters[j] {
                throw AutogradError.argument("clip_grad_norm: parameter \(j) repeats parameter \(i)")
            }
        }
        let work = parameters.compactMap { p in p.grad.map { (p, $0) } }
        if work.isEmpty { return 0 }
        for (p, g) in work { try g.requireFloatingPoint("clip_grad_norm", "a gradient of shape \(p.shape)") }
        return try withNoGrad {
            let norms = try work.map { try norm($0.1.detach().converted(to: .float64), normType) }
            let total = try norm(Tensor.stack(norms, axis: 0), normType)
            let value = try total.item()
            if errorIfNonfinite && !value.isFinite {
                throw AutogradError.argument("clip_grad_norm: the total norm of order \(normType) of the gradients is \(value); nothing was scaled")
            }
            let coefficient = try total.constant(maxNorm).dividing(by: total.adding(total.constant(1e-6)))
                .minimum(total.constant(1))
            let c = try coefficient.item()
            guard Trace.recorder != nil || !(c >= 1) else { return value }
            for (p, g) in work {
                p.grad = try g.detach().multiplying(coefficient.converted(to: g.dtype))
            }
            return value
        }
    }

    /// The norm of order p of every element of x (float64), a 0-d tensor (0 for no elements).
    private static func norm(_ x: Tensor, _ p: Double) throws -> Tensor {
        if x.count == 0 { return try x.constant(0) }
        if p == .infinity { return try x.abs().max() }
        if p == 2 { return try x.multiplying(x).sum().sqrt() }
        if p == 1 { return try x.abs().sum() }
        return try x.abs().pow(x.constant(p)).sum().pow(x.constant(1 / p))
    }
}
