#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import CKernels

/// Splits large elementwise kernels over a small pool of worker threads: a few contiguous
/// blocks per thread, taken in turn, so a worker the system preempts delays one block, not a
/// whole share. Each element is computed the same way whoever computes it, so results do not
/// depend on the thread count.
public enum Parallel {
    /// Below this many elements a kernel runs on the calling thread. A worker spinning for the
    /// next job (WorkerPool.spinLimit) starts within a microsecond; one woken from its sleep
    /// takes tens, which the smallest kernels here do not repay, but the steps of a training
    /// loop keep the workers spinning. Measured on the 2-core machine (issue 18): 2^15 with
    /// the spin-wait against 2^18 without, B11's step at 2 threads went from about 1.0 to 0.8
    /// ms and B10's from 7.3 to 6.4 ms (best of 8 runs).
    static let minimumParallelCount = 1 << 15

    private static let requested = Atomic<Int>(Parallel.defaultThreadCount())

    /// The number of threads kernels may use (the caller included); also applied to OpenBLAS.
    public static var threadCount: Int {
        get { requested.load(ordering: .relaxed) }
    }

    /// The largest thread count accepted.
    public static let maximumThreadCount = 256

    /// Sets the thread count (1...256) for kernels and matrix products. Workers beyond the new
    /// count (n - 1 of them: the caller is the n-th thread) end; OpenBLAS itself stays
    /// single-threaded (Gemm splits products over this pool instead).
    public static func setThreadCount(_ n: Int) throws {
        guard n >= 1 && n <= maximumThreadCount else {
            throw AutogradError.argument("the thread count must be between 1 and \(maximumThreadCount), not \(n)")
        }
        requested.store(n, ordering: .relaxed)
        Gemm.setSingleThreadedBLAS()
        WorkerPool.shared.retire(keeping: n - 1)
    }

    /// The worker threads alive now (for tests of retirement and of fork).
    public static var workerCount: Int { WorkerPool.shared.liveWorkers }

    /// AG_NUM_THREADS when set to a valid number, else the online CPUs (at most 8).
    private static func defaultThreadCount() -> Int {
        if let s = getenv("AG_NUM_THREADS"), let n = Int(String(cString: s)), n >= 1 && n <= maximumThreadCount { return n }
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return Swift.max(1, Swift.min(8, cpus))
    }

    /// Runs `body` over `0..<count` cut into about four blocks per thread (at least 16K
    /// elements each, boundaries on multiples of 1024), on up to `threadCount` threads. Small
    /// counts run inline.
    @inline(__always)
    static func forChunks(count: Int, _ body: (Range<Int>) -> Void) {
        let threads = threadCount
        if threads == 1 || count < minimumParallelCount {
            body(0..<count)
            return
        }
        let chunk = Swift.max(1 << 14, ((count + 4 * threads - 1) / (4 * threads) + 1023) / 1024 * 1024)
        let chunks = (count + chunk - 1) / chunk
        withoutActuallyEscaping(body) { body in
            WorkerPool.shared.run(chunks: chunks, threads: threads) { c in
                let start = c * chunk
                body(start..<Swift.min(count, start + chunk))
            }
        }
    }
}

