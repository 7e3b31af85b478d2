import CKernels

/// exp, log, relu: forward kernels and derivative rules side by side.
extension Tensor {
    public func exp() throws -> Tensor {
        let out: Tensor
        if dtype == .float32 {
            out = try Tensor(uninitialized: shape, dtype: .float32)
            let x = buffer(Float.self), o = out.buffer(Float.self)
            if let xs = x.baseAddress, let os = o.baseAddress {
                Parallel.forChunks(count: count) { r in agk_exp_f32(xs + r.lowerBound, os + r.lowerBound, Int64(r.count)) }
            }
        } else {
            out = try mapped("exp", { Float.exp($0) }, { Double.exp($0) })
        }
        if Tensor.shouldRecord(self) {
            // d exp(x) = exp(x). The saved output is detached (no cycle); when the backward
            // pass is itself recorded (create_graph) exp(x) is recomputed differentiably.
            out.record("exp", self, savesInput: true, savesOutput: true, direct: .exp) { g, node in
                if !GradMode.isEnabled {
                    let f = DirectRule.exp
                    return InputGradients(try Tensor.gradient(g, node.outputValues, { f.inputGradient(0, g: $0, u: $1, w: $1) },
                                                              { f.inputGradient(0, g: $0, u: $1, w: $1) }))
                }
                return InputGradients(try g.multiplying(node.saved(0).exp()))
            }
        }
        return out
    }

    public func log() throws -> Tensor {
        let out = try mapped("log", { Float.log($0) }, { Double.log($0) })
        if Tensor.shouldRecord(self) {
            out.record("log", self, savesInput: true, direct: .log) { g, node in
                [try g.dividing(by: node.saved(0))]
            }
        }
        return out
    }

    /// max(x, 0), nan for nan; the derivative at exactly 0 is taken as 0, and is 1 at nan (as in
    /// PyTorch). Where x <= 0 the gradient is selected: 0 even for an infinite or nan one.
    public func relu() throws -> Tensor {
        let out = try Tensor(uninitialized: shape, dtype: dtype)
        switch dtype {
        case .float32: agk_relu_f32(buffer(Float.self).baseAddress, out.buffer(Float.self).baseAddress, Int64(count))
        case .float64: agk_relu_f64(buffer(Double.self).baseAddress, out.buffer(Double.self).baseAddress, Int64(count))
        }
        if Tensor.shouldRecord(self) {
            // relu(x) is 0 exactly where x <= 0 (nan stays nan), so the output (kept anyway by
            // the next op, often) serves as the mask and the input need not be saved.
            out.record("relu", self, savesOutput: true, direct: .relu) { g, node in
                if !GradMode.isEnabled { return InputGradients(try Tensor.reluGradient(g, node.outputValues)) }
                let mask = try node.output().mapped("relu_mask", { $0 <= 0 ? 0 : 1 }, { $0 <= 0 ? 0 : 1 })
                return InputGradients(try Tensor.masked(g, by: mask))
            }
        }
        return out
    }
}

extension Tensor {
    /// g where the saved relu output is not 0 (positive or nan), else 0; written over g when the
    /// pass allows.
    static func reluGradient(_ g: Tensor, _ y: Storage) throws -> Tensor {
        guard g.dtype == y.dtype && g.count == y.count else {
            throw AutogradError.internal("relu: a gradient of \(g.dtype) \(g.shape) met saved values of \(y.dtype) x \(y.count)")
        }
        let out = Backward.reusableGradient == ObjectIdentifier(g) ? g : try Tensor(uninitialized: g.shape, dtype: g.dtype)
        switch g.dtype {
        case .float32: agk_relu_grad_f32(g.buffer(Float.self).baseAddress, y.buffer(Float.self).baseAddress, out.buffer(Float.self).baseAddress, Int64(g.count))
        case .float64: agk_relu_grad_f64(g.buffer(Double.self).baseAddress, y.buffer(Double.self).baseAddress, out.buffer(Double.self).baseAddress, Int64(g.count))
        }
        return out
    }
}

