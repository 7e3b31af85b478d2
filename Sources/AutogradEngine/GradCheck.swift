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
    /// Inputs must be float64; only those with requiresGrad set are checked. f must return a
    /// float64 tensor (any shape, the same on every call): anything else is
    /// AutogradError.callback, since the fault is f's. The analytic pass records whatever the
    /// caller's grad mode (a check run under no_grad, or from inside another check's f, works).
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
        let (shape, weights) = try GradMode.with(enabled: true) { () throws -> ([Int], [Double]) in
            let y = try f(leaves)
            guard y.dtype == .float64 else {
                throw AutogradError.callback("gradcheck: the function's output is \(y.dtype) \(y.shape); it must be float64, as its inputs")
            }
            let weights = (0..<y.count).map { 0.5 + Double(($0 * 7919) % 13) / 13.0 }
            let loss = try y.multiplying(Tensor(weights, shape: y.shape)).sum()
            if loss.requiresGrad { try loss.backward() }
            return (y.shape, weights)
        }

        var result = GradCheckResult(passed: true)
        var evaluation = 1  // f's calls so far, for messages
        for (k, t) in inputs.enumerated() where t.requiresGrad {
            let analytic = leaves[k].grad?.values ?? [Double](repeating: 0, count: t.count)
            var values = t.values
            for i in 0..<t.count {
                let x0 = values[i]
                values[i] = x0 + eps
                let up = try weightedOutput(inputs, k, values, weights, shape, &evaluation, f)
                values[i] = x0 - eps
                let down = try weightedOutput(inputs, k, values, weights, shape, &evaluation, f)
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
    /// f's output must have the first call's shape (and be float64, as then).
    private static func weightedOutput(_ inputs: [Tensor], _ k: Int, _ values: [Double], _ weights: [Double],
                                       _ shape: [Int], _ evaluation: inout Int,
                                       _ f: ([Tensor]) throws -> Tensor) throws -> Double {
        evaluation += 1
        let call = evaluation
        return try withNoGrad {
            var xs = inputs.map { $0.detach() }
            xs[k] = try Tensor(values, shape: inputs[k].shape)
            let out = try f(xs)
            guard out.shape == shape && out.dtype == .float64 else {
                throw AutogradError.callback("gradcheck: the function's output changed between calls: float64 \(shape) on call 1, \(out.dtype) \(out.shape) on call \(call) (it must have the same shape and dtype on every call)")
            }
            let y = out.values
            var s = 0.0
            for i in 0..<y.count { s += y[i] * weights[i] }
            return s
        }
    }
}
