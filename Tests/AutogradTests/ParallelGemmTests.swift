import XCTest
@testable import AutogradEngine

/// How matrix products are cut into blocks (a function of the shape only, never of the thread
/// count), and the worker pool's retirement of surplus workers.
final class ParallelGemmTests: XCTestCase {
    override func tearDown() {
        try? Parallel.setThreadCount(2)
    }

    func testPlanDependsOnTheShapeOnly() {
        // Small products: one block, one BLAS call.
        XCTAssertEqual(Gemm.plan(m: 64, n: 64, k: 64).blocks, 1)
        XCTAssertEqual(Gemm.plan(m: 0, n: 4, k: 3).blocks, 1)
        // Square products: blocks of 512 rows.
        XCTAssertEqual(Gemm.plan(m: 1024, n: 1024, k: 1024), Gemm.Plan(splitsRows: true, extent: 512, blocks: 2))
        XCTAssertEqual(Gemm.plan(m: 2048, n: 2048, k: 2048), Gemm.Plan(splitsRows: true, extent: 512, blocks: 4))
        // Rows that do not divide evenly: equal blocks rounded up to 16, the last one shorter.
        XCTAssertEqual(Gemm.plan(m: 1100, n: 1024, k: 1024), Gemm.Plan(splitsRows: true, extent: 560, blocks: 2))
        // Short and wide (a batch of 256 rows): split by columns, in blocks of at least 256 (512
        // would leave it whole).
        let wide = Gemm.plan(m: 256, n: 784, k: 512)
        XCTAssertFalse(wide.splitsRows)
        XCTAssertEqual(wide.blocks, 2)  // 784 / 256 = 3 blocks, rounded down to a power of two
        XCTAssertEqual(wide.extent % 16, 0)
        XCTAssertGreaterThanOrEqual(wide.extent * wide.blocks, 784)
        XCTAssertLessThan(wide.extent * (wide.blocks - 1), 784)
        // Never more than maximumBlocks, however large.
        XCTAssertEqual(Gemm.plan(m: 1 << 20, n: 1 << 14, k: 1 << 14).blocks, Gemm.maximumBlocks)
        // The plan is the same whatever the thread count.
        try? Parallel.setThreadCount(1)
        let one = Gemm.plan(m: 700, n: 600, k: 300)
        try? Parallel.setThreadCount(7)
        XCTAssertEqual(Gemm.plan(m: 700, n: 600, k: 300), one)
    }

    func testSurplusWorkersRetireWhenTheCountDrops() throws {
        try Parallel.setThreadCount(12)
        let x = try Tensor.full([1 << 22], 0.5, dtype: .float32)
        _ = try x.exp()
        XCTAssertGreaterThan(Parallel.workerCount, 1)
        XCTAssertLessThanOrEqual(Parallel.workerCount, 11)
        try Parallel.setThreadCount(2)
        let deadline = Date().addingTimeInterval(10)
        while Parallel.workerCount > 1 && Date() < deadline { usleep(1000) }
        XCTAssertLessThanOrEqual(Parallel.workerCount, 1, "workers beyond the thread count less one must end")
        // The pool still works, and starts workers again when the count rises.
        let y = try x.exp()
        XCTAssertEqual(y.count, 1 << 22)
        try Parallel.setThreadCount(4)
        _ = try x.exp()
        XCTAssertLessThanOrEqual(Parallel.workerCount, 3)
    }

    /// A large elementwise op runs its chunks on the pool's workers; a worker must drop its
    /// reference to the job before run() returns (in debug builds a late one trapped in
    /// withoutActuallyEscaping's check). Values by hand: (k mod 7)^2.
    func testLargeElementwiseOpsOnThePool() throws {
        let n = 1 << 20
        let x = try Tensor((0..<n).map { Double($0 % 7) }, shape: [n])
        let saved = Parallel.threadCount
        try Parallel.setThreadCount(2)
        defer { try? Parallel.setThreadCount(saved) }
        for _ in 0..<40 {
            let y = try x.multiplying(x)
            let v = y.buffer(Double.self)
            XCTAssertEqual(v[n - 1], Double(((n - 1) % 7) * ((n - 1) % 7)))
            XCTAssertEqual(v[12345], Double((12345 % 7) * (12345 % 7)))
        }
    }
}
