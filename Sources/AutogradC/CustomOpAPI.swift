import AutogradEngine

// User-defined differentiable ops: C callbacks behind a CustomOp.

public typealias CCustomForward = @convention(c) (UnsafeMutablePointer<UInt64>?, Int64, UnsafePointer<UInt64>?, Int64, UInt64, UnsafeMutableRawPointer?) -> Int32
public typealias CCustomBackward = @convention(c) (UnsafeMutablePointer<UInt64>?, Int64, UnsafePointer<UInt64>?, Int64, UInt64, UnsafeMutableRawPointer?) -> Int32
public typealias CCustomJVP = @convention(c) (UnsafeMutablePointer<UInt64>?, Int64, UnsafePointer<UInt64>?, UnsafePointer<UInt64>?, Int64, UInt64, UnsafeMutableRawPointer?) -> Int32

extension Arg {
    static func customOp(_ handle: UInt64) throws -> CustomOp {
        guard handle != 0 else { throw InvalidHandle(message: "custom op handle is 0 (AG_NULL_CUSTOM_OP)") }
        guard let object = HandleTable.shared.lookup(handle, kind: .customOp) else {
            throw InvalidHandle(message: "custom op handle 0x\(String(handle, radix: 16)) is not a live custom op handle (freed, made up, or of another kind)")
        }
        return unsafeDowncast(object, to: CustomOp.self)  // only CustomOps are stored under .customOp
    }

    static func context(_ handle: UInt64) throws -> CustomOpContext {
        guard handle != 0, let object = HandleTable.shared.lookup(handle, kind: .context) else {
            throw InvalidHandle(message: "context handle 0x\(String(handle, radix: 16)) is not a live context (a context is valid only during the callback it was passed to)")
        }
        return unsafeDowncast(object, to: CustomOpContext.self)  // only contexts are stored under .context
    }
}

/// One call of a C callback that reads borrowed tensor handles and writes `count` handles the
/// library takes over: the handles made for it and those it wrote are released whatever
/// happens; each broken contract is AutogradError.callback, its message starting with `who`.
/// `optional`: a 0 written (nothing) is allowed and read as nil. `names` names each group of
/// borrowed handles for messages, `positions` (if given) each handle's index in what the
/// callback sees (a group passed with gaps: the JVP's tangents), `written` the array it writes.
/// (The capture function's call uses it too; a build function's, of one output, has its own.)
func callWithHandles(_ who: String, borrowing groups: [[Tensor]], names: [String], positions: [[Int]]? = nil,
                     writes count: Int, into written: String, optional: Bool,
                     _ call: (UnsafeMutablePointer<UInt64>?, [UnsafePointer<UInt64>?]) -> Int32) throws -> [Tensor?] {
    var made: [[UInt64]] = []
    defer { for hs in made { for h in hs { _ = HandleTable.shared.remove(h, kind: .tensor) } } }
    for g in groups { made.append(try Arg.handles(g)) }
    let borrowed = made.flatMap { $0 }
    var outs = [UInt64](repeating: 0, count: count)
    let failuresBefore = LastError.failures
    let status = outs.withUnsafeMutableBufferPointer { o in
        withPointers(made) { call(o.baseAddress, $0) }
    }
    // What it wrote that is a live tensor, taken before the borrowed handles go (it may be one).
    let results: [Tensor?] = outs.map { h in
        guard status == 0, h != 0, let object = HandleTable.shared.lookup(h, kind: .tensor) else { return nil }
        return unsafeDowncast(object, to: Tensor.self)  // only Tensors are stored under .tensor
    }
    var freed: String? = nil
    for (g, hs) in made.enumerated() {
        for (k, h) in hs.enumerated() where !HandleTable.shared.remove(h, kind: .tensor) {
            if freed == nil { freed = "\(names[g])[\(positions?[g][k] ?? k)]" }
        }
    }
    made = []
    var released = Set(borrowed)
    for h in outs where h != 0 && released.insert(h).inserted { _ = HandleTable.shared.remove(h, kind: .tensor) }

    guard status == 0 else {
        let inner = LastError.since(failuresBefore).map { " (its last error: \($0))" } ?? ""
        throw AutogradError.callback("\(who) returned \(status)" + inner)
    }
    if let which = freed {
        throw AutogradError.callback("\(who) freed \(which), a tensor handle it was given (borrowed: the library's, do not free it)")
    }
    return try results.enumerated().map { k, t in
        if t == nil && outs[k] == 0 {
            if optional { return nil }
            throw AutogradError.callback("\(who) returned 0 (success) but wrote no tensor handle to \(written)[\(k)]")
        }
        guard let t else {
            throw AutogradError.callback("\(who) wrote 0x\(String(outs[k], radix: 16)) to \(written)[\(k)], which is not a live tensor handle (freed, made up, or of another kind)")
        }
        return t
    }
}

