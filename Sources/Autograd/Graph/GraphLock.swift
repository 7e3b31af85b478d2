#if canImport(Glibc)
import Glibc
#endif

/// The one lock that serialises everything that mutates graph state shared between threads:
/// backward passes (which release nodes and write leaves' gradients), reads and writes of
/// `.grad`, requires_grad changes, hooks and optimizer steps. Forward operations take no lock:
/// they only read tensors, whose values never change outside an optimizer step. Recursive, so a
/// hook may call back into the engine.
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

    @inline(__always)
    static func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
