import XCTest
@testable import AutogradEngine

/// The emergency memory reserve (MemoryReserve, Sources/CKernels/memory_reserve.c) and the
/// buffer cache's part in running out of memory. The process-level behaviour under a real
/// memory limit is tested by bindings/c/test_memory_limit.c (scripts/process-tests.sh).
final class MemoryReserveTests: XCTestCase {
    /// A tensor buffer the system refuses (2^45 float32: 128 TiB) gives the reserve back, so the
    /// failing call can unwind; the next tensor maps it again and is made.
    func testAFailedAllocationReleasesTheReserveAndTheNextTensorRearmsIt() throws {
        _ = try Tensor(scalar: 1)
        XCTAssertFalse(MemoryReserve.isSpent)
        let released = MemoryReserve.releaseCount
        XCTAssertThrowsError(try Tensor.zeros([1 << 45], dtype: .float32)) { error in
            guard case AutogradError.outOfMemory(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("cannot allocate 140737488355328 bytes"), message)
        }
        XCTAssertTrue(MemoryReserve.isSpent)
        XCTAssertEqual(MemoryReserve.releaseCount, released + 1)
        let t = try Tensor(scalar: 2)
        XCTAssertFalse(MemoryReserve.isSpent)
        XCTAssertEqual(try t.item(), 2)
    }

    /// Buffers kept for reuse go back to the system when an allocation fails, before the
    /// allocation is tried again.
    func testCachedBuffersAreReturnedWhenAnAllocationFails() throws {
        guard BufferCache.capacityBytes >= 1 << 20 else { throw XCTSkip("AG_BUFFER_CACHE_MB keeps less than 1 MiB") }
        let bytes = 1 << 20
        let p = try XCTUnwrap(BufferCache.allocate(bytes: bytes))
        BufferCache.release(p, bytes: bytes)
        XCTAssertGreaterThanOrEqual(BufferCache.cachedBytes, bytes)
        XCTAssertNil(BufferCache.allocate(bytes: 1 << 47))
        XCTAssertEqual(BufferCache.cachedBytes, 0)
        _ = try Tensor(scalar: 0) // re-arms the reserve for the tests that follow
    }
}