/// "1 input", "2 inputs".
func counted(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

/// The base addresses of `arrays`, valid during `body`.
private func withPointers<R>(_ arrays: [[UInt64]], _ body: ([UnsafePointer<UInt64>?]) -> R) -> R {
    var pointers: [UnsafePointer<UInt64>?] = []
    func nest(_ i: Int) -> R {
        if i == arrays.count { return body(pointers) }
        return arrays[i].withUnsafeBufferPointer { b in
            pointers.append(b.baseAddress)
            return nest(i + 1)
        }
    }
    return nest(0)
}

/// A handle for `context` during `body` (the callback), released after.
private func withContextHandle<R>(_ context: CustomOpContext, _ body: (UInt64) throws -> R) throws -> R {
    let h = try HandleTable.shared.insert(context, kind: .context)
    defer { _ = HandleTable.shared.remove(h, kind: .context) }
    return try body(h)
}

@_cdecl("ag_custom_op_new")
public func ag_custom_op_new(_ out: UnsafeMutablePointer<UInt64>?, _ name: UnsafePointer<CChar>?, _ ninputs: Int64, _ noutputs: Int64,
                             _ forward: CCustomForward?, _ backward: CCustomBackward?, _ jvp: CCustomJVP?,
                             _ payload: UnsafeMutableRawPointer?, _ destroy: CDestroy?) -> Int32 {
    guarded("ag_custom_op_new") {
        let out = try Arg.out(out)
        guard let name else { throw AutogradError.argument("name is NULL") }
        guard let forward else { throw AutogradError.argument("forward is NULL") }
        let limit = Int64(CustomOp.maximumArity)
        guard ninputs >= 1 && ninputs <= limit else { throw AutogradError.argument("ninputs \(ninputs) is outside 1...\(limit)") }
        guard noutputs >= 1 && noutputs <= limit else { throw AutogradError.argument("noutputs \(noutputs) is outside 1...\(limit)") }
        let opName = String(cString: name)
        let data = CUserData(payload, destroy: destroy)
        let (n, m) = (Int(ninputs), Int(noutputs))
        do {
            let op = try CustomOp(name: opName, inputs: n, outputs: m, forward: { context, inputs in
                try withContextHandle(context) { ctx in
                    try callWithHandles("custom op '\(opName)': the forward", borrowing: [inputs], names: ["inputs"], writes: m, into: "outputs", optional: false) { o, ins in
                        forward(o, Int64(m), ins[0], Int64(n), ctx, data.pointer)
                    }.map { $0! }  // never nil: without `optional`, a missing output throws above
                }
            }, backward: backward.map { backward in { context, grads in
                try withContextHandle(context) { ctx in
                    try callWithHandles("custom op '\(opName)': the backward", borrowing: [grads], names: ["output_grads"], writes: n, into: "input_grads", optional: true) { o, ins in
                        backward(o, Int64(n), ins[0], Int64(m), ctx, data.pointer)
                    }
                }
            } }, jvp: jvp.map { jvp in { context, inputs, tangents in
                // Inputs without a tangent are passed as AG_NULL_TENSOR.
                let present = tangents.compactMap { $0 }
                let tangentPositions = tangents.indices.filter { tangents[$0] != nil }
                return try withContextHandle(context) { ctx in
                    try callWithHandles("custom op '\(opName)': the JVP", borrowing: [inputs, present], names: ["inputs", "input_tangents"],
                                        positions: [Array(inputs.indices), tangentPositions], writes: m, into: "output_tangents",
                                        optional: true) { o, ins in
                        var j = 0
                        let full: [UInt64] = tangents.map { t in
                            guard t != nil, let p = ins[1] else { return 0 }
                            defer { j += 1 }
                            return p[j]
                        }
                        return full.withUnsafeBufferPointer { jvp(o, Int64(m), ins[0], $0.baseAddress, Int64(n), ctx, data.pointer) }
                    }
                }
            } })
            out.pointee = try HandleTable.shared.insert(op, kind: .customOp)
        } catch {
            // On failure the caller keeps the payload: destroy must not run.
            data.disown()
            throw error
        }
    }
}

@_cdecl("ag_custom_op_apply")
public func ag_custom_op_apply(_ outputs: UnsafeMutablePointer<UInt64>?, _ noutputs: Int64, _ op: UInt64,
                               _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64) -> Int32 {
    guarded("ag_custom_op_apply") {
        let out = try Arg.out(outputs, "outputs")
        let f = try Arg.customOp(op)
        guard noutputs == Int64(f.outputCount) else {
            throw AutogradError.argument("noutputs is \(noutputs), custom op '\(f.name)' has \(counted(f.outputCount, "output"))")
        }
        guard ninputs == Int64(f.inputCount) else {
            throw AutogradError.argument("ninputs is \(ninputs), custom op '\(f.name)' takes \(counted(f.inputCount, "input"))")
        }
        let xs = try Arg.tensorList(inputs, ninputs, "inputs", count: "ninputs")
        try MemoryReserve.ensureArmed()
        for (k, h) in try Arg.handles(f.apply(xs)).enumerated() { out[k] = h }
    }
}

@_cdecl("ag_custom_op_free")
public func ag_custom_op_free(_ op: UInt64) -> Int32 {
    guarded("ag_custom_op_free") {
        if op == 0 { return }
        guard HandleTable.shared.remove(op, kind: .customOp) else {
            throw InvalidHandle(message: "custom op handle 0x\(String(op, radix: 16)) is not a live custom op handle (already freed, made up, or of another kind)")
        }
    }
}

@_cdecl("ag_custom_ctx_save")
public func ag_custom_ctx_save(_ ctx: UInt64, _ tensors: UnsafePointer<UInt64>?, _ n: Int64) -> Int32 {
    guarded("ag_custom_ctx_save") {
        let context = try Arg.context(ctx)
        try context.save(try Arg.tensorList(tensors, n, "tensors", count: "n"))
    }
}

@_cdecl("ag_custom_ctx_saved_count")
public func ag_custom_ctx_saved_count(_ out: UnsafeMutablePointer<Int64>?, _ ctx: UInt64) -> Int32 {
    guarded("ag_custom_ctx_saved_count") {
        let out = try Arg.out(out)
        out.pointee = Int64(try Arg.context(ctx).saved().count)
    }
}

@_cdecl("ag_custom_ctx_saved")
public func ag_custom_ctx_saved(_ out: UnsafeMutablePointer<UInt64>?, _ ctx: UInt64, _ index: Int64) -> Int32 {
    guarded("ag_custom_ctx_saved") {
        let out = try Arg.out(out)
        let saved = try Arg.context(ctx).saved()
        guard index >= 0 && index < Int64(saved.count) else {
            throw AutogradError.argument("index \(index) is out of range: the forward saved \(counted(saved.count, "tensor"))")
        }
        out.pointee = try Arg.handle(saved[Int(index)])
    }
}

@_cdecl("ag_custom_ctx_needs_input_grad")
public func ag_custom_ctx_needs_input_grad(_ out: UnsafeMutablePointer<Bool>?, _ ctx: UInt64, _ index: Int64) -> Int32 {
    guarded("ag_custom_ctx_needs_input_grad") {
        let out = try Arg.out(out)
        out.pointee = try Arg.context(ctx).needsInputGradient(Int(clamping: index))
    }
}

@_cdecl("ag_custom_ctx_set_state")
public func ag_custom_ctx_set_state(_ ctx: UInt64, _ state: UnsafeMutableRawPointer?, _ destroy: CDestroy?) -> Int32 {
    guarded("ag_custom_ctx_set_state") {
        let context = try Arg.context(ctx)
        let data = CUserData(state, destroy: destroy)
        do {
            try context.setState(data)
        } catch {
            // On failure the caller keeps the state: destroy must not run.
            data.disown()
            throw error
        }
    }
}

@_cdecl("ag_custom_ctx_state")
public func ag_custom_ctx_state(_ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ ctx: UInt64) -> Int32 {
    guarded("ag_custom_ctx_state") {
        let out = try Arg.out(out)
        let state = try Arg.context(ctx).state()
        // A state set through this interface is a CUserData; one a Swift op set is not C's to read.
        out.pointee = (state as? CUserData)?.pointer
    }
}
