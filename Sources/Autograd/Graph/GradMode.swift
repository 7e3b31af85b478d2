#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per-thread state of the engine: whether operations record graph nodes, and which forward-mode
/// pass (jvp) is running.
final class ThreadState {
    var gradEnabled = true
    /// The level of the forward-mode pass whose tangents ops propagate on this thread; 0 when
    /// none runs, and while a tangent itself is being computed (see ForwardMode).
    var forwardLevel: UInt64 = 0
    /// The capture recording this thread's ops, if one runs (see Trace, CapturedFunction).
    var recorder: TraceRecorder?
    /// Whether recorded ops keep their forward for Recompute (ag_set_recomputable).
    var recomputable = false
    /// Custom-op callbacks running on this thread, nested (see CustomOp.userCall).
    var customOpDepth = 0
    /// Backward passes running on this thread, nested (one started by a hook or a custom op's
    /// backward inside another; see Backward.run).
    var backwardDepth = 0

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { box in
            if let box { Unmanaged<ThreadState>.fromOpaque(box).release() }
        }
        return key
    }()

    /// This thread's state, borrowed for `body`: no reference counting on the per-op path (the
    /// thread-specific slot holds the state, retained, until the thread exits, and only this
    /// thread reads its slot, so the state outlives `body`).
    @inline(__always)
    static func withCurrent<R>(_ body: (ThreadState) throws -> R) rethrows -> R {
        if let p = pthread_getspecific(key) {
            return try Unmanaged<ThreadState>.fromOpaque(p)._withUnsafeGuaranteedRef(body)
        }
        return try body(current)
    }

    /// This thread's state, created on first use and released when the thread exits.
    static var current: ThreadState {
        if let p = pthread_getspecific(key) {
            return Unmanaged<ThreadState>.fromOpaque(p).takeUnretainedValue()
        }
        let state = ThreadState()
        pthread_setspecific(key, Unmanaged.passRetained(state).toOpaque())
        return state
    }
}

/// Grad mode: when disabled on a thread, operations on that thread record nothing.
public enum GradMode {
    public static var isEnabled: Bool {
        get { ThreadState.withCurrent { $0.gradEnabled } }
        set { ThreadState.current.gradEnabled = newValue }
    }

    /// Runs `body` with grad mode set to `enabled`, restoring the previous mode afterwards.
    public static func with<R>(enabled: Bool, _ body: () throws -> R) rethrows -> R {
        let state = ThreadState.current
        let previous = state.gradEnabled
        state.gradEnabled = enabled
        defer { state.gradEnabled = previous }
        return try body()
    }
}

/// Runs `body` without recording any graph (PyTorch's `torch.no_grad()`).
public func withNoGrad<R>(_ body: () throws -> R) rethrows -> R {
    try GradMode.with(enabled: false, body)
}
