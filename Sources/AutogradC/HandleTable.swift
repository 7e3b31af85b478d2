#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Autograd

/// The kinds of object a handle can name; a handle of one kind is refused where another is wanted.
enum HandleKind: UInt64 {
    case tensor = 1
    case optimizer = 2
}

/// A handle is an index plus a generation plus a kind, packed in 64 bits, never a pointer:
/// bits 0-31 hold slot index + 1 (so 0 is never valid), bits 32-55 the slot's generation,
/// bits 56-63 the kind. Freeing bumps the generation, so stale handles are detected.
final class HandleTable: @unchecked Sendable {
    private struct Slot {
        var generation: UInt32 = 1
        var object: AnyObject? = nil
        var kind: HandleKind = .tensor
    }

    private var slots: [Slot] = []
    private var freeSlots: [Int] = []
    private var live = 0
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    static let shared = HandleTable()

    private init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    @inline(__always) private func locked<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// A new handle owning a reference to `object`.
    func insert(_ object: AnyObject, kind: HandleKind) throws -> UInt64 {
        try locked {
            let index: Int
            if let i = freeSlots.popLast() {
                index = i
            } else {
                guard slots.count < Int(UInt32.max - 1) else {
                    throw AutogradError.outOfMemory("the handle table is full")
                }
                slots.append(Slot())
                index = slots.count - 1
            }
            slots[index].object = object
            slots[index].kind = kind
            live += 1
            return (kind.rawValue << 56) | (UInt64(slots[index].generation) << 32) | UInt64(index + 1)
        }
    }

    /// The slot index of a live handle of `kind`, or nil. Reads the slot in place (no copy of
    /// its object reference).
    @inline(__always)
    private func slotIndex(_ handle: UInt64, kind: HandleKind) -> Int? {
        guard handle >> 56 == kind.rawValue else { return nil }
        let low = Int(handle & 0xFFFF_FFFF)
        let generation = UInt32((handle >> 32) & 0xFF_FFFF)
        guard low >= 1 && low <= slots.count else { return nil }
        let live = slots.withUnsafeBufferPointer { s in
            s[low - 1].object != nil && s[low - 1].kind == kind && s[low - 1].generation == generation
        }
        return live ? low - 1 : nil
    }

    func lookup(_ handle: UInt64, kind: HandleKind) -> AnyObject? {
        locked { slotIndex(handle, kind: kind).flatMap { slots[$0].object } }
    }

    /// Releases the handle's reference; false if it was not live.
    func remove(_ handle: UInt64, kind: HandleKind) -> Bool {
        let object: AnyObject? = locked {
            guard let i = slotIndex(handle, kind: kind) else { return nil }
            let o = slots.withUnsafeMutableBufferPointer { s in
                let o = s[i].object
                s[i].object = nil
                // 24-bit generations; skip 0 so a handle of all-zero generation is never valid.
                s[i].generation = s[i].generation & 0xFF_FFFF == 0xFF_FFFF ? 1 : s[i].generation + 1
                return o
            }
            freeSlots.append(i)
            live -= 1
            return o
        }
        // The object (and maybe a whole graph) is released here, outside the lock.
        return object != nil
    }

    var liveCount: Int { locked { live } }

    private var lastId = 0

    /// A fresh id (for hooks), unique across threads.
    func nextId() -> Int { locked { lastId += 1; return lastId } }
}
