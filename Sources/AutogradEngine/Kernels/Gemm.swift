#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS

/// Matrix products on OpenBLAS: C (m x n) = op(A) op(B) (+ C when accumulating), row-major,
/// with optional transposes, for one matrix or a batch of equally shaped ones.
///
/// Results do not depend on the thread count. OpenBLAS's own threading splits a product by
/// its thread count, and its kernels round edge tiles differently from full ones, so a
/// product computed with 1 and with 2 OpenBLAS threads differs in the last bits. So OpenBLAS
/// runs single-threaded (`ensureSingleThreadedBLAS`), and a large product is cut here into
/// blocks of output rows (or of output columns, for short wide products) whose boundaries
/// depend on m, n and k only (`Plan`); the blocks run on Autograd's worker pool, on as many
/// threads as `Parallel.threadCount` allows, each one BLAS call that computes exactly what it
/// computes on any thread.
enum Gemm {
    /// Below this many multiply-adds per block, splitting costs more than it gains. (With
    /// workers that sleep at once after a job, B11's and B10's mid-sized products ran slower
    /// split than whole at 2 threads; the pool's spin-wait, WorkerPool.spinLimit, makes the
    /// split pay again: issue 18, bench/RESULTS.md.)
    static let minimumBlockWork = 1 << 21
    /// A block is this many rows (or columns) or more: each block's BLAS call packs the other
    /// operand again, so thin blocks spend their time copying. Measured on OpenBLAS 0.3.21 (one
    /// thread, 1024^3 and 2048^3, rows split, against one call): 512-row blocks cost nothing
    /// measurable, 256-row blocks about 3 %, 128-row blocks 6 to 9 %.
    static let preferredBlockExtent = 512
    /// Blocks down to this size are used when 512 would leave a large product in one block
    /// (a batch of 256 rows times a 784 x 512 weight): two threads then still share it.
    static let minimumBlockExtent = 256
    /// At most this many blocks per matrix (more threads than that work on a batch's matrices).
    static let maximumBlocks = 8

    /// How one product is cut: `blocks` blocks of `extent` rows (or columns), the last one
    /// shorter. A function of m, n and k only, never of the thread count.
    struct Plan: Equatable {
        var splitsRows: Bool
        var extent: Int
        var blocks: Int
    }

    static func plan(m: Int, n: Int, k: Int) -> Plan {
        let whole = Plan(splitsRows: true, extent: m, blocks: 1)
        guard m > 0 && n > 0 && k > 0 else { return whole }
        let (work, overflow) = m.multipliedReportingOverflow(by: n)
        let (total, overflow2) = work.multipliedReportingOverflow(by: k)
        let cap = overflow || overflow2 ? maximumBlocks : Swift.min(maximumBlocks, total / minimumBlockWork)
        guard cap >= 2 else { return whole }
        /// The blocks along an axis of `extent`, each at least `least` long.
        func blocks(along extent: Int, least: Int) -> Int { Swift.max(1, Swift.min(cap, extent / least)) }
        var rowBlocks = blocks(along: m, least: preferredBlockExtent)
        var columnBlocks = blocks(along: n, least: preferredBlockExtent)
        if Swift.max(rowBlocks, columnBlocks) < 2 {
            rowBlocks = blocks(along: m, least: minimumBlockExtent)
            columnBlocks = blocks(along: n, least: minimumBlockExtent)
        }
        // Rows first: a row block is one contiguous run of A and C.
        let splitsRows = rowBlocks >= columnBlocks
        // A power of two (3 becomes 2): blocks of equal size then share out evenly over 2, 4 or 8
        // threads, where 3 blocks on 2 threads would leave one thread idle a third of the time.
        let count = 1 << (Int.bitWidth - 1 - (splitsRows ? rowBlocks : columnBlocks).leadingZeroBitCount)
        guard count >= 2 else { return whole }
        let extent = splitsRows ? m : n
        // Equal blocks, rounded up to a multiple of 16 (whole micro-tiles), the last one shorter.
        let size = ((extent + count - 1) / count + 15) / 16 * 16
        return Plan(splitsRows: splitsRows, extent: size, blocks: (extent + size - 1) / size)
    }

    /// Held (shared) by every product for its whole run and taken exclusively by
    /// ForkSafety.prepare, so that no thread is inside OpenBLAS, whose own locks the child of
    /// a fork could otherwise inherit held. Writers first: a stream of products on other
    /// threads does not hold a fork off.
    // nonisolated(unsafe): set once (a lazy global, initialised atomically); the lock it points
    // to is only used through pthread_rwlock_*, which is thread-safe.
    nonisolated(unsafe) private static let gate: UnsafeMutablePointer<pthread_rwlock_t> = {
        let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
        initializeGate(lock)
        return lock
    }()

