#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels

/// What a storage object knows about its elements. The elements follow it in the object, or,
/// for a separately allocated buffer, the first tail word holds the buffer's address.
struct StorageHeader {
    let count: Int
    /// Bumped by every in-place write (see Storage.version).
    var version: UInt32 = 0
    let dtype: DType
    let isExternal: Bool
    /// The buffer belongs to someone else (see Storage.borrowing): not freed with the storage.
    var isBorrowed = false
    /// The buffer is a caller's memory (see Storage.foreign): not freed with the storage, never
    /// reused in place by backward, and the second tail word holds the retained owner, if any.
    var isForeign = false
    /// The library never writes these elements (see Storage.foreign): every in-place writer
    /// refuses such a storage (Storage.refuseReadOnly).
    var isReadOnly = false
    /// The second tail word holds a retained owner object (see Storage.foreign).
    var hasOwner = false
}

/// A contiguous buffer of elements. Small buffers (scalars, short vectors) live inside the
/// object itself, so a tensor of a few elements costs one allocation, not two; larger ones are
/// 64-byte aligned and recycled through `BufferCache`. Allocation failure is an error, not a
/// trap; while the emergency reserve is spent (`MemoryReserve`), no storage is made.
final class Storage: ManagedBuffer<StorageHeader, UInt64> {
    /// Buffers up to this many bytes are stored inline.
    static let inlineBytes = 64

    static func make(dtype: DType, count: Int) throws -> Storage {
        try MemoryReserve.ensureArmed()
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else {
            throw AutogradError.outOfMemory("cannot allocate \(count) elements of \(dtype): size overflows")
        }
        if bytes <= inlineBytes {
            let words = (bytes + 7) / 8
            let object = Storage.create(minimumCapacity: Swift.max(words, 1)) { _ in
                StorageHeader(count: count, dtype: dtype, isExternal: false)
            }
            Trace.noteMade(object)
            return unsafeDowncast(object, to: Storage.self)
        }
        guard let p = BufferCache.allocate(bytes: bytes) else {
            throw AutogradError.outOfMemory("cannot allocate \(bytes) bytes for \(count) elements of \(dtype)")
        }
        let object = Storage.create(minimumCapacity: 1) { buffer in
            buffer.withUnsafeMutablePointerToElements { $0.pointee = UInt64(UInt(bitPattern: p)) }
            return StorageHeader(count: count, dtype: dtype, isExternal: true)
        }
        Trace.noteMade(object)
        return unsafeDowncast(object, to: Storage.self)
    }

    /// A storage with no element (cannot fail: nothing is allocated beyond the object).
    static func empty() -> Storage {
        let object = Storage.create(minimumCapacity: 1) { _ in StorageHeader(count: 0, dtype: .float64, isExternal: false) }
        return unsafeDowncast(object, to: Storage.self)
    }

    /// Storage over `count` elements at `p`, which it does not own: the memory must outlive it
    /// (a replay's tensors over its planned buffers, see Program).
    static func borrowing(_ p: UnsafeMutableRawPointer, dtype: DType, count: Int) -> Storage {
        let object = Storage.create(minimumCapacity: 1) { buffer in
            buffer.withUnsafeMutablePointerToElements { $0.pointee = UInt64(UInt(bitPattern: p)) }
            return StorageHeader(count: count, dtype: dtype, isExternal: true, isBorrowed: true)
        }
        return unsafeDowncast(object, to: Storage.self)
    }

    /// Storage over `count` elements of a caller's memory at `p` (ag_tensor_from_buffer, a DLPack
    /// import; nil only when count is 0), which the storage does not free: instead it keeps a
    /// retained reference to `owner`, released when the storage dies, and the owner's deinit gives
    /// the memory back (a C destroy callback, a DLPack deleter). Unlike `borrowing`, such a
    /// storage is never rebound, backward never writes into it in place (Tensor.storageIsUnique
    /// is false for it), and with `readOnly` no in-place writer touches it.
    static func foreign(_ p: UnsafeMutableRawPointer?, dtype: DType, count: Int, owner: AnyObject?, readOnly: Bool) -> Storage {
        let object = Storage.create(minimumCapacity: 2) { buffer in
            buffer.withUnsafeMutablePointerToElements { tail in
                tail.pointee = UInt64(UInt(bitPattern: p))
                // Retained here, released exactly once in deinit (hasOwner says the word holds
                // it); the storage is the only holder of this +1, so the owner lives as long as
                // the storage and no longer.
                (tail + 1).pointee = owner.map { UInt64(UInt(bitPattern: Unmanaged.passRetained($0).toOpaque())) } ?? 0
            }
            var header = StorageHeader(count: count, dtype: dtype, isExternal: true)
            header.isForeign = true
            header.isReadOnly = readOnly
            header.hasOwner = owner != nil
            return header
        }
        return unsafeDowncast(object, to: Storage.self)
    }

