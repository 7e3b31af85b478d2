import CKernels

/// The emergency memory reserve (Sources/CKernels/memory_reserve.c): address space held back so
/// that running out of memory fails calls instead of aborting the process in the Swift runtime.
/// An allocation failure gives it back to the system; while it is spent, creating a tensor
/// first tries to make it again and, when that fails, is refused with `outOfMemory`.
public enum MemoryReserve {
    /// Whether the reserve is spent: one relaxed atomic load, paid by every new tensor.
    @inlinable @inline(__always)
    public static var isSpent: Bool { agm_reserve_spent() }

    /// Throws `outOfMemory` unless the reserve is held (made again here when it was spent).
    /// Called on the per-op path, so the check itself is inline and the work is not.
    @inlinable @inline(__always)
    public static func ensureArmed() throws {
        if isSpent { try rearm() }
    }

    /// Makes the reserve again, after returning cached tensor buffers and free heap memory to
    /// the system if the first try fails; throws `outOfMemory` when even then it cannot be made.
    @usableFromInline @inline(never)
    static func rearm() throws {
        if agm_rearm_reserve() { return }
        BufferCache.releaseAll()
        agm_trim_heap()
        if agm_rearm_reserve() { return }
        throw AutogradError.outOfMemory("out of memory: an allocation failed and the \(agm_reserve_bytes() >> 20) MiB emergency reserve cannot be made again, so no new tensors are created until memory is freed (free tensors, or raise the memory limit)")
    }

    /// Gives the reserve back to the system: an allocation has failed, and the failing call
    /// needs room to unwind and report it.
    static func release() { agm_release_reserve() }

    /// How many times the reserve has been given back (for tests).
    public static var releaseCount: Int { agm_reserve_release_count() }
}
