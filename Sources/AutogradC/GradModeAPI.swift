import AutogradEngine

// Grad mode, detach and gradient hooks.

public typealias CGradHook = @convention(c) (UnsafeMutablePointer<UInt64>?, UInt64, UnsafeMutableRawPointer?) -> Int32
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

public typealias CGradReadyHook = @convention(c) (UInt64, UnsafeMutableRawPointer?) -> Int32

@_cdecl("ag_tensor_register_post_accumulate_grad_hook")
public func ag_tensor_register_post_accumulate_grad_hook(_ outId: UnsafeMutablePointer<Int64>?, _ t: UInt64, _ hook: CGradReadyHook?,
                                                         _ userData: UnsafeMutableRawPointer?, _ destroy: CDestroy?) -> Int32 {
    guarded("ag_tensor_register_post_accumulate_grad_hook") {
        guard let hook else { throw AutogradError.argument("hook is NULL") }
        let tensor = try Arg.tensor(t)
        let id = HandleTable.shared.nextId()
        let context = CUserData(userData, destroy: destroy)
        do {
            // requires_grad and leafness are checked under the graph lock, by the engine.
            try tensor.registerPostAccumulateGradHook(GradReadyHook(id: id) { leaf in
                let lh = try Arg.handle(leaf)
                defer { _ = HandleTable.shared.remove(lh, kind: .tensor) }
                let failuresBefore = LastError.failures
                let status = hook(lh, context.pointer)
                guard status == 0 else {
                    let inner = LastError.since(failuresBefore).map { " (its last error: \($0))" } ?? ""
                    throw AutogradError.callback("post-accumulate-grad hook \(id) returned \(status)" + inner)
                }
            })
        } catch {
            // As in ag_tensor_register_hook: on failure the caller keeps user_data.
            context.disown()
            throw error
        }
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