/// sqrt, abs, sin, cos, tanh, sigmoid, leaky_relu, softplus, gelu (with its normal CDF and PDF).
/// Rules that use the op's own output recompute it from the input when the backward pass is
/// being recorded (create_graph), so higher derivatives stay exact. A rule with a one-kernel
/// form for passes that are not recorded computes there what its tensor ops compute, in the
/// same order (FusedRuleAgreementTests).
extension Tensor {
    public func sqrt() throws -> Tensor {
        let out = try mapped("sqrt", { Float.sqrt($0) }, { Double.sqrt($0) })
        if Tensor.shouldRecord(self) {
            out.record("sqrt", self, savesInput: true, savesOutput: true) { g, node in
                if !GradMode.isEnabled { return InputGradients(try Tensor.gradient(g, node.outputValues, { $0 / (2 * $1) }, { $0 / (2 * $1) })) }
                let y = try node.saved(0).sqrt()
                return InputGradients(try g.dividing(by: y.multiplying(y.constant(2))))
            }
        }
        return out
    }

    /// |x|; the derivative at 0 is taken as 0, selected: 0 for any incoming gradient (PyTorch
    /// multiplies by sgn(0) = 0, which makes an infinite gradient nan).
    public func abs() throws -> Tensor {
        let out = try mapped("abs", { Swift.abs($0) }, { Swift.abs($0) })
        if Tensor.shouldRecord(self) {
            out.record("abs", self, savesInput: true) { g, node in
                if !GradMode.isEnabled {
                    return InputGradients(try Tensor.zipped(g, node.saved(0), "abs", { $1 > 0 ? $0 : ($1 < 0 ? -$0 : 0) }, { $1 > 0 ? $0 : ($1 < 0 ? -$0 : 0) }))
                }
                let sign = try node.saved(0).mapped("sign", { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) }, { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) })
                return InputGradients(try Tensor.masked(g, by: sign))
            }
        }
        return out
    }

    public func sin() throws -> Tensor {
        let out = try mapped("sin", { Float.sin($0) }, { Double.sin($0) })
        if Tensor.shouldRecord(self) {
            out.record("sin", self, savesInput: true) { g, node in InputGradients(try g.multiplying(node.saved(0).cos())) }
        }
        return out
    }

    public func cos() throws -> Tensor {
        let out = try mapped("cos", { Float.cos($0) }, { Double.cos($0) })
        if Tensor.shouldRecord(self) {
            out.record("cos", self, savesInput: true) { g, node in InputGradients(try g.multiplying(node.saved(0).sin()).negated()) }
        }
        return out
    }

    public func tanh() throws -> Tensor {
        let out = try mapped("tanh", { Float.tanh($0) }, { Double.tanh($0) })
        if Tensor.shouldRecord(self) {
            // d tanh = 1 - tanh²
            out.record("tanh", self, savesInput: true, savesOutput: true, direct: .tanh) { g, node in
                if !GradMode.isEnabled {
                    let f = DirectRule.tanh
                    return InputGradients(try Tensor.gradient(g, node.outputValues, { f.inputGradient(0, g: $0, u: $1, w: $1) },
                                                              { f.inputGradient(0, g: $0, u: $1, w: $1) }))
                }
                let y = try node.saved(0).tanh()
                return InputGradients(try g.multiplying(y.constant(1).subtracting(y.multiplying(y))))
            }
        }
        return out
    }

    /// 1 / (1 + e^-x), in a form that stays finite for any input.
    public func sigmoid() throws -> Tensor {
        let out = try mapped("sigmoid", Tensor.stableSigmoid, Tensor.stableSigmoid)
        if Tensor.shouldRecord(self) {
            // d sigmoid = s (1 - s)
            out.record("sigmoid", self, savesInput: true, savesOutput: true, direct: .sigmoid) { g, node in
                if !GradMode.isEnabled {
                    let f = DirectRule.sigmoid
                    return InputGradients(try Tensor.gradient(g, node.outputValues, { f.inputGradient(0, g: $0, u: $1, w: $1) },
                                                              { f.inputGradient(0, g: $0, u: $1, w: $1) }))
                }
                let s = try node.saved(0).sigmoid()
                return InputGradients(try g.multiplying(s.multiplying(s.constant(1).subtracting(s))))
            }
        }
        return out
    }

    @inline(__always)
    static func stableSigmoid<T: TensorElement>(_ x: T) -> T {
        if x >= 0 { return 1 / (1 + T.exp(-x)) }
        let e = T.exp(x)
        return e / (1 + e)
    }

    /// x for x > 0, negativeSlope * x otherwise; the derivative at 0 is negativeSlope. The
    /// gradient is multiplied by the slope, not selected (as PyTorch): with a slope of 0 an
    /// infinite gradient gives nan for x <= 0.
    public func leakyRelu(negativeSlope: Double = 0.01) throws -> Tensor {
        let s32 = Float(negativeSlope)
        let out = try mapped("leaky_relu", { $0 > 0 ? $0 : $0 * s32 }, { $0 > 0 ? $0 : $0 * negativeSlope })
        if Tensor.shouldRecord(self) {
            out.record("leaky_relu", self, savesInput: true) { g, node in
                if !GradMode.isEnabled {
                    return InputGradients(try Tensor.zipped(g, node.saved(0), "leaky_relu", { $1 > 0 ? $0 : $0 * s32 }, { $1 > 0 ? $0 : $0 * negativeSlope }))
                }
                let slope = try node.saved(0).mapped("leaky_relu_slope", { $0 > 0 ? 1 : s32 }, { $0 > 0 ? 1 : negativeSlope })
                return InputGradients(try g.multiplying(slope))
            }
        }
        return out
    }

    /// log(1 + e^x) as max(x, 0) + log1p(e^-|x|), finite for any input; d softplus = sigmoid.
    public func softplus() throws -> Tensor {
        let out = try mapped("softplus", Tensor.stableSoftplus, Tensor.stableSoftplus)
        if Tensor.shouldRecord(self) {
            out.record("softplus", self, savesInput: true) { g, node in InputGradients(try g.multiplying(node.saved(0).sigmoid())) }
        }
        return out
    }

    @inline(__always)
    static func stableSoftplus<T: TensorElement>(_ x: T) -> T {
        Swift.max(x, 0) + T.log1p(T.exp(-Swift.abs(x)))
    }

    /// The exact GELU, x·Φ(x) with Φ the standard normal CDF; d gelu = Φ(x) + x·φ(x).
    public func gelu() throws -> Tensor {
        let out = try mapped("gelu", { $0 * Tensor.normalCDF($0) }, { $0 * Tensor.normalCDF($0) })
        if Tensor.shouldRecord(self) {
            out.record("gelu", self, savesInput: true) { g, node in
                let x = node.saved(0)
                return InputGradients(try g.multiplying(x.normalCDF().adding(x.multiplying(x.normalPDF()))))
            }
        }
        return out
    }

    /// Φ(x) = erfc(-x/√2) / 2, differentiable (its derivative is φ). The erfc form keeps full
    /// relative accuracy in the lower tail, where 1 + erf(x/√2) cancels to 0.
    func normalCDF() throws -> Tensor {
        let out = try mapped("normal_cdf", { Tensor.normalCDF($0) }, { Tensor.normalCDF($0) })
        if Tensor.shouldRecord(self) {
            out.record("normal_cdf", self, savesInput: true) { g, node in InputGradients(try g.multiplying(node.saved(0).normalPDF())) }
        }
        return out
    }

    /// φ(x) = e^(-x²/2) / √(2π), written with differentiable ops.
    func normalPDF() throws -> Tensor {
        try multiplying(self).multiplying(constant(-0.5)).exp().multiplying(constant(0.3989422804014327))
    }

    @inline(__always)
    static func normalCDF<T: TensorElement>(_ x: T) -> T {
        T.erfc(-x * T(0.7071067811865476)) / 2
    }
}
