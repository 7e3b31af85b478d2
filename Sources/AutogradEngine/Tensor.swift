import Synchronization

/// An N-dimensional, row-major, contiguous array of float32 or float64 values that can take
/// part in a recorded graph (or of int64 indices or bool masks, which never require grad). A
/// tensor's values never change after creation (leaves updated by an optimizer excepted), so
/// results may share storage with their inputs (reshape, detach).
///
/// Sendable, checked by hand (the C API has always let threads share tensors): `shape` is
/// immutable; `requiresGrad` is atomic; the gradient, hooks and leaf anchor are read and
/// written under `GraphLock` (the anchor is published once, release/acquire); `gradFn` and
/// `tangentBox` are written only while no other thread can see the tensor (a result or alias
/// being made, a forward-mode input) or while it is uniquely referenced (a graph being freed);
/// the values change only through in-place writes (optimizer steps, `replaceValues`), which
/// take `GraphLock` and bump the version counter; a thread that reads values while another
/// writes them may see a half-updated tensor, as in PyTorch, and must order the two itself.
public final class Tensor: @unchecked Sendable {
    /// Extents, outermost first; empty for a 0-d scalar.
    public let shape: [Int]
    /// A `var` only so backward can test it for uniqueness (in-place accumulation); never reassigned.
    private(set) var storage: Storage
    /// Whether gradients flow to this tensor: set by the user on leaves, inherited by results.
    /// Atomic: every op on any thread reads it, and a leaf's owner may change it meanwhile.
    public internal(set) var requiresGrad: Bool {
        get { requiresGradFlag.load(ordering: .acquiring) }
        set { requiresGradFlag.store(newValue, ordering: .releasing) }
    }
    private let requiresGradFlag = Atomic<Bool>(false)
    /// Set once the anchor is made (after it is stored); never cleared.
    private let hasAnchorFlag = Atomic<Bool>(false)
    /// False for a stand-in made from a saved leaf (LeafAnchor.standIn()): it shares the
    /// leaf's anchor but does not end it when freed.
    private let ownsAnchor: Bool
    /// The gradient accumulated by `backward` (leaves only); nil until the first backward.
    public internal(set) var grad: Tensor? {
        get { GraphLock.withLock { leafAnchor?.grad } }
        set {
            // The old gradient (and any graph only it held, hooks included) goes after the lock.
            let old: Tensor? = GraphLock.withLock {
                let anchor = lockedAnchor()
                defer { anchor.grad = newValue }
                return anchor.grad
            }
            _ = old
        }
    }
    /// The node that produced this tensor; nil for leaves and for results recorded in no graph.
    var gradFn: Node?
    /// This tensor's tangent in a forward-mode pass (see ForwardMode); nil outside one.
    var tangentBox: Tangent?
    /// What only leaves need (gradient, hooks, how graphs refer to the leaf), apart so results
    /// stay small. Made under the graph lock and never replaced.
    private var leafAnchor: LeafAnchor?

    /// Hooks on a leaf's gradient (a non-leaf's hooks live on its node); under the graph lock.
    var hooks: [GradHook] {
        get { leafAnchor?.hooks ?? [] }
        set { lockedAnchor().hooks = newValue }
    }

    /// Gradient-ready hooks on a leaf (see GradReadyHook); under the graph lock.
    var readyHooks: [GradReadyHook] {
        get { leafAnchor?.readyHooks ?? [] }
        set { lockedAnchor().readyHooks = newValue }
    }

    /// How graphs refer to this tensor as a leaf. Made when the leaf starts requiring grad,
    /// before the flag is published (release/acquire), so ops on other threads that see the
    /// flag see the anchor; never replaced afterwards.
    var anchor: LeafAnchor {
        if hasAnchorFlag.load(ordering: .acquiring), let a = leafAnchor { return a }
        return GraphLock.withLock { lockedAnchor() }
    }

    /// The anchor if this leaf has one (it required grad, or its gradient or hooks were set),
    /// without making one. Safe on any thread: the flag is published after the anchor, and
    /// neither is ever replaced.
    var existingAnchor: LeafAnchor? {
        hasAnchorFlag.load(ordering: .acquiring) ? leafAnchor : nil
    }

    /// The anchor, made if missing (call under the graph lock).
    private func lockedAnchor() -> LeafAnchor {
        if let a = leafAnchor { return a }
        let a = LeafAnchor(shape: shape, storage: storage, requiresGrad: requiresGrad)
        leafAnchor = a
        hasAnchorFlag.store(true, ordering: .releasing)
        return a
    }

