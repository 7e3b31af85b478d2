#if canImport(Glibc)
import Glibc
#endif
import Autograd

// Functional grad, grad mode, detach, hooks, gradcheck and DOT export.

public typealias CGradHook = @convention(c) (UnsafeMutablePointer<UInt64>?, UInt64, UnsafeMutableRawPointer?) -> Int32
public typealias CBuildFunction = @convention(c) (UnsafeMutablePointer<UInt64>?, UnsafePointer<UInt64>?, Int64, UnsafeMutableRawPointer?) -> Int32
public typealias CDestroy = @convention(c) (UnsafeMutableRawPointer?) -> Void

/// A C callback's user data, whose destructor runs when the last closure holding it is gone,
/// but only once the library owns it: a registration that fails calls `disown()` first, so the
/// caller, who keeps ownership on failure, is never handed a destroyed pointer.
final class CUserData {
    let pointer: UnsafeMutableRawPointer?
    private var destroy: CDestroy?
    init(_ pointer: UnsafeMutableRawPointer?, destroy: CDestroy?) {
        self.pointer = pointer
        self.destroy = destroy
    }
    /// Gives the user data back to the caller: the destructor will not run.
    func disown() { destroy = nil }
    deinit { destroy?(pointer) }
}

@_cdecl("ag_grad")
public func ag_grad(_ outGrads: UnsafeMutablePointer<UInt64>?, _ outputs: UnsafePointer<UInt64>?, _ noutputs: Int64,
                    _ seeds: UnsafePointer<UInt64>?, _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64,
                    _ retainGraph: UInt8, _ createGraph: UInt8, _ allowUnused: UInt8) -> Int32 {
    guarded("ag_grad") {
        let out = try Arg.out(outGrads, "out_grads")
        let outs = try Arg.tensorList(outputs, noutputs, "outputs", count: "noutputs")
        let ins = try Arg.tensorList(inputs, ninputs, "inputs", count: "ninputs")
        var seedList: [Tensor?]? = nil
        if let seeds {
            seedList = try (0..<outs.count).map { seeds[$0] == 0 ? nil : try Arg.tensor(seeds[$0], "seeds[\($0)]") }
        }
        let grads = try Tensor.gradients(of: outs, withRespectTo: ins, seeds: seedList, retainGraph: retainGraph != 0,
                                         createGraph: createGraph != 0, allowUnused: allowUnused != 0)
        // Make every handle first, so a failure leaves nothing half-written.
        var handles: [UInt64] = []
        do {
            for g in grads { handles.append(try g.map(Arg.handle) ?? 0) }
        } catch {
            for h in handles where h != 0 { _ = HandleTable.shared.remove(h, kind: .tensor) }
            throw error
        }
        for (k, h) in handles.enumerated() { out[k] = h }
    }
}

@_cdecl("ag_set_grad_enabled")
public func ag_set_grad_enabled(_ previous: UnsafeMutablePointer<Bool>?, _ enabled: UInt8) -> Int32 {
    previous?.pointee = GradMode.isEnabled
    GradMode.isEnabled = enabled != 0
    return Status.ok.rawValue
}

@_cdecl("ag_is_grad_enabled")
public func ag_is_grad_enabled(_ out: UnsafeMutablePointer<Bool>?) -> Int32 {
    guarded("ag_is_grad_enabled") { try Arg.out(out).pointee = GradMode.isEnabled }
}

@_cdecl("ag_detach")
public func ag_detach(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_detach", out) { try Arg.tensor(a, "a").detach() }
}

