/// Finite-difference gradient checking: the analytic gradient from backward against central
/// differences of the forward function, in float64.
public struct GradCheckResult: CustomStringConvertible {
    public var passed: Bool
    /// The worst element: which input, its flat index, and both gradients there.
    public var worstInput = 0
    public var worstIndex = 0
    public var analytic = 0.0
    public var numeric = 0.0
    /// max over elements of |analytic - numeric| - (atol + rtol * |numeric|); <= 0 passes.
    public var worstExcess = -Double.infinity

    public var description: String {
        "gradcheck \(passed ? "passed" : "FAILED"): worst at input \(worstInput)[\(worstIndex)]: analytic \(analytic), numeric \(numeric)"
    }
}

public enum GradCheck {
    /// Checks d⟨f(inputs), w⟩/d inputs for a fixed pseudo-random weighting w of f's output
    /// (so every output element matters), against central differences with step `eps`.
    /// Inputs must be float64; only those with requiresGrad set are checked.
    public static func check(_ inputs: [Tensor], eps: Double = 1e-6, atol: Double = 1e-6, rtol: Double = 1e-5,
                             _ f: ([Tensor]) throws -> Tensor) throws -> GradCheckResult {
        guard inputs.allSatisfy({ $0.dtype == .float64 }) else {
            throw AutogradError.dtype("gradcheck: inputs must be float64")
        }
        // Analytic gradients through backward, on fresh leaves.
        let leaves = try inputs.map { t -> Tensor in
            let c = try Tensor(t.values, shape: t.shape)
            try c.setRequiresGrad(t.requiresGrad)
            return c
        }
        let y = try f(leaves)
        let weights = (0..<y.count).map { 0.5 + Double(($0 * 7919) % 13) / 13.0 }
        let loss = try y.multiplying(Tensor(weights, shape: y.shape)).sum()
        if loss.requiresGrad { try loss.backward() }

        var result = GradCheckResult(passed: true)
        for (k, t) in inputs.enumerated() where t.requiresGrad {
            let analytic = leaves[k].grad?.values ?? [Double](repeating: 0, count: t.count)
            var values = t.values
            for i in 0..<t.count {
                let x0 = values[i]
                values[i] = x0 + eps
                let up = try weightedOutput(inputs, k, values, weights, f)
                values[i] = x0 - eps
                let down = try weightedOutput(inputs, k, values, weights, f)
                values[i] = x0
                let numeric = (up - down) / (2 * eps)
                let excess = abs(analytic[i] - numeric) - (atol + rtol * abs(numeric))
                if excess > result.worstExcess || excess.isNaN {
                    result.worstExcess = excess
                    result.worstInput = k
                    result.worstIndex = i
                    result.analytic = analytic[i]
                    result.numeric = numeric
                }
                if !(excess <= 0) { result.passed = false }
            }
        }
        return result
    }

    /// ⟨f(inputs with input k replaced by `values`), weights⟩, computed without recording.
    private static func weightedOutput(_ inputs: [Tensor], _ k: Int, _ values: [Double], _ weights: [Double],
                                       _ f: ([Tensor]) throws -> Tensor) throws -> Double {
        try withNoGrad {
            var xs = inputs.map { $0.detach() }
            xs[k] = try Tensor(values, shape: inputs[k].shape)
            let y = try f(xs).values
            var s = 0.0
            for i in 0..<y.count { s += y[i] * weights[i] }
            return s
        }
    }
}
