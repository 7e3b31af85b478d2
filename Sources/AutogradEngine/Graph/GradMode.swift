import Synchronization
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

/// Grad mode: when disabled, operations record nothing. Synchronous scopes (and the C API) set
/// it per thread; an async scope binds it to the task, so it holds across `await` on whatever
/// thread the task resumes, and in the child tasks the scope starts.
public enum GradMode {
    /// The mode bound to the current task by the innermost scope inside an async one; nil
    /// elsewhere.
    @TaskLocal static var taskBinding: Bool?
    /// Set (for good) by the first async scope: until then no task has a binding, and the per-op
    /// test reads only the thread's flag. Sticky rather than a count of open scopes: an
    /// unstructured task started inside a scope inherits its binding and may outlive it.
    private static let taskBindingsUsed = Atomic<Bool>(false)

    /// Whether operations on this thread (in this task, inside an async scope) record graphs.
    /// Setting it changes the thread's mode; inside an async scope use `with` instead.
    public static var isEnabled: Bool {
        get {
            if taskBindingsUsed.load(ordering: .relaxed), let bound = taskBinding { return bound }
            return ThreadState.withCurrent { $0.gradEnabled }
        }
        set { ThreadState.current.gradEnabled = newValue }
    }

    /// Runs `body` with grad mode set to `enabled`, restoring the previous mode afterwards.
    public static func with<R>(enabled: Bool, _ body: () throws -> R) rethrows -> R {
        // Inside an async scope the task's binding decides, so a nested scope rebinds it.
        if taskBindingsUsed.load(ordering: .relaxed), taskBinding != nil {
            return try $taskBinding.withValue(enabled) { try withThreadMode(enabled, body) }
        }
        return try withThreadMode(enabled, body)
    }

    /// Runs the async `body` with grad mode set to `enabled` for this task (across every
    /// `await`, whichever thread it resumes on) and for the child tasks it starts.
    public static func with<R>(enabled: Bool, isolation: isolated (any Actor)? = #isolation,
                               _ body: () async throws -> R) async rethrows -> R {
        taskBindingsUsed.store(true, ordering: .relaxed)  // before the binding, on this task
        return try await $taskBinding.withValue(enabled, operation: body, isolation: isolation)
    }

    private static func withThreadMode<R>(_ enabled: Bool, _ body: () throws -> R) rethrows -> R {
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

/// Runs the async `body` without recording any graph, across its `await`s and in its child tasks.
public func withNoGrad<R>(isolation: isolated (any Actor)? = #isolation,
                          _ body: () async throws -> R) async rethrows -> R {
    try await GradMode.with(enabled: false, isolation: isolation, body)
}
