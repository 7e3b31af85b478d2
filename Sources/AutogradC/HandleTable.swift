#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AutogradEngine
import Synchronization

/// The kinds of object a handle can name; a handle of one kind is refused where another is wanted.
/// Raw values 1...15 (they fill the handle's 4 kind bits; 0 is never a kind, so 0 is never a handle).
enum HandleKind: UInt64 {
    case tensor = 1
    case optimizer = 2
    case function = 3
    case customOp = 4
    /// A custom op's context, live only while the callback it was passed to runs.
    case context = 5
    case generator = 6
    /// An open safetensors file (ag_safetensors).
    case safetensors = 7
}

/// A handle is an index plus a generation plus a kind, packed in 64 bits, never a pointer:
///
///     bits  0-19  slot index + 1      (1 ... 2^20 - 1: at most 1,048,575 slots; 0 is never valid)
///     bits 20-59  the slot's generation (40 bits; 0 is never issued)
///     bits 60-63  the kind             (1 ... 15; 0 is never valid)
///
/// Freeing bumps the slot's generation, so a stale handle is refused; a slot whose generation
/// reaches 2^40 - 1 is retired when that handle is freed (never reused), so no handle is ever
/// issued twice in a process. Each slot starts at a pseudo-random generation in [1, 2^39] (from
/// a per-process seed), so a slot gives at least 2^39 handles before it retires, and neighbouring
/// slots' handles differ in their generation bits: `handle + 1` is not the next tensor.
/// Running out of slots (live and retired together) is AutogradError.outOfMemory.
///
/// Every C call goes through here, so the slots are plain memory (no array retains), and the lock
/// is a spin lock: held for a few instructions, taken with one atomic exchange and released
/// with a plain store, where a pthread mutex costs two atomic operations per call. Its
/// acquire/release atomics are what ThreadSanitizer checks (it misses the stdlib Mutex's ordering).
final class HandleTable: @unchecked Sendable {
    static let indexBits: UInt64 = 20
    static let generationBits: UInt64 = 40
    static let kindShift: UInt64 = indexBits + generationBits
    static let indexMask: UInt64 = (1 << indexBits) - 1
    static let generationMask: UInt64 = (1 << generationBits) - 1
    /// The most slots a table may have: index + 1 must fit the index bits.
    static let maxSlots = Int(indexMask)
    /// The last generation a slot issues before it is retired.
    static let maxGeneration = generationMask

    private struct Slot {
        /// The generation of the slot's current (or next) handle; 0 once the slot is retired.
        var generation: UInt64
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
    private var retired = 0
    private var lastId = 0
    private let spin = Atomic<UInt32>(0)
    /// The most slots this table makes (maxSlots, less in tests).
    private let slotLimit: Int
    /// Mixed into each new slot's first generation.
    private let seed: UInt64

    static let shared = HandleTable()

    /// A table; `slotLimit` and `seed` are for tests (a small table, a known layout).
    init(slotLimit: Int = HandleTable.maxSlots, seed: UInt64 = UInt64.random(in: 0 ... .max)) {
        self.slotLimit = max(1, min(slotLimit, HandleTable.maxSlots))
        self.seed = seed
        capacity = min(1024, self.slotLimit)
        // 1024 slots (32 KiB) at load: a failure here leaves nothing to run, as for any library.
        slots = malloc(capacity * MemoryLayout<Slot>.stride)!.bindMemory(to: Slot.self, capacity: capacity)
    }

    /// The first generation of slot `index`: 1 ... 2^39, from a splitmix64 hash of the index and
    /// the seed (so a slot has at least 2^39 generations before it retires).
    private func firstGeneration(_ index: Int) -> UInt64 {
        var z = UInt64(index) &+ seed &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (z & ((1 << (HandleTable.generationBits - 1)) - 1)) + 1
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
            guard used < slotLimit else {
                let (live, retired) = (self.live, self.retired)
                unlock()
                throw AutogradError.outOfMemory("the handle table is full: \(live) handles are live and \(retired) slots are retired (at most \(slotLimit) in all; free handles you no longer need)")
            }
            if used == capacity {
                do { try grow() } catch {
                    unlock()
                    throw error
                }
            }
            (slots + used).initialize(to: Slot(generation: firstGeneration(used)))
            index = used
            used += 1
        }
        slots[index].object = consume object
        slots[index].kind = kind
        live += 1
        let handle = (kind.rawValue << HandleTable.kindShift) | (slots[index].generation << HandleTable.indexBits) | UInt64(index + 1)
        unlock()
        return handle
    }

    /// Only tests' own tables end (the shared one lives as long as the process).
    deinit {
        slots.deinitialize(count: used)
        free(slots)
    }

    /// Doubles the slot memory, up to slotLimit slots (under the lock). Out of memory is an
    /// error, not a trap (the runtime's allocate aborts on failure), and leaves the table as it was.
    private func grow() throws {
        let larger = min(capacity * 2, slotLimit)
        guard let raw = malloc(larger * MemoryLayout<Slot>.stride) else {
            throw AutogradError.outOfMemory("the handle table cannot grow to \(larger) slots")
        }
        let bigger = raw.bindMemory(to: Slot.self, capacity: larger)
        bigger.moveInitialize(from: slots, count: used)
        free(slots)
        slots = bigger
        capacity = larger
    }

    /// The slot index of a live handle of `kind`, or nil.
    @inline(__always)
    private func slotIndex(_ handle: UInt64, kind: HandleKind) -> Int? {
        guard handle >> HandleTable.kindShift == kind.rawValue else { return nil }
        let low = Int(handle & HandleTable.indexMask)
        let generation = (handle >> HandleTable.indexBits) & HandleTable.generationMask
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
        if slots[i].generation == HandleTable.maxGeneration {
            // Out of generations: retired, never on the free list again, so no handle repeats.
            slots[i].generation = 0
            retired += 1
        } else {
            slots[i].generation += 1
            slots[i].nextFree = UInt32(firstFree + 1)
            firstFree = i
        }
        live -= 1
        unlock()
        // The object (and maybe a whole graph) is released here, outside the lock.
        return object != nil
    }

    var liveCount: Int { locked { live } }

    /// A fresh id (for hooks), unique across threads.
    func nextId() -> Int { locked { lastId += 1; return lastId } }

    var retiredCount: Int { locked { retired } }

    /// For tests: sets the generation of the free slot that `handle` names (its next handle gets
    /// `generation`); false if that slot is live, retired or does not exist.
    func setGenerationForTesting(ofFreeSlotOf handle: UInt64, to generation: UInt64) -> Bool {
        locked {
            let low = Int(handle & HandleTable.indexMask)
            guard low >= 1 && low <= used, slots[low - 1].object == nil, slots[low - 1].generation != 0,
                  generation >= 1 && generation <= HandleTable.maxGeneration else { return false }
            slots[low - 1].generation = generation
            return true
        }
    }

    // fork() (ForkSafety.swift): the table's lock is held across fork, so that the child's copy
    // of the table is not caught half-changed, then released in the parent and in the child (a
    // spin lock has no owner, so the child's only thread may release it).

    func lockForFork() { lock() }

    func unlockAfterFork() { unlock() }
}
