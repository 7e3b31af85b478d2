import XCTest
import AutogradEngine
@testable import AutogradC

/// The handle table (issue 14, item 1): a freed handle is never valid again, a slot is retired
/// when its generations run out, running out of slots is an error (not a trap), and handles are
/// opaque (neighbouring values are not live handles). The generation wrap itself is reached with
/// a test hook that moves a free slot's generation to near its maximum; bindings/c/
/// test_abi_defects.c runs the real 2^24 + 64 alloc/free cycles natively.
final class HandleTableTests: XCTestCase {
    private final class Box {
        let value: Int
        init(_ value: Int) { self.value = value }
    }

    private func index(_ h: UInt64) -> UInt64 { h & HandleTable.indexMask }
    private func generation(_ h: UInt64) -> UInt64 { (h >> HandleTable.indexBits) & HandleTable.generationMask }
    private func kind(_ h: UInt64) -> UInt64 { h >> HandleTable.kindShift }

    private func value(_ table: HandleTable, _ h: UInt64) -> Int? {
        (table.lookup(h, kind: .tensor) as? Box)?.value
    }

    func testLayoutLeavesRoomForKindsAndFortyBitGenerations() {
        XCTAssertEqual(HandleTable.indexBits + HandleTable.generationBits + 4, 64, "4 kind bits: room for 15 kinds")
        XCTAssertGreaterThanOrEqual(HandleTable.generationBits, 40)
        XCTAssertEqual(HandleTable.maxSlots, 1_048_575)
        XCTAssertEqual(HandleTable.maxGeneration, (1 << 40) - 1)
        XCTAssertLessThan(HandleKind.tensor.rawValue, 16)
        XCTAssertLessThan(HandleKind.optimizer.rawValue, 16)
        let table = HandleTable(seed: 1)
        let h = try! table.insert(Box(1), kind: .optimizer)
        XCTAssertEqual(kind(h), HandleKind.optimizer.rawValue)
        XCTAssertEqual(index(h), 1, "index + 1 in the low bits")
        XCTAssertTrue((1...(1 << 39)).contains(generation(h)), "a first generation in [1, 2^39]: \(generation(h))")
        XCTAssertNil(table.lookup(0, kind: .tensor))
        XCTAssertNil(table.lookup(h, kind: .tensor), "the wrong kind")
        XCTAssertNil(table.lookup(h & ~HandleTable.indexMask, kind: .optimizer), "index field 0")
        XCTAssertNil(table.lookup(h ^ (1 << HandleTable.indexBits), kind: .optimizer), "another generation")
        XCTAssertTrue(table.remove(h, kind: .optimizer))
    }

    func testASlotIsRetiredWhenItsGenerationsRunOut() throws {
        let table = HandleTable(seed: 42)
        let first = try table.insert(Box(1), kind: .tensor)
        XCTAssertTrue(table.remove(first, kind: .tensor))
        XCTAssertTrue(table.setGenerationForTesting(ofFreeSlotOf: first, to: HandleTable.maxGeneration - 1))
        let second = try table.insert(Box(2), kind: .tensor)
        XCTAssertEqual(index(second), index(first), "the free slot is reused")
        XCTAssertEqual(generation(second), HandleTable.maxGeneration - 1)
        XCTAssertTrue(table.remove(second, kind: .tensor))
        let last = try table.insert(Box(3), kind: .tensor)
        XCTAssertEqual(index(last), index(first))
        XCTAssertEqual(generation(last), HandleTable.maxGeneration, "the slot's last generation")
        XCTAssertEqual(value(table, last), 3)
        XCTAssertTrue(table.remove(last, kind: .tensor))
        XCTAssertEqual(table.retiredCount, 1, "freeing the last generation retires the slot")

        // Never reused: the next handles take other slots, and every old handle stays dead.
        var fresh: [UInt64] = []
        for k in 0..<4 { fresh.append(try table.insert(Box(10 + k), kind: .tensor)) }
        for h in fresh { XCTAssertNotEqual(index(h), index(first), "a retired slot was reused") }
        for h in [first, second, last] {
            XCTAssertNil(table.lookup(h, kind: .tensor))
            XCTAssertFalse(table.remove(h, kind: .tensor), "a stale handle freed something")
            // The handles a wrapped generation counter would give next.
            XCTAssertNil(table.lookup(h & ~(HandleTable.generationMask << HandleTable.indexBits), kind: .tensor))
            XCTAssertNil(table.lookup(h & ~(HandleTable.generationMask << HandleTable.indexBits) | (1 << HandleTable.indexBits), kind: .tensor))
        }
        XCTAssertFalse(table.setGenerationForTesting(ofFreeSlotOf: first, to: 5), "a retired slot stays retired")
        for (k, h) in fresh.enumerated() {
            XCTAssertEqual(value(table, h), 10 + k)
            XCTAssertTrue(table.remove(h, kind: .tensor))
        }
        XCTAssertEqual(table.liveCount, 0)
    }