@_cdecl("ag_tensor_register_hook")
public func ag_tensor_register_hook(_ outId: UnsafeMutablePointer<Int64>?, _ t: UInt64, _ hook: CGradHook?,
                                    _ userData: UnsafeMutableRawPointer?, _ destroy: CDestroy?) -> Int32 {
    guarded("ag_tensor_register_hook") {
        guard let hook else { throw AutogradError.argument("hook is NULL") }
        let tensor = try Arg.tensor(t)
        let id = HandleTable.shared.nextId()
        let context = CUserData(userData, destroy: destroy)
        do {
            // requires_grad is checked here, under the graph lock, and only here: another thread
            // may turn it off at any moment, so a check before this call would prove nothing.
            // Its state error (the only one registerHook throws) gets the catalogue's wording below.
            try tensor.registerHook(GradHook(id: id) { g in
                let gh = try Arg.handle(g)
                defer { _ = HandleTable.shared.remove(gh, kind: .tensor) }
                var replacement: UInt64 = 0
                let failuresBefore = LastError.failures
                let status = hook(&replacement, gh, context.pointer)
                guard status == 0 else {
                    if replacement != 0 { _ = HandleTable.shared.remove(replacement, kind: .tensor) }
                    let inner = LastError.since(failuresBefore).map { " (its last error: \($0))" } ?? ""
                    throw AutogradError.callback("gradient hook \(id) returned \(status)" + inner)
                }
                if replacement == 0 { return nil }
                let r = try Arg.tensor(replacement, "replacement")
                _ = HandleTable.shared.remove(replacement, kind: .tensor)
                return r
            })
        } catch {
            // On any failure the caller keeps user_data: the hook closure (and context with it)
            // is released as this scope ends, and must not call destroy.
            context.disown()
            if case AutogradError.state = error {
                throw AutogradError.state("the tensor does not require grad, so no gradient will flow into it")
            }
            throw error
        }
        // From here on the user data belongs to the hook (destroy runs when it goes).
        outId?.pointee = Int64(id)
    }
}

@_cdecl("ag_tensor_remove_hook")
public func ag_tensor_remove_hook(_ t: UInt64, _ id: Int64) -> Int32 {
    guarded("ag_tensor_remove_hook") {
        guard try Arg.tensor(t).removeHook(id: Int(id)) else {
            throw AutogradError.argument("no hook with id \(id) is registered on this tensor")
        }
    }
}

@_cdecl("ag_gradcheck")
public func ag_gradcheck(_ passed: UnsafeMutablePointer<Bool>?, _ worstInput: UnsafeMutablePointer<Int64>?,
                         _ worstIndex: UnsafeMutablePointer<Int64>?, _ worstAnalytic: UnsafeMutablePointer<Double>?,
                         _ worstNumeric: UnsafeMutablePointer<Double>?, _ build: CBuildFunction?, _ userData: UnsafeMutableRawPointer?,
                         _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64, _ eps: Double, _ atol: Double, _ rtol: Double) -> Int32 {
    guarded("ag_gradcheck") {
        let passedOut = try Arg.out(passed, "passed")
        let fn = try BuildFunction(build, userData)
        guard eps > 0 && eps.isFinite else { throw AutogradError.argument("eps must be positive and finite, got \(eps)") }
        guard atol >= 0 && rtol >= 0 else { throw AutogradError.argument("atol and rtol must not be negative (got \(atol), \(rtol))") }
        let xs = try Arg.tensorList(inputs, ninputs, "inputs", count: "ninputs")
        let result = try BuildFunction.nested("ag_gradcheck") {
            try GradCheck.check(xs, eps: eps, atol: atol, rtol: rtol) { ts in try fn(ts) }
        }
        passedOut.pointee = result.passed
        worstInput?.pointee = Int64(result.worstInput)
        worstIndex?.pointee = Int64(result.worstIndex)
        worstAnalytic?.pointee = result.analytic
        worstNumeric?.pointee = result.numeric
    }
}

@_cdecl("ag_graph_to_dot")
public func ag_graph_to_dot(_ out: UnsafeMutablePointer<CChar>?, _ capacity: Int64, _ length: UnsafeMutablePointer<Int64>?, _ root: UInt64) -> Int32 {
    guarded("ag_graph_to_dot") {
        let lengthOut = try Arg.out(length, "length")
        guard capacity >= 0 else { throw AutogradError.argument("capacity \(capacity) is negative") }
        guard out != nil || capacity == 0 else { throw AutogradError.argument("out is NULL but capacity is \(capacity)") }
        let dot = Array(try Arg.tensor(root, "root").graphDOT().utf8)
        if let out, capacity > 0 {
            let n = min(dot.count, Int(capacity) - 1)
            dot.withUnsafeBufferPointer { src in
                UnsafeMutableRawPointer(out).copyMemory(from: src.baseAddress!, byteCount: n)
            }
            out[n] = 0
        }
        lengthOut.pointee = Int64(dot.count)
    }
}
