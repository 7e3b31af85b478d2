import AutogradEngine

// Integer tensors, masks and random generators (the header's section of that name).

extension Arg {
    static func generator(_ handle: UInt64, _ what: String = "generator") throws -> Generator {
        guard handle != 0 else { throw InvalidHandle(message: "\(what) handle is 0") }
        guard let object = HandleTable.shared.lookup(handle, kind: .generator) else {
            throw InvalidHandle(message: "\(what) handle 0x\(String(handle, radix: 16)) is not a live generator handle (freed, made up, or of another kind)")
        }
        // Only Generator objects are ever stored under the generator kind.
        return unsafeDowncast(object, to: Generator.self)
    }
}

@_cdecl("ag_to_dtype")
public func ag_to_dtype(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ dtype: Int32) -> Int32 {
    produce("ag_to_dtype", out) { try Arg.tensor(a, "a").to(Arg.dtype(dtype)) }
}

@_cdecl("ag_argmax")
public func ag_argmax(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_argmax", out) { try Arg.tensor(a, "a").argmax(axis: Int(axis), keepDims: keepdims != 0) }
}

@_cdecl("ag_argmin")
public func ag_argmin(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axis: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_argmin", out) { try Arg.tensor(a, "a").argmin(axis: Int(axis), keepDims: keepdims != 0) }
}

@_cdecl("ag_topk")
public func ag_topk(_ values: UnsafeMutablePointer<UInt64>?, _ indices: UnsafeMutablePointer<UInt64>?, _ a: UInt64,
                    _ k: Int64, _ axis: Int64, _ largest: UInt8) -> Int32 {
    guarded("ag_topk") {
        let (v, i) = (try Arg.out(values, "values"), try Arg.out(indices, "indices"))
        try MemoryReserve.ensureArmed()
        let r = try Arg.tensor(a, "a").topk(Int(k), axis: Int(axis), largest: largest != 0)
        let handles = try Arg.handles([r.values, r.indices])
        v.pointee = handles[0]
        i.pointee = handles[1]
    }
}

@_cdecl("ag_one_hot")
public func ag_one_hot(_ out: UnsafeMutablePointer<UInt64>?, _ indices: UInt64, _ classes: Int64, _ dtype: Int32) -> Int32 {
    produce("ag_one_hot", out) { try Arg.tensor(indices, "indices").oneHot(classes: Int(classes), dtype: Arg.dtype(dtype)) }
}

@_cdecl("ag_embedding")
public func ag_embedding(_ out: UnsafeMutablePointer<UInt64>?, _ indices: UInt64, _ weight: UInt64) -> Int32 {
    produce("ag_embedding", out) { try Tensor.embedding(Arg.tensor(indices, "indices"), weight: Arg.tensor(weight, "weight")) }
}

@_cdecl("ag_masked_fill")
public func ag_masked_fill(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ mask: UInt64, _ value: Double) -> Int32 {
    produce("ag_masked_fill", out) { try Arg.tensor(a, "a").maskedFill(Arg.tensor(mask, "mask"), value) }
}

@_cdecl("ag_logical_not")
public func ag_logical_not(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_logical_not", out) { try Arg.tensor(a, "a").logicalNot() }
}

@_cdecl("ag_logical_and")
public func ag_logical_and(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_logical_and", out) { let (a, b) = try Arg.tensors(a, b); return try a.logicalAnd(b) }
}

@_cdecl("ag_logical_or")
public func ag_logical_or(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_logical_or", out) { let (a, b) = try Arg.tensors(a, b); return try a.logicalOr(b) }
}

@_cdecl("ag_cross_entropy_labels")
public func ag_cross_entropy_labels(_ out: UnsafeMutablePointer<UInt64>?, _ logits: UInt64, _ labels: UInt64) -> Int32 {
    produce("ag_cross_entropy_labels", out) { try Arg.tensor(logits, "logits").crossEntropy(labels: Arg.tensor(labels, "labels")) }
}

// MARK: - Generators

@_cdecl("ag_generator_new")
public func ag_generator_new(_ out: UnsafeMutablePointer<UInt64>?, _ seed: UInt64) -> Int32 {
    guarded("ag_generator_new") {
        let out = try Arg.out(out)
        out.pointee = try HandleTable.shared.insert(Generator(seed: seed), kind: .generator)
    }
}

@_cdecl("ag_generator_free")
public func ag_generator_free(_ g: UInt64) -> Int32 {
    if g == 0 { return Status.ok.rawValue }
    guard HandleTable.shared.remove(g, kind: .generator) else {
        return fail(.invalidHandle, "ag_generator_free: handle 0x\(String(g, radix: 16)) is not a live generator handle (already freed, made up, or of another kind)")
    }
    return Status.ok.rawValue
}

@_cdecl("ag_generator_get_state")
public func ag_generator_get_state(_ out: UnsafeMutablePointer<UInt64>?, _ g: UInt64) -> Int32 {
    guarded("ag_generator_get_state") {
        let out = try Arg.out(out)
        out.pointee = try Arg.generator(g).state
    }
}

@_cdecl("ag_generator_set_state")
public func ag_generator_set_state(_ g: UInt64, _ state: UInt64) -> Int32 {
    guarded("ag_generator_set_state") { try Arg.generator(g).state = state }
}

@_cdecl("ag_random_uniform")
public func ag_random_uniform(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64,
                              _ low: Double, _ high: Double, _ g: UInt64, _ dtype: Int32) -> Int32 {
    produce("ag_random_uniform", out) {
        try Tensor.uniform(Arg.shape(shape, ndim), low: low, high: high, generator: Arg.generator(g), dtype: Arg.dtype(dtype))
    }
}

@_cdecl("ag_random_normal")
public func ag_random_normal(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64,
                             _ mean: Double, _ std: Double, _ g: UInt64, _ dtype: Int32) -> Int32 {
    produce("ag_random_normal", out) {
        try Tensor.normal(Arg.shape(shape, ndim), mean: mean, std: std, generator: Arg.generator(g), dtype: Arg.dtype(dtype))
    }
}

@_cdecl("ag_randint")
public func ag_randint(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64,
                       _ low: Int64, _ high: Int64, _ g: UInt64) -> Int32 {
    produce("ag_randint", out) { try Tensor.randint(Arg.shape(shape, ndim), low: Int(low), high: Int(high), generator: Arg.generator(g)) }
}

@_cdecl("ag_randperm")
public func ag_randperm(_ out: UnsafeMutablePointer<UInt64>?, _ n: Int64, _ g: UInt64) -> Int32 {
    produce("ag_randperm", out) {
        guard n <= 1 << 40 else { throw AutogradError.argument("randperm: n = \(n) is more than the 2^40 allowed") }
        return try Tensor.randperm(Int(n), generator: Arg.generator(g))
    }
}

@_cdecl("ag_dropout")
public func ag_dropout(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ p: Double, _ training: UInt8, _ g: UInt64) -> Int32 {
    produce("ag_dropout", out) { try Arg.tensor(a, "a").dropout(p: p, training: training != 0, generator: Arg.generator(g)) }
}

@_cdecl("ag_multinomial")
public func ag_multinomial(_ out: UnsafeMutablePointer<UInt64>?, _ weights: UInt64, _ samples: Int64, _ replacement: UInt8, _ g: UInt64) -> Int32 {
    produce("ag_multinomial", out) {
        try Arg.tensor(weights, "weights").multinomial(samples: Int(samples), replacement: replacement != 0, generator: Arg.generator(g))
    }
}
