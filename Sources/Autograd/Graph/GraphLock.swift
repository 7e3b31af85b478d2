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
    private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(m, &attr)
        pthread_mutexattr_destroy(&attr)
        return m
    }()

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
}