/// Persistent worker threads that take chunk indices from a shared counter. Between jobs a
/// worker spins a while (spinLimit), then sleeps on a condition. One job runs at a time; a
/// caller that finds the pool busy (another thread's job, or a kernel inside a kernel) runs its
/// chunks itself. Workers start on first need, up to the thread count less one; when
/// the count is lowered the surplus ones end (`retire`). After fork() the child's pool starts
/// empty (`resetInForkedChild`).
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let busy = Atomic<Bool>(false)
    private let nextChunk = Atomic<Int>(0)
    // Guarded by mutex.
    private var job: ((Int) -> Void)? = nil
    private var chunkCount = 0
    private var generation = 0
    /// `generation` as a spinning worker reads it without the mutex: stored once the job is in
    /// place (see `spinLimit`).
    private let publishedGeneration = Atomic<Int>(0)
    /// How many workers may still join the current job, and how many are inside it.
    private var openSeats = 0
    /// (Changed with the mutex held; run() also reads it without, while it spins.)
    private let running = Atomic<Int>(0)
    private var workers = 0
    /// Workers beyond this many end when they next wake.
    private var keep = Int.max

    /// How many pauses a worker spins for the next job before it sleeps, and run() for the
    /// workers to finish before it sleeps: up to about 1 ms on current x86 cores (a pause takes
    /// 20 to 40 ns there), as OpenMP runtimes spin. Every `yieldEvery` pauses the spinner yields its core, so that a
    /// thread waiting to run (another program, or valgrind's serialised threads) gets it.
    static let spinLimit = 32768
    static let yieldEvery = 256

    /// One step of a spin-wait: a pause, or every `yieldEvery`-th a yield of the core.
    @inline(__always)
    private static func pause(_ spins: Int) {
        if spins % yieldEvery == yieldEvery - 1 { sched_yield() } else { agk_cpu_relax() }
    }

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
    }

    var liveWorkers: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return workers
    }

    /// Ends the workers beyond `n`: each ends when it next wakes (at once when asleep between
    /// jobs, after its chunks when inside one). Called with the new thread count less one.
    func retire(keeping n: Int) {
        pthread_mutex_lock(mutex)
        keep = n
        if workers > n { pthread_cond_broadcast(wake) }
        pthread_mutex_unlock(mutex)
    }

    // fork(): the handlers of ForkSafety take the pool's mutex before fork and give it back in
    // the parent after; in the child, which has none of the workers, the pool starts afresh.

    func lockForFork() { pthread_mutex_lock(mutex) }

    func unlockAfterFork() { pthread_mutex_unlock(mutex) }

    /// In the child after fork(): no worker thread exists there, and a job another parent
    /// thread was running has no caller left. The mutex and conditions are made anew (waiters
    /// recorded in them belong to threads the child does not have).
    func resetInForkedChild() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
        // A job in flight is dropped without releasing it: its closure context belongs to the
        // stack of a thread the child does not have (overwritten in place, never destroyed).
        withUnsafeMutablePointer(to: &job) { $0.initialize(to: nil) }
        chunkCount = 0
        openSeats = 0
        running.store(0, ordering: .relaxed)
        publishedGeneration.store(generation, ordering: .relaxed)
        workers = 0
        nextChunk.store(0, ordering: .relaxed)
        busy.store(false, ordering: .relaxed)
    }

    func run(chunks: Int, threads: Int, _ job: (Int) -> Void) {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for c in 0..<chunks { job(c) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(job) { job in
            let helpers = Swift.min(threads, chunks) - 1
            pthread_mutex_lock(mutex)
            startWorkers(upTo: helpers)
            self.job = job
            chunkCount = chunks
            nextChunk.store(0, ordering: .relaxed)
            openSeats = helpers
            generation &+= 1
            publishedGeneration.store(generation, ordering: .releasing)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)

            work(job, chunks: chunks)

            // Workers that joined finish their chunks (usually within microseconds of this
            // thread: spin a while before sleeping on `done`); late ones find no job.
            var spins = 0
            while running.load(ordering: .acquiring) > 0 && spins < WorkerPool.spinLimit {
                WorkerPool.pause(spins)
                spins += 1
            }
            pthread_mutex_lock(mutex)
            while running.load(ordering: .relaxed) > 0 { pthread_cond_wait(done, mutex) }
            self.job = nil
            openSeats = 0
            pthread_mutex_unlock(mutex)
        }
    }

    /// Takes chunks until none is left.
    private func work(_ job: (Int) -> Void, chunks: Int) {
        while true {
            let c = nextChunk.add(1, ordering: .relaxed).oldValue
            if c >= chunks { return }
            job(c)
        }
    }

    /// Starts threads until there are `n` workers (called with the mutex held). A thread that
    /// cannot be started only means less parallelism.
    private func startWorkers(upTo n: Int) {
        while workers < n {
            var thread = pthread_t()
            let started = pthread_create(&thread, nil, { arg in
                Unmanaged<WorkerPool>.fromOpaque(arg!).takeUnretainedValue().workerLoop()
                return nil
            }, Unmanaged.passUnretained(self).toOpaque())
            guard started == 0 else { return }
            pthread_detach(thread)
            workers += 1
        }
    }

    private func workerLoop() {
        var seen = 0
        pthread_mutex_lock(mutex)
        while true {
            if generation == seen && workers <= keep {
                // Spin a while before sleeping: the next job of a training step comes within
                // microseconds, and a worker that sees it here starts without being woken
                // (a wake-up through the condition costs tens of microseconds).
                pthread_mutex_unlock(mutex)
                var spins = 0
                while publishedGeneration.load(ordering: .acquiring) == seen && spins < WorkerPool.spinLimit {
                    WorkerPool.pause(spins)
                    spins += 1
                }
                pthread_mutex_lock(mutex)
                while generation == seen && workers <= keep { pthread_cond_wait(wake, mutex) }
            }
            if workers > keep {
                workers -= 1
                pthread_mutex_unlock(mutex)
                return
            }
            seen = generation
            guard job != nil, openSeats > 0 else { continue }
            openSeats -= 1
            running.add(1, ordering: .relaxed)
            let chunks = chunkCount
            var joined = job
            pthread_mutex_unlock(mutex)
            work(joined!, chunks: chunks)
            // The job is a closure that run() made escaping only for its own duration
            // (withoutActuallyEscaping): this worker's reference must be gone before `running`
            // drops, after which run() may return and end the closure's context. Left to the end
            // of the scope, the release came after (a trap in debug builds, a late release of a
            // dead context in release).
            joined = nil
            pthread_mutex_lock(mutex)
            if running.subtract(1, ordering: .releasing).newValue == 0 { pthread_cond_signal(done) }
        }
    }
}
