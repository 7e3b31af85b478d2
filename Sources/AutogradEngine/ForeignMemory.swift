/// A caller's memory under tensors (zero-copy in: ag_tensor_from_buffer, DLPack imports): what
/// gives it back. Storage.foreign keeps the one strong reference to it, so `release` runs once,
/// from deinit, when the last storage over the memory dies (the last tensor, graph or DLPack
/// export using it), on whichever thread drops that use, possibly under the graph lock.
final class ForeignMemory {
    private let release: () -> Void

    init(release: @escaping () -> Void) { self.release = release }

    deinit { release() }
}

extension Tensor {
    /// A new leaf tensor over `Shape.count(shape)` elements of `dtype` at `data`, row-major,
    /// WITHOUT copying: it reads (and, unless `readOnly`, its in-place writers write) that
    /// memory. `data` must be aligned to the element size and stay valid until `onRelease`
    /// runs, once no tensor, graph or DLPack export uses the memory any more (on whichever
    /// thread drops the last use, possibly with the graph lock held: `onRelease` must only give
    /// the memory back, never call into the engine). `data` may be nil only when there are no
    /// elements; with no elements the tensor holds no pointer (`unsafeDataPointer` is nil).
    /// With `readOnly`, every in-place write into it (replaceValues, an optimizer step, batch
    /// norm's running statistics, `mutableDataPointer`) fails with AutogradError.state.
    /// Backward never reuses such memory for a gradient, even when nothing else holds the
    /// tensor. Writes the engine cannot see (the caller writing its buffer) must be followed by
    /// `markModified()`. On failure `onRelease` is not called, now or later.
    public convenience init(borrowing data: UnsafeMutableRawPointer?, shape: [Int], dtype: DType,
                            readOnly: Bool = false, onRelease: (() -> Void)? = nil) throws {
        let n = try Shape.count(shape)
        if n > 0 {
            guard let data else { throw AutogradError.argument("data is NULL but the shape \(shape) has \(n) elements") }
            let address = UInt(bitPattern: data)
            guard address % UInt(dtype.size) == 0 else {
                throw AutogradError.argument("data 0x\(String(address, radix: 16)) is not aligned to the \(dtype.size)-byte elements of \(dtype)")
            }
            // The last byte must be addressable: n * size may not overflow nor run past the end
            // of the address space (a shape no real buffer can have).
            let (bytes, overflow) = n.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, UInt(bytes) <= UInt.max - address else {
                throw AutogradError.shape("\(n) elements of \(dtype) at 0x\(String(address, radix: 16)) run past the end of the address space")
            }
        }
        // Made last: nothing after it fails, so onRelease runs only for a tensor that exists.
        let owner = onRelease.map { ForeignMemory(release: $0) }
        self.init(shape: shape, storage: Storage.foreign(n > 0 ? data : nil, dtype: dtype, count: n, owner: owner, readOnly: readOnly))
        Trace.noteConstant(self)
    }

    /// Whether these values are read-only memory (Tensor(borrowing:readOnly: true), a DLPack
    /// import flagged READ_ONLY): the engine never writes them.
    public var isReadOnly: Bool { storage.isReadOnly }

    /// Whether these values are a caller's memory (Tensor(borrowing:), a DLPack import).
    public var isBorrowedMemory: Bool { storage.header.isForeign }

    /// The version counter of these values, shared by every tensor over them: how many in-place
    /// writes they have had as far as the engine knows, modulo 2^32 (see Storage.version).
    public var version: Int { GraphLock.withLock { Int(storage.version) } }

    /// Records a write into these values that the engine could not see (the caller writing the
    /// buffer it lent, a DLPack consumer writing an export): bumps the version counter, so a
    /// graph that saved the old values refuses a backward (AutogradError.state) instead of
    /// mixing old and new values.
    public func markModified() {
        GraphLock.withLock { storage.bumpVersion() }
    }

    /// A writable pointer to these elements (row-major, this tensor's dtype; nil when there are
    /// none), for writing new values in place. Allowed where `replaceValues` is (a leaf, not one
    /// that requires grad while grad mode is on), not on read-only memory, not while this thread
    /// captures a function (the write could not be replayed). Counts as one in-place write: the
    /// version is bumped now, so graphs that saved these values refuse a later backward. Write
    /// before recording new ops on the tensor; for a later write, ask again. Valid while this
    /// tensor (or another sharing its values) lives.
    public func mutableDataPointer() throws -> UnsafeMutableRawPointer? {
        if let fn = gradFn {
            throw AutogradError.state("the tensor is the result of '\(fn.name)': only leaves can be written in place (detach() the result to write its values)")
        }
        if Trace.recorder != nil {
            throw AutogradError.state("a function is being captured on this thread; a write through a pointer could not be replayed (use copy_)")
        }
        return try GraphLock.withLock {
            if requiresGrad && GradMode.isEnabled {
                throw AutogradError.state("the tensor is a leaf that requires grad while grad mode is on: the write would not be recorded; ask with grad mode off (no_grad), as an optimizer step writes")
            }
            try storage.refuseReadOnly("the tensor")
            storage.bumpVersion()
            return storage.raw
        }
    }
}