    init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.storage = storage
        self.ownsAnchor = true
    }

    /// A leaf sharing `anchor` (gradient, hooks, values) that does not own it: what a graph
    /// hands its rules for a saved leaf (see LeafAnchor.standIn()).
    init(standingInFor anchor: LeafAnchor) {
        self.shape = anchor.shape
        self.storage = anchor.storage
        self.ownsAnchor = false
        self.leafAnchor = anchor
        hasAnchorFlag.store(true, ordering: .releasing)
        requiresGradFlag.store(anchor.requiresGrad, ordering: .releasing)
    }

    /// A freed leaf's gradient and hooks go with it (nobody could read them): graphs that
    /// still refer to its anchor see it ended and send it nothing. Released after the lock,
    /// as a hook's destructor may call back into the engine.
    deinit {
        guard ownsAnchor, hasAnchorFlag.load(ordering: .acquiring), let a = leafAnchor else { return }
        let dropped = GraphLock.withLock { a.end() }
        _ = dropped  // released here, after the lock
    }

    /// A tensor of `shape` with uninitialised elements (kernels fill it).
    init(uninitialized shape: [Int], dtype: DType) throws {
        self.shape = shape
        self.storage = try Storage.make(dtype: dtype, count: try Shape.count(shape))
        self.ownsAnchor = true
    }

    public var dtype: DType { storage.dtype }

    /// Fails with a dtype error unless this tensor holds floating-point values: every op that
    /// computes with values (rather than moving them) checks its operands with this first.
    @inline(__always)
    func requireFloatingPoint(_ op: @autoclosure () -> String, _ what: @autoclosure () -> String = "input") throws {
        guard dtype.isFloatingPoint else { throw notFloatingPoint(op(), what()) }
    }

    @inline(never)
    private func notFloatingPoint(_ op: String, _ what: String) -> AutogradError {
        AutogradError.dtype("\(op): \(what) is \(dtype); this op needs float32 or float64 (convert with to_dtype)")
    }
    public var rank: Int { shape.count }
    /// The number of elements.
    public var count: Int { storage.count }
    /// True for tensors made by the user rather than by a recorded operation.
    public var isLeaf: Bool { gradFn == nil }

    @inline(__always)
    func buffer<T: TensorElement>(_ type: T.Type) -> UnsafeMutableBufferPointer<T> {
        storage.buffer(type)
    }

    /// Whether this tensor is the only one holding its values (so they may be overwritten).
    /// Never true for a caller's memory (Tensor(borrowing:)) or a replay's borrowed buffer: the
    /// caller sees those bytes whatever holds the storage, so backward must not reuse them.
    func storageIsUnique() -> Bool { !storage.isShared && isKnownUniquelyReferenced(&storage) }

    /// Marks a leaf as one whose gradient is wanted; results of operations cannot be changed.
    public func setRequiresGrad(_ flag: Bool) throws {
        if flag && !dtype.isFloatingPoint {
            throw AutogradError.dtype("requires_grad: \(dtype) tensors cannot require grad (only float32 and float64 values have gradients)")
        }
        try GraphLock.withLock {
            guard isLeaf else {
                throw AutogradError.state("requires_grad can only be changed on leaf tensors, not on the result of an operation (detach it first)")
            }
            if flag || leafAnchor != nil { lockedAnchor().requiresGrad = flag }
            requiresGrad = flag
        }
    }

    /// Writes `source`'s values (broadcast to this tensor's shape, same dtype) into this
    /// tensor's storage, in place, and bumps its version: graphs that saved the old values
    /// then refuse to run backward through them (AutogradError.state) rather than use the new
    /// ones. Tensors sharing the storage (detach) see the write, as in PyTorch's `copy_`.
    /// Refused on the result of a recorded operation, and on a leaf that requires grad while
    /// grad mode is on (the write would not be recorded; do it under no-grad, as an optimizer
    /// step does).
    public func replaceValues(with source: Tensor) throws {
        if let fn = gradFn {
            throw AutogradError.state("in-place write into the result of '\(fn.name)': only leaves can be written in place (detach() the result to write its values; graphs that saved them then refuse a stale backward)")
        }
        guard source.dtype == dtype else {
            throw AutogradError.dtype("in-place write: the source is \(source.dtype) but the tensor is \(dtype)")
        }
        if requiresGrad && GradMode.isEnabled {
            throw AutogradError.state("in-place write into a leaf that requires grad while grad mode is on: the write would not be recorded; make it with grad mode off (no_grad), as an optimizer step does")
        }
        try storage.refuseReadOnly("in-place write: the tensor")
        let values = source.shape == shape ? source : try withNoGrad { try source.expanded(to: shape) }
        if Trace.recorder != nil {
            // A capture replays the write with the values it computed (see CapturedFunction).
            Trace.noteEffect("copy_", reads: [values], writes: [storage]) { ins in try self.replaceValues(with: ins[0]) }
        }
        try GraphLock.withLock {
            // Checked again under the lock that orders it against set_requires_grad.
            if requiresGrad && GradMode.isEnabled {
                throw AutogradError.state("in-place write into a leaf that requires grad while grad mode is on")
            }
            if count > 0, let src = values.storage.raw, let dst = storage.raw, src != dst {
                // memmove semantics: the source may share this storage (a detached alias).
                dst.copyMemory(from: UnsafeRawPointer(src), byteCount: count * dtype.size)
            }
            storage.bumpVersion()
        }
    }

    /// Clears the accumulated gradient.
    public func zeroGrad() { grad = nil }

    /// A tensor sharing this one's values that records no history and requires no grad.
    public func detach() -> Tensor {
        Tensor(shape: shape, storage: storage)
    }
}

