#if canImport(Glibc)
import Glibc
#endif

/// The one lock that serialises everything that mutates graph state shared between threads:
/// backward passes (which release nodes and write leaves' gradients), reads and writes of
/// `.grad`, requires_grad changes, hook lists, in-place writes and optimizer steps. Forward
/// operations take no lock: they only read tensors. Recursive, so engine code may nest it;
/// user hooks run with it released (`withoutLock`), so a hook may wait for another thread
/// that calls into the engine.
enum GraphLock {
    // nonisolated(unsafe): the pointer is set once (a lazy global, initialised atomically) and
    // the mutex it points to is only used through pthread_mutex_*, which is thread-safe.
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        initialize(m)
        return m
    }()

    private static func initialize(_ m: UnsafeMutablePointer<pthread_mutex_t>) {
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(m, &attr)
        pthread_mutexattr_destroy(&attr)
    }

    /// How many times the owning thread holds the mutex. Read and written only by the thread
    /// that holds it, so the mutex itself orders every access.
    nonisolated(unsafe) private static var depth = 0

    @inline(__always)
    static func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        depth += 1
        defer {
            depth -= 1
            pthread_mutex_unlock(mutex)
        }
        return try body()
    }

    /// Runs `body` (user code: a hook) with the lock fully released by this thread, which must
    /// hold it, then takes it back as deeply as before. Other threads may change graph state
    /// meanwhile: callers re-check what they rely on afterwards.
    static func withoutLock<R>(_ body: () throws -> R) rethrows -> R {
        let held = depth
        depth = 0
        for _ in 0..<held { pthread_mutex_unlock(mutex) }
        defer {
            for _ in 0..<held { pthread_mutex_lock(mutex) }
            depth = held
        }
        return try body()
    }

    fileprivate static func lockForFork() { pthread_mutex_lock(mutex) }
    fileprivate static func unlockAfterFork() { pthread_mutex_unlock(mutex) }
    /// In the child: a fresh, unlocked mutex. The copy is locked by the parent thread that
    /// forked (in prepare), whose thread id the child's thread no longer has, so it cannot
    /// unlock it; no other thread exists to hold it.
    fileprivate static func reinitializeInForkedChild() { initialize(mutex) }
}

/// fork() while other threads are inside the library. A child gets a copy of memory but only
/// the forking thread: a lock another thread held at that instant would stay held forever in
/// the child (a backward pass holds GraphLock for its whole run). So the handlers that
/// AutogradC registers with pthread_atfork call `prepare` before fork, which takes every lock
/// of the engine in one fixed order (waiting for the backward passes, optimizer steps and
/// matrix products in flight to finish), then `parent` after it in the parent (releasing
/// them) and `childReset` in the child (fresh locks, and a worker pool without workers, which
/// starts new ones on the next large kernel).
///
/// Lock order (every path that nests these locks takes them in this order): GraphLock, the
/// BLAS gate (Gemm), the worker pool's mutex, BufferCache's mutex; AutogradC takes its handle
/// table's lock last.
public enum ForkSafety {
    public static func prepare() {
        GraphLock.lockForFork()
        Gemm.lockForFork()
        WorkerPool.shared.lockForFork()
        BufferCache.lockForFork()
    }

    public static func parent() {
        BufferCache.unlockAfterFork()
        WorkerPool.shared.unlockAfterFork()
        Gemm.unlockAfterFork()
        GraphLock.unlockAfterFork()
    }

    public static func childReset() {
        BufferCache.reinitializeInForkedChild()
        WorkerPool.shared.resetInForkedChild()
        Gemm.reinitializeInForkedChild()
        GraphLock.reinitializeInForkedChild()
    }
}