    /// Whether these elements are a caller's memory (Storage.foreign) or a replay's borrowed
    /// buffer (Storage.borrowing): memory that something outside this storage also sees, so
    /// backward never overwrites it in place even when no other tensor holds the storage.
    @inline(__always) var isShared: Bool { let h = header; return h.isForeign || h.isBorrowed }

    /// Whether the library must never write these elements (a read-only import).
    @inline(__always) var isReadOnly: Bool { header.isReadOnly }

    /// Fails with AutogradError.state when these elements are read-only: every in-place writer
    /// calls it before it writes anything. `what` names the write and the operand ("in-place
    /// write: the tensor", "optimizer: parameter 1").
    func refuseReadOnly(_ what: @autoclosure () -> String) throws {
        guard header.isReadOnly else { return }
        throw AutogradError.state("\(what()) is read-only memory (a DLPack import flagged READ_ONLY, or lent read-only): the library never writes it in place; copy it into a tensor of its own first")
    }

    /// Points a borrowed storage at other memory of the same size (a replay's input, see
    /// Program.InputBinding); the memory must outlive its use, as for `borrowing`.
    func rebind(to p: UnsafeMutableRawPointer) {
        precondition(header.isBorrowed, "only a borrowed storage is rebound")
        withUnsafeMutablePointerToElements { $0.pointee = UInt64(UInt(bitPattern: p)) }
    }

    deinit {
        let h = header
        if h.isForeign {
            if h.hasOwner {
                let word = withUnsafeMutablePointerToElements { ($0 + 1).pointee }
                // The +1 taken in `foreign` (hasOwner set only when the word holds it), given
                // back once: this deinit runs once and nothing else reads the word.
                if let p = UnsafeRawPointer(bitPattern: UInt(word)) { Unmanaged<AnyObject>.fromOpaque(p).release() }
            }
            return
        }
        if h.isExternal && !h.isBorrowed, let raw { BufferCache.release(raw, bytes: h.count * h.dtype.size) }
    }

    @inline(__always) var dtype: DType { header.dtype }
    @inline(__always) var count: Int { header.count }

    /// How many in-place writes these values have had (PyTorch's version counter). A graph
    /// records the versions of the values it saves and refuses to run a rule after they moved,
    /// instead of silently using new values. Wraps after 2^32 writes (a graph would then miss
    /// exactly 2^32 writes between its forward and its backward). Written under the graph lock.
    @inline(__always) var version: UInt32 { header.version }

    /// Marks one in-place write of these values (optimizer steps, Tensor.copyIn).
    func bumpVersion() { header.version &+= 1 }

    /// The first element (nil when there are none).
    @inline(__always) var raw: UnsafeMutableRawPointer? {
        let h = header
        if h.count == 0 { return nil }
        return withUnsafeMutablePointerToElements { tail in
            h.isExternal ? UnsafeMutableRawPointer(bitPattern: UInt(tail.pointee)) : UnsafeMutableRawPointer(tail)
        }
    }

    @inline(__always)
    func buffer<T: TensorElement>(_: T.Type) -> UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(start: raw?.assumingMemoryBound(to: T.self), count: header.count)
    }
}

/// Large buffers (128 KiB and up) freed by tensors are kept for reuse instead of being returned to
/// the system: a fresh large allocation is fresh pages, and faulting them in costs more than
/// an elementwise kernel writing them. Buffers are reused for the same size (in 4 KiB pages);
/// at most `capacityBytes` are kept, the oldest released first.
enum BufferCache {
    static let minimumBytes = 1 << 17
    private static let pageBytes = 4096

    /// AG_BUFFER_CACHE_MB when set (0 keeps nothing), else a quarter of physical memory, at
    /// most 1 GiB.
    static let capacityBytes: Int = {
        if let s = getenv("AG_BUFFER_CACHE_MB"), let mb = Int(String(cString: s)), mb >= 0 && mb <= 1 << 30 {
            return mb << 20
        }
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0 && size > 0 else { return 256 << 20 }
        return Swift.min(1 << 30, pages / 4 * size)
    }()

    // nonisolated(unsafe): set once (a lazy global, initialised atomically); the mutex it
    // points to is only used through pthread_mutex_*, which is thread-safe.
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    // Guarded by mutex: free buffers by rounded size, and all of them oldest first.
    nonisolated(unsafe) private static var freeBySize: [Int: [UnsafeMutableRawPointer]] = [:]
    nonisolated(unsafe) private static var order: [(size: Int, pointer: UnsafeMutableRawPointer)] = []
    nonisolated(unsafe) private static var heldBytes = 0