    /// Past its first 1024 slots the table grows (moving every live slot); each handle still
    /// names its own object, and the table ends cleanly (no leak under ASan).
    func testTheTableGrowsAndKeepsEveryHandle() throws {
        let table = HandleTable(slotLimit: 5000, seed: 11)
        let hs = try (0..<3000).map { try table.insert(Box($0), kind: .tensor) }
        for (k, h) in hs.enumerated() { XCTAssertEqual(value(table, h), k) }
        XCTAssertEqual(table.liveCount, 3000)
        for h in hs.prefix(1500) { XCTAssertTrue(table.remove(h, kind: .tensor)) }
        XCTAssertEqual(table.liveCount, 1500)
    }

    func testAFullTableIsOutOfMemoryNotATrap() throws {
        let table = HandleTable(slotLimit: 3, seed: 7)
        let hs = try (0..<3).map { try table.insert(Box($0), kind: .tensor) }
        XCTAssertThrowsError(try table.insert(Box(9), kind: .tensor)) { error in
            guard case AutogradError.outOfMemory(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("the handle table is full"), message)
            XCTAssertTrue(message.contains("3 handles are live"), message)
        }
        XCTAssertTrue(table.remove(hs[1], kind: .tensor))
        let again = try table.insert(Box(4), kind: .optimizer)
        XCTAssertEqual(index(again), index(hs[1]))
        XCTAssertNotEqual(again, hs[1])

        // A retired slot counts against the limit too.
        XCTAssertTrue(table.remove(hs[0], kind: .tensor))
        XCTAssertTrue(table.setGenerationForTesting(ofFreeSlotOf: hs[0], to: HandleTable.maxGeneration))
        let doomed = try table.insert(Box(5), kind: .tensor)
        XCTAssertTrue(table.remove(doomed, kind: .tensor))
        XCTAssertEqual(table.retiredCount, 1)
        XCTAssertThrowsError(try table.insert(Box(6), kind: .tensor)) { error in
            guard case AutogradError.outOfMemory(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("2 handles are live and 1 slots are retired"), message)
        }
        XCTAssertTrue(table.remove(hs[2], kind: .tensor))
        XCTAssertTrue(table.remove(again, kind: .optimizer))
    }

    func testConsecutiveHandlesAreNotAdjacent() throws {
        let table = HandleTable()
        let hs = try (0..<256).map { try table.insert(Box($0), kind: .tensor) }
        for h in hs {
            XCTAssertNil(table.lookup(h &+ 1, kind: .tensor), "handle + 1 is live")
            XCTAssertNil(table.lookup(h &- 1, kind: .tensor), "handle - 1 is live")
        }
        let other = HandleTable()
        let hs2 = try (0..<4).map { try other.insert(Box($0), kind: .tensor) }
        XCTAssertNotEqual(hs2, Array(hs.prefix(4)), "two tables (two seeds) gave the same handles")
        for h in hs { XCTAssertTrue(table.remove(h, kind: .tensor)) }
        for h in hs2 { XCTAssertTrue(other.remove(h, kind: .tensor)) }
    }

    /// Through the C ABI on the library's own table: a tensor handle of a slot's last generation
    /// is refused once freed, and the slot is never handed out again.
    func testTheCABIRefusesHandlesOfARetiredSlot() throws {
        var first: UInt64 = 0, last: UInt64 = 0, next: UInt64 = 0, n: Int64 = -1
        XCTAssertEqual(ag_tensor_zeros(&first, nil, 0, 2), 0)
        XCTAssertEqual(ag_tensor_free(first), 0)
        XCTAssertTrue(HandleTable.shared.setGenerationForTesting(ofFreeSlotOf: first, to: HandleTable.maxGeneration))
        let retiredBefore = HandleTable.shared.retiredCount
        XCTAssertEqual(ag_tensor_zeros(&last, nil, 0, 2), 0)
        XCTAssertEqual(index(last), index(first), "the freed slot is reused (nothing else allocates meanwhile)")
        XCTAssertEqual(generation(last), HandleTable.maxGeneration)
        XCTAssertEqual(ag_tensor_numel(&n, last), 0)
        XCTAssertEqual(ag_tensor_free(last), 0)
        XCTAssertEqual(HandleTable.shared.retiredCount, retiredBefore + 1)
        XCTAssertEqual(ag_tensor_zeros(&next, nil, 0, 2), 0)
        XCTAssertNotEqual(index(next), index(first), "a retired slot was reused")
        for stale in [first, last] {
            XCTAssertEqual(ag_tensor_numel(&n, stale), 1, "AG_ERR_INVALID_HANDLE")
            XCTAssertEqual(ag_tensor_free(stale), 1)
        }
        XCTAssertEqual(ag_tensor_free(next), 0)
    }
}