// MARK: - Creation and reading values

extension Tensor {
    /// A leaf tensor holding `values` (row-major), converted to `dtype`.
    public convenience init(_ values: [Double], shape: [Int], dtype: DType = .float64) throws {
        let n = try Shape.count(shape)
        guard n == values.count else {
            throw AutogradError.shape("\(values.count) values do not fill shape \(shape) (\(n) elements)")
        }
        self.init(shape: shape, storage: try Storage.make(dtype: dtype, count: n))
        if n > 0, let dst = storage.raw {
            try values.withUnsafeBytes { try Conversion.convert($0.baseAddress!, .float64, into: dst, dtype, count: n, "tensor") }
        }
        Trace.noteConstant(self)
    }

    /// A 0-d leaf tensor.
    public convenience init(scalar: Double, dtype: DType = .float64) throws {
        try self.init([scalar], shape: [], dtype: dtype)
    }

    /// A leaf tensor copied from raw memory holding `Shape.count(shape)` elements of `dtype`
    /// (bool bytes are read as non-zero or zero and stored as 1 or 0).
    public convenience init(copying data: UnsafeRawPointer?, shape: [Int], dtype: DType) throws {
        let storage = try Storage.make(dtype: dtype, count: try Shape.count(shape))
        if storage.count > 0 {
            guard let data, let dst = storage.raw else {
                throw AutogradError.argument("data is NULL but the shape \(shape) has \(storage.count) elements")
            }
            if dtype == .bool {
                let s = data.assumingMemoryBound(to: UInt8.self), d = dst.assumingMemoryBound(to: UInt8.self)
                for i in 0..<storage.count { d[i] = s[i] != 0 ? 1 : 0 }
            } else {
                dst.copyMemory(from: data, byteCount: storage.count * dtype.size)
            }
        }
        self.init(shape: shape, storage: storage)
        Trace.noteConstant(self)
    }

    /// A leaf tensor of `shape` with every element equal to `value` (for int64, a whole number
    /// within int64's range; for bool, non-zero is true).
    package static func full(_ shape: [Int], _ value: Double, dtype: DType = .float64) throws -> Tensor {
        if dtype == .int64 {
            guard let v = Conversion.int64(value), Double(v) == value else {
                throw AutogradError.argument("full: \(value) is not a whole number within int64's range")
            }
            let t = try Tensor(uninitialized: shape, dtype: dtype)
            t.integers().update(repeating: v)
            Trace.noteConstant(t)
            return t
        }
        let t = try Tensor(uninitialized: shape, dtype: dtype)
        switch dtype {
        case .float32: t.buffer(Float.self).update(repeating: Float(value))
        case .float64: t.buffer(Double.self).update(repeating: value)
        case .bool: t.flags().update(repeating: value != 0 ? 1 : 0)
        case .int64: break  // filled above
        }
        Trace.noteConstant(t)
        return t
    }

    package static func zeros(_ shape: [Int], dtype: DType = .float64) throws -> Tensor {
        try full(shape, 0, dtype: dtype)
    }