    /// bytes rounded up to whole pages; nil when that passes Int.max (no allocation is that big).
    @inline(__always)
    private static func rounded(_ bytes: Int) -> Int? {
        let (sum, overflow) = bytes.addingReportingOverflow(pageBytes - 1)
        return overflow ? nil : sum / pageBytes * pageBytes
    }

    /// A buffer of at least `bytes` bytes, or nil. When the system refuses, the cached buffers go
    /// back to it and the allocation is tried once more; if that fails too, the emergency reserve
    /// is released so that the failing call can unwind and report (see `MemoryReserve`).
    static func allocate(bytes: Int) -> UnsafeMutableRawPointer? {
        if let p = tryAllocate(bytes: bytes) { return p }
        releaseAll()
        if let p = tryAllocate(bytes: bytes) { return p }
        MemoryReserve.release()
        return nil
    }

    /// Returns every cached buffer to the system (memory is short).
    static func releaseAll() {
        pthread_mutex_lock(mutex)
        releaseAllLocked()
    }

    /// The allocation wrappers' low-memory handler (memory_reserve.c): like `releaseAll`, but
    /// it gives up rather than wait when the cache is locked (the failed allocation may have
    /// been made under that lock), and it allocates nothing. True if it freed a buffer.
    private static let lowMemoryHandler: @convention(c) () -> Bool = {
        guard pthread_mutex_trylock(BufferCache.mutex) == 0 else { return false }
        return BufferCache.releaseAllLocked()
    }
    /// Whether lowMemoryHandler is installed: on the first release into the cache, once the
    /// cache's state exists (guarded by mutex).
    nonisolated(unsafe) private static var handlerInstalled = false

    /// Empties the cache, unlocks the mutex (held by the caller) and frees the buffers; true if
    /// there were any. Allocates nothing: emptying the collections keeps no storage.
    @discardableResult
    private static func releaseAllLocked() -> Bool {
        let all = order
        order = []
        freeBySize = [:]
        heldBytes = 0
        pthread_mutex_unlock(mutex)
        for entry in all { free(entry.pointer) }
        return !all.isEmpty
    }

    /// The bytes held for reuse now (for tests).
    static var cachedBytes: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return heldBytes
    }

    private static func tryAllocate(bytes: Int) -> UnsafeMutableRawPointer? {
        if bytes >= minimumBytes {
            guard let size = rounded(bytes) else { return nil }
            pthread_mutex_lock(mutex)
            if let p = freeBySize[size]?.popLast() {
                if let i = order.firstIndex(where: { $0.pointer == p }) { order.remove(at: i) }
                heldBytes -= size
                pthread_mutex_unlock(mutex)
                return p
            }
            pthread_mutex_unlock(mutex)
            var p: UnsafeMutableRawPointer? = nil
            return posix_memalign(&p, 64, size) == 0 ? p : nil
        }
        if bytes <= 1024 { return malloc(bytes) }
        var p: UnsafeMutableRawPointer? = nil
        return posix_memalign(&p, 64, bytes) == 0 ? p : nil
    }

    static func release(_ p: UnsafeMutableRawPointer, bytes: Int) {
        guard bytes >= minimumBytes, let size = rounded(bytes), size <= capacityBytes else { free(p); return }
        var evicted: [UnsafeMutableRawPointer] = []
        pthread_mutex_lock(mutex)
        if !handlerInstalled {
            handlerInstalled = true
            agm_set_low_memory_handler(lowMemoryHandler)
        }
        freeBySize[size, default: []].append(p)
        order.append((size, p))
        heldBytes += size
        while heldBytes > capacityBytes, !order.isEmpty {
            let oldest = order.removeFirst()
            if var list = freeBySize[oldest.size], let i = list.firstIndex(of: oldest.pointer) {
                list.remove(at: i)
                freeBySize[oldest.size] = list.isEmpty ? nil : list
            }
            heldBytes -= oldest.size
            evicted.append(oldest.pointer)
        }
        pthread_mutex_unlock(mutex)
        for q in evicted { free(q) }
    }

    // fork() (see ForkSafety): held across fork, released in the parent, made anew in the
    // child (whose copy is held by the forking thread in prepare).

    static func lockForFork() { pthread_mutex_lock(mutex) }

    static func unlockAfterFork() { pthread_mutex_unlock(mutex) }

    static func reinitializeInForkedChild() { pthread_mutex_init(mutex, nil) }
}
