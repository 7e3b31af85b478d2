import AutogradEngine

// Initialisers and optimizers.

@_cdecl("ag_tensor_init")
public func ag_tensor_init(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64,
                           _ kind: Int32, _ seed: UInt64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_init", out) {
        let dims = try Arg.shape(shape, ndim)
        let dt = try Arg.dtype(dtype)
        guard let k = Initializer.Kind(rawValue: kind) else {
            throw AutogradError.argument("unknown initialiser kind \(kind) (use AG_INIT_*)")
        }
        return try Initializer.make(k, shape: dims, seed: seed, dtype: dt)
    }
}

extension Arg {
    static func optimizer(_ handle: UInt64) throws -> Optimizer {
        guard let o = HandleTable.shared.lookup(handle, kind: .optimizer) as? Optimizer else {
            throw InvalidHandle(message: "optimizer handle 0x\(String(handle, radix: 16)) is not a live optimizer handle (freed, made up, or of another kind)")
        }
        return o
    }
}

/// Stores a new optimizer's handle in `out` (checked first).
private func produceOptimizer(_ function: StaticString, _ out: UnsafeMutablePointer<UInt64>?, _ body: () throws -> Optimizer) -> Int32 {
    guarded(function) {
        let out = try Arg.out(out)
        out.pointee = try HandleTable.shared.insert(body(), kind: .optimizer)
    }
}

@_cdecl("ag_optimizer_sgd")
public func ag_optimizer_sgd(_ out: UnsafeMutablePointer<UInt64>?, _ params: UnsafePointer<UInt64>?, _ n: Int64,
                             _ lr: Double, _ momentum: Double, _ nesterov: UInt8, _ weightDecay: Double) -> Int32 {
    produceOptimizer("ag_optimizer_sgd", out) {
        try SGD(parameters: Arg.tensorList(params, n, "params"), learningRate: lr, momentum: momentum, nesterov: nesterov != 0, weightDecay: weightDecay)
    }
}

@_cdecl("ag_optimizer_adam")
public func ag_optimizer_adam(_ out: UnsafeMutablePointer<UInt64>?, _ params: UnsafePointer<UInt64>?, _ n: Int64,
                              _ lr: Double, _ beta1: Double, _ beta2: Double, _ eps: Double, _ weightDecay: Double) -> Int32 {
    produceOptimizer("ag_optimizer_adam", out) {
        try Adam(parameters: Arg.tensorList(params, n, "params"), learningRate: lr, beta1: beta1, beta2: beta2, epsilon: eps, weightDecay: weightDecay)
    }
}

@_cdecl("ag_optimizer_adamw")
public func ag_optimizer_adamw(_ out: UnsafeMutablePointer<UInt64>?, _ params: UnsafePointer<UInt64>?, _ n: Int64,
                               _ lr: Double, _ beta1: Double, _ beta2: Double, _ eps: Double, _ weightDecay: Double) -> Int32 {
    produceOptimizer("ag_optimizer_adamw", out) {
        try Adam.adamW(parameters: Arg.tensorList(params, n, "params"), learningRate: lr, beta1: beta1, beta2: beta2, epsilon: eps, weightDecay: weightDecay)
    }
}

@_cdecl("ag_optimizer_step")
public func ag_optimizer_step(_ opt: UInt64) -> Int32 {
    guarded("ag_optimizer_step") { try Arg.optimizer(opt).step() }
}

@_cdecl("ag_optimizer_zero_grad")
public func ag_optimizer_zero_grad(_ opt: UInt64) -> Int32 {
    guarded("ag_optimizer_zero_grad") { try Arg.optimizer(opt).zeroGrad() }
}

@_cdecl("ag_optimizer_set_lr")
public func ag_optimizer_set_lr(_ opt: UInt64, _ lr: Double) -> Int32 {
    guarded("ag_optimizer_set_lr") {
        let o = try Arg.optimizer(opt)
        guard lr.isFinite && lr >= 0 else { throw AutogradError.argument("the learning rate must be finite and >= 0, got \(lr)") }
        o.learningRate = lr
    }
}

@_cdecl("ag_optimizer_lr")
public func ag_optimizer_lr(_ out: UnsafeMutablePointer<Double>?, _ opt: UInt64) -> Int32 {
    guarded("ag_optimizer_lr") {
        let out = try Arg.out(out)
        out.pointee = try Arg.optimizer(opt).learningRate
    }
}

@_cdecl("ag_optimizer_free")
public func ag_optimizer_free(_ opt: UInt64) -> Int32 {
    if opt == 0 { return Status.ok.rawValue }
    guard HandleTable.shared.remove(opt, kind: .optimizer) else {
        return fail(.invalidHandle, "ag_optimizer_free: handle 0x\(String(opt, radix: 16)) is not a live optimizer handle (already freed, made up, or of another kind)")
    }
    return Status.ok.rawValue
}