    private static func initializeGate(_ lock: UnsafeMutablePointer<pthread_rwlock_t>) {
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
    }

    static func lockForFork() { pthread_rwlock_wrlock(gate) }
    static func unlockAfterFork() { pthread_rwlock_unlock(gate) }
    static func reinitializeInForkedChild() { initializeGate(gate) }

    /// OpenBLAS set to one thread, once, before the first product (see the type's comment).
    private static let singleThreadedBLAS: Void = { openblas_set_num_threads(1) }()

    @inline(__always)
    static func ensureSingleThreadedBLAS() { _ = singleThreadedBLAS }

    /// OpenBLAS set to one thread again (ag_set_num_threads: undoes a caller's own change).
    static func setSingleThreadedBLAS() { openblas_set_num_threads(1) }

    /// C = op(A) op(B) (+ C when accumulating) for `batch` matrices stored one after another
    /// (A: m x k or k x m when transposed, B: k x n or n x k, C: m x n each).
    static func multiply<T: TensorElement>(_ a: UnsafeMutablePointer<T>, transA: Bool,
                                           _ b: UnsafeMutablePointer<T>, transB: Bool,
                                           into c: UnsafeMutablePointer<T>, m: Int, n: Int, k: Int,
                                           batch: Int = 1, accumulate: Bool = false) {
        ensureSingleThreadedBLAS()
        let plan = plan(m: m, n: n, k: k)
        let lda = Swift.max(1, transA ? m : k)
        let ldb = Swift.max(1, transB ? k : n)
        let ldc = Swift.max(1, n)
        let blocks = plan.blocks
        /// Block `j` of matrix `i`: rows r of C (and of op(A)) or columns of C (and of op(B)).
        func run(_ task: Int) {
            let i = task / blocks, j = task % blocks
            let lo = j * plan.extent
            let size = Swift.min(plan.extent, (plan.splitsRows ? m : n) - lo)
            var ap = a + i * m * k, bp = b + i * k * n, cp = c + i * m * n
            var mm = m, nn = n
            if plan.splitsRows {
                // Row lo of op(A): row lo of A, or column lo of the stored k x m.
                ap += transA ? lo : lo * lda
                cp += lo * ldc
                mm = size
            } else {
                // Column lo of op(B): column lo of B, or row lo of the stored n x k.
                bp += transB ? lo * ldb : lo
                cp += lo
                nn = size
            }
            call(ap, lda: lda, transA: transA, bp, ldb: ldb, transB: transB, cp, ldc: ldc,
                 m: mm, n: nn, k: k, accumulate: accumulate)
        }
        let tasks = batch * blocks
        let threads = Parallel.threadCount
        pthread_rwlock_rdlock(gate)
        defer { pthread_rwlock_unlock(gate) }
        if tasks == 1 || threads == 1 {
            for t in 0..<tasks { run(t) }
        } else {
            WorkerPool.shared.run(chunks: tasks, threads: threads, run)
        }
    }

    /// One single-threaded BLAS call.
    @inline(__always)
    private static func call<T: TensorElement>(_ a: UnsafeMutablePointer<T>, lda: Int, transA: Bool,
                                               _ b: UnsafeMutablePointer<T>, ldb: Int, transB: Bool,
                                               _ c: UnsafeMutablePointer<T>, ldc: Int,
                                               m: Int, n: Int, k: Int, accumulate: Bool) {
        let ta = transA ? CblasTrans : CblasNoTrans
        let tb = transB ? CblasTrans : CblasNoTrans
        if T.self == Float.self {
            cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), 1,
                        UnsafeMutableRawPointer(a).assumingMemoryBound(to: Float.self), Int32(lda),
                        UnsafeMutableRawPointer(b).assumingMemoryBound(to: Float.self), Int32(ldb), accumulate ? 1 : 0,
                        UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), Int32(ldc))
        } else {
            cblas_dgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), 1,
                        UnsafeMutableRawPointer(a).assumingMemoryBound(to: Double.self), Int32(lda),
                        UnsafeMutableRawPointer(b).assumingMemoryBound(to: Double.self), Int32(ldb), accumulate ? 1 : 0,
                        UnsafeMutableRawPointer(c).assumingMemoryBound(to: Double.self), Int32(ldc))
        }
    }
}