    package static func ones(_ shape: [Int], dtype: DType = .float64) throws -> Tensor {
        try full(shape, 1, dtype: dtype)
    }

    /// This tensor's values in `target` dtype (self when it already is); records nothing.
    package func converted(to target: DType) throws -> Tensor {
        if target == dtype { return self }
        let out = try Tensor(uninitialized: shape, dtype: target)
        if count > 0, let src = storage.raw, let dst = out.storage.raw {
            try Conversion.convert(src, dtype, into: dst, target, count: count, "to_dtype")
        }
        if Trace.isRecording { Trace.note(out, "convert", [self]) { ins in try ins[0].converted(to: target) } }
        return out
    }

    /// A new leaf tensor holding a copy of these values; records nothing.
    func copy() throws -> Tensor {
        let out = try Tensor(uninitialized: shape, dtype: dtype)
        if count > 0, let src = storage.raw, let dst = out.storage.raw {
            dst.copyMemory(from: src, byteCount: count * dtype.size)
        }
        if Trace.isRecording {
            Trace.note(out, "copy", [self], kernel: .copy) { ins in try ins[0].copy() }
        }
        return out
    }

    /// The elements, row-major, as Double (int64 beyond 2^53 rounds; bool is 0 or 1).
    public var values: [Double] {
        switch dtype {
        case .float32: return buffer(Float.self).map { Double($0) }
        case .float64: return Array(buffer(Double.self))
        case .int64: return integers().map { Double($0) }
        case .bool: return flags().map { $0 != 0 ? 1 : 0 }
        }
    }

    /// The elements as `T`, for kernels that only move values (copies, gathers): T must have the
    /// dtype's size (Float, Double, Int64 or UInt8 for bool).
    @inline(__always)
    func elements<T: BitwiseCopyable>(_: T.Type) -> UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(start: storage.raw?.assumingMemoryBound(to: T.self), count: count)
    }

    /// An int64 tensor's elements (call only when dtype is int64).
    @inline(__always)
    func integers() -> UnsafeMutableBufferPointer<Int64> {
        UnsafeMutableBufferPointer(start: storage.raw?.assumingMemoryBound(to: Int64.self), count: count)
    }

    /// A bool tensor's elements, 0 or 1 (call only when dtype is bool).
    @inline(__always)
    func flags() -> UnsafeMutableBufferPointer<UInt8> {
        UnsafeMutableBufferPointer(start: storage.raw?.assumingMemoryBound(to: UInt8.self), count: count)
    }

    /// An int64 tensor's elements as Swift Ints (the same width on the 64-bit platforms we build for).
    public var int64Values: [Int] {
        switch dtype {
        case .int64: return integers().map { Int($0) }
        default: return values.map { Int(Conversion.int64($0) ?? 0) }
        }
    }

    /// The single element of a one-element tensor.
    package func item() throws -> Double {
        guard count == 1 else { throw AutogradError.shape("item() needs exactly one element, the tensor has shape \(shape)") }
        return values[0]
    }

    /// Copies the elements into `out` (capacity `capacity` elements), converting to `dtype`.
    public func copyValues(to out: UnsafeMutableRawPointer?, capacity: Int, dtype target: DType) throws {
        guard capacity >= count else {
            throw AutogradError.argument("the output buffer holds \(capacity) elements, the tensor has \(count)")
        }
        if count == 0 { return }
        guard let out else { throw AutogradError.argument("the output pointer is NULL") }
        // Copies out keep the dtype, convert between float types, or read int64 and bool as
        // floats (and bool as int64). Other conversions (float -> int64 truncates and may be out
        // of range) are asked for explicitly with to_dtype.
        let allowed = dtype == target || target.isFloatingPoint || (dtype == .bool && target == .int64)
        guard allowed else {
            throw AutogradError.dtype("copy_data: cannot copy \(dtype) values out as \(target); convert the tensor with to_dtype first")
        }
        guard let src = storage.raw else { return }
        try Conversion.convert(src, dtype, into: out, target, count: count, "copy_data")
    }

    /// The raw element storage (borrowed; valid while this tensor lives).
    public var unsafeDataPointer: UnsafeRawPointer? { UnsafeRawPointer(storage.raw) }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        "Tensor(shape: \(shape), dtype: \(dtype)\(requiresGrad ? ", requiresGrad" : ""), values: \(count <= 16 ? "\(values)" : "[\(count) values]"))"
    }
}
