#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Autograd
import Synchronization

/// The kinds of object a handle can name; a handle of one kind is refused where another is wanted.
enum HandleKind: UInt64 {
    case tensor = 1
    case optimizer = 2
}

/// A handle is an index plus a generation plus a kind, packed in 64 bits, never a pointer:
/// bits 0-31 hold slot index + 1 (so 0 is never valid), bits 32-55 the slot's generation,
/// bits 56-63 the kind. Freeing bumps the generation, so stale handles are detected.
/// Every C call goes through here, so the slots are plain memory (no array retains), and the lock
/// is a spin lock: held for a few instructions, taken with one atomic exchange and released
/// with a plain store, where a pthread mutex costs two atomic operations per call. Its
/// acquire/release atomics are what ThreadSanitizer checks (it misses the stdlib Mutex's ordering).
final class HandleTable: @unchecked Sendable {
    private struct Slot {
        var generation: UInt32 = 1
        var kind: HandleKind = .tensor
        /// The next free slot after this free one, plus one (0: none).
        var nextFree: UInt32 = 0
        var object: AnyObject? = nil
    }

    // Guarded by lock.
    private var slots: UnsafeMutablePointer<Slot>
    private var capacity = 0
    private var used = 0
    /// The most recently freed slot, head of the free list through Slot.nextFree (-1: none).
    private var firstFree = -1
    private var live = 0
    private var lastId = 0
    private let spin = Atomic<UInt32>(0)

    static let shared = HandleTable()

    private init() {
        capacity = 1024
        slots = .allocate(capacity: capacity)
    }

    @inline(__always) private func lock() {
        if !spin.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { waitForLock() }
    }

    @inline(__always) private func unlock() {
        spin.store(0, ordering: .releasing)
    }

    @inline(__always) private func locked<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }

    /// Contended: spins on a plain load, yielding the CPU now and then (the holder may have been
    /// preempted on a busy machine), until the exchange succeeds.
    @inline(never)
    private func waitForLock() {
        var spins = 0
        repeat {
            while spin.load(ordering: .relaxed) != 0 {
                spins += 1
                if spins & 63 == 0 { sched_yield() }
            }
        } while !spin.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }

    /// A new handle owning `object` (the caller's reference moves into the table).
    func insert(_ object: consuming AnyObject, kind: HandleKind) throws -> UInt64 {
        lock()
        let index: Int
        if firstFree >= 0 {
            index = firstFree
            firstFree = Int(slots[index].nextFree) - 1
        } else {
            guard used < Int(UInt32.max - 1) else {
                unlock()
                throw AutogradError.outOfMemory("the handle table is full")
            }
            if used == capacity { grow() }
            (slots + used).initialize(to: Slot())
            index = used
            used += 1
        }
        slots[index].object = consume object
        slots[index].kind = kind
        live += 1
        let handle = (kind.rawValue << 56) | (UInt64(slots[index].generation) << 32) | UInt64(index + 1)
        unlock()
        return handle
    }

    /// Doubles the slot memory (under the lock).
    private func grow() {
        let bigger = UnsafeMutablePointer<Slot>.allocate(capacity: capacity * 2)
        bigger.moveInitialize(from: slots, count: used)
        slots.deallocate()
        slots = bigger
        capacity *= 2
    }

    /// The slot index of a live handle of `kind`, or nil.
    @inline(__always)
    private func slotIndex(_ handle: UInt64, kind: HandleKind) -> Int? {
        guard handle >> 56 == kind.rawValue else { return nil }
        let low = Int(handle & 0xFFFF_FFFF)
        let generation = UInt32((handle >> 32) & 0xFF_FFFF)
        guard low >= 1 && low <= used else { return nil }
        let slot = slots + (low - 1)
        guard slot.pointee.generation == generation, slot.pointee.kind == kind, slot.pointee.object != nil else { return nil }
        return low - 1
    }

    func lookup(_ handle: UInt64, kind: HandleKind) -> AnyObject? {
        lock()
        let object = slotIndex(handle, kind: kind).flatMap { slots[$0].object }
        unlock()
        return object
    }

    /// Two lookups under one lock (binary ops): nil in each place that is not live.
    func lookup(_ first: UInt64, _ second: UInt64, kind: HandleKind) -> (AnyObject?, AnyObject?) {
        lock()
        let a = slotIndex(first, kind: kind).flatMap { slots[$0].object }
        let b = slotIndex(second, kind: kind).flatMap { slots[$0].object }
        unlock()
        return (a, b)
    }

    /// Releases the handle's reference; false if it was not live.
    func remove(_ handle: UInt64, kind: HandleKind) -> Bool {
        lock()
        guard let i = slotIndex(handle, kind: kind) else {
            unlock()
            return false
        }
        var object: AnyObject? = nil
        swap(&object, &slots[i].object)
        // 24-bit generations; skip 0 so a handle of all-zero generation is never valid.
        slots[i].generation = slots[i].generation & 0xFF_FFFF == 0xFF_FFFF ? 1 : slots[i].generation + 1
        slots[i].nextFree = UInt32(firstFree + 1)
        firstFree = i
        live -= 1
        unlock()
        // The object (and maybe a whole graph) is released here, outside the lock.
        return object != nil
    }

    var liveCount: Int { locked { live } }

    /// A fresh id (for hooks), unique across threads.
    func nextId() -> Int { locked { lastId += 1; return lastId } }

    // fork() (ForkSafety.swift): the table's lock is held across fork, so that the child's copy
    // of the table is not caught half-changed, then released in the parent and in the child (a
    // spin lock has no owner, so the child's only thread may release it).

    func lockForFork() { lock() }

    func unlockAfterFork() { unlock() }
}
