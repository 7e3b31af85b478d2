#if canImport(Glibc)
import Glibc
#endif
import AutogradEngine
import CKernels

// Shared memory: tensors over caller memory, writing values in place, DLPack.

/// Memory a C caller lends (ag_tensor_from_buffer, a DLPack import) and how to give it back.
/// `release` runs at most once, and only after `own()`: a call that fails never calls the
/// caller's destroy callback or deleter, now or later (the caller keeps its memory), even when
/// the tensor made so far is dropped on the way out.
private final class LentMemory {
    private var release: (() -> Void)?
    private var owned = false

    init(release: @escaping () -> Void) { self.release = release }

    /// The call succeeded: the library owns the memory from now on.
    func own() { owned = true }

    /// Gives the memory back (the engine's last use of it is gone); once, and only if owned.
    func giveBack() {
        guard owned, let r = release else { return }
        release = nil
        r()
    }
}

/// Makes the tensor `make(onRelease)` over lent memory and stores its handle in `out`; only then
/// does the library own the memory (see LentMemory).
private func produceLent(_ function: StaticString, _ out: UnsafeMutablePointer<UInt64>?, release: @escaping () -> Void,
                         _ make: (@escaping () -> Void) throws -> Tensor) -> Int32 {
    guarded(function) {
        let out = try Arg.out(out)
        try MemoryReserve.ensureArmed()
        let lent = LentMemory(release: release)
        let handle = try Arg.handle(make { lent.giveBack() })
        lent.own()
        out.pointee = handle
    }
}

@_cdecl("ag_tensor_from_buffer")
public func ag_tensor_from_buffer(_ out: UnsafeMutablePointer<UInt64>?, _ data: UnsafeMutableRawPointer?,
                                  _ shape: UnsafePointer<Int64>?, _ ndim: Int64, _ dtype: Int32,
                                  _ userData: UnsafeMutableRawPointer?, _ destroy: CDestroy?) -> Int32 {
    produceLent("ag_tensor_from_buffer", out, release: { destroy?(userData) }) { onRelease in
        let dims = try Arg.shape(shape, ndim)
        let dt = try Arg.dtype(dtype)
        return try Tensor(borrowing: data, shape: dims, dtype: dt, onRelease: onRelease)
    }
}

@_cdecl("ag_tensor_data_ptr_mut")
public func ag_tensor_data_ptr_mut(_ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_data_ptr_mut") {
        let out = try Arg.out(out)
        out.pointee = try Arg.tensor(t).mutableDataPointer()
    }
}

@_cdecl("ag_tensor_mark_modified")
public func ag_tensor_mark_modified(_ t: UInt64) -> Int32 {
    guarded("ag_tensor_mark_modified") { try Arg.tensor(t).markModified() }
}

@_cdecl("ag_tensor_version")
public func ag_tensor_version(_ out: UnsafeMutablePointer<Int64>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_version") {
        let out = try Arg.out(out)
        out.pointee = Int64(try Arg.tensor(t).version)
    }
}

// MARK: - DLPack

/// DLPack's description of a dtype Autograd holds (one lane).
private func dlDataType(_ dtype: DType) -> DLDataType {
    switch dtype {
    case .float32: return DLDataType(code: UInt8(kDLFloat.rawValue), bits: 32, lanes: 1)
    case .float64: return DLDataType(code: UInt8(kDLFloat.rawValue), bits: 64, lanes: 1)
    case .int64: return DLDataType(code: UInt8(kDLInt.rawValue), bits: 64, lanes: 1)
    case .bool: return DLDataType(code: UInt8(kDLBool.rawValue), bits: 8, lanes: 1)
    }
}

/// The Autograd dtype of a DLPack dtype, or a dtype error naming it.
private func dtype(of d: DLDataType) throws -> DType {
    let code = UInt32(d.code)
    switch (code, d.bits, d.lanes) {
    case (kDLFloat.rawValue, 32, 1): return .float32
    case (kDLFloat.rawValue, 64, 1): return .float64
    case (kDLInt.rawValue, 64, 1): return .int64
    case (kDLBool.rawValue, 8, 1): return .bool
    default:
        throw AutogradError.dtype("the DLPack dtype (code \(d.code), bits \(d.bits), lanes \(d.lanes)) is not one Autograd holds (float32, float64, int64 or bool, one lane)")
    }
}

/// Fills `dl` for t's values: data, CPU device, dtype, rank, and shape and compact row-major
/// strides (in elements) written into `extents` (2 * rank int64s, or unused for rank 0).
private func describe(_ t: Tensor, into dl: inout DLTensor, extents: UnsafeMutablePointer<Int64>) {
    let rank = t.rank
    var step: Int64 = 1
    for i in stride(from: rank - 1, through: 0, by: -1) {
        extents[i] = Int64(t.shape[i])
        extents[rank + i] = step
        // The product of the extents after axis i, a zero extent counted as 1 (an empty
        // tensor's strides are never stepped along); it divides the product of the non-zero
        // extents, which Shape.count checked fits int64, so it cannot wrap.
        step = step &* Int64(max(t.shape[i], 1))
    }
    dl.data = UnsafeMutableRawPointer(mutating: t.unsafeDataPointer)
    dl.device = DLDevice(device_type: kDLCPU, device_id: 0)
    dl.ndim = Int32(rank)
    dl.dtype = dlDataType(t.dtype)
    dl.shape = extents
    dl.strides = extents + rank
    dl.byte_offset = 0
}

/// One malloc'd block: the managed struct `M` (its size a multiple of 8), then the shape and
/// the strides (max(rank, 1) int64s each, so a 0-d tensor's pointers point into the block).
/// Nil when malloc fails.
private func allocateManaged<M>(_: M.Type, rank: Int) -> (UnsafeMutablePointer<M>, UnsafeMutablePointer<Int64>)? {
    let head = (MemoryLayout<M>.stride + 7) / 8 * 8
    guard let block = malloc(head + 2 * max(rank, 1) * MemoryLayout<Int64>.stride) else { return nil }
    // malloc's memory is aligned for any scalar; M and the int64s start at multiples of 8.
    return (block.bindMemory(to: M.self, capacity: 1), (block + head).bindMemory(to: Int64.self, capacity: 2 * max(rank, 1)))
}

/// manager_ctx of an export: a retained tensor sharing t's values and nothing else (no graph),
/// so the values outlive every handle until the deleter releases it.
private func retainedValues(_ t: Tensor) -> UnsafeMutableRawPointer {
    // +1 given back exactly once by the deleter (releaseExport), which the consumer calls once.
    Unmanaged.passRetained(t.detach()).toOpaque()
}

/// Gives back what an export holds: the +1 of `retainedValues` (which may free a caller's
/// memory under the values, see ag_tensor_from_buffer) and the block itself.
private func releaseExport(_ block: UnsafeMutableRawPointer, _ ctx: UnsafeMutableRawPointer?) {
    // ctx is the +1 taken by retainedValues for this block (our deleter is only installed on
    // blocks we filled); the consumer calls the deleter once, so it is released once.
    if let ctx { Unmanaged<Tensor>.fromOpaque(ctx).release() }
    free(block)
}

private let versionedDeleter: @convention(c) (UnsafeMutablePointer<DLManagedTensorVersioned>?) -> Void = { m in
    guard let m else { return }
    releaseExport(UnsafeMutableRawPointer(m), m.pointee.manager_ctx)
}

private let unversionedDeleter: @convention(c) (UnsafeMutablePointer<DLManagedTensor>?) -> Void = { m in
    guard let m else { return }
    releaseExport(UnsafeMutableRawPointer(m), m.pointee.manager_ctx)
}

@_cdecl("ag_tensor_to_dlpack")
public func ag_tensor_to_dlpack(_ out: UnsafeMutablePointer<UnsafeMutablePointer<DLManagedTensorVersioned>?>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_to_dlpack") {
        let out = try Arg.out(out)
        let x = try Arg.tensor(t)
        guard let (m, extents) = allocateManaged(DLManagedTensorVersioned.self, rank: x.rank) else {
            throw AutogradError.outOfMemory("cannot allocate the DLPack tensor for rank \(x.rank)")
        }
        var dl = DLTensor()
        describe(x, into: &dl, extents: extents)
        m.initialize(to: DLManagedTensorVersioned(
            version: DLPackVersion(major: UInt32(DLPACK_MAJOR_VERSION), minor: UInt32(DLPACK_MINOR_VERSION)),
            manager_ctx: retainedValues(x), deleter: versionedDeleter,
            flags: x.isReadOnly ? UInt64(DLPACK_FLAG_BITMASK_READ_ONLY) : 0, dl_tensor: dl))
        out.pointee = m
    }
}

@_cdecl("ag_tensor_to_dlpack_unversioned")
public func ag_tensor_to_dlpack_unversioned(_ out: UnsafeMutablePointer<UnsafeMutablePointer<DLManagedTensor>?>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_to_dlpack_unversioned") {
        let out = try Arg.out(out)
        let x = try Arg.tensor(t)
        if x.isReadOnly {
            throw AutogradError.state("the tensor is read-only memory, which the unversioned DLManagedTensor cannot mark read-only; use ag_tensor_to_dlpack")
        }
        guard let (m, extents) = allocateManaged(DLManagedTensor.self, rank: x.rank) else {
            throw AutogradError.outOfMemory("cannot allocate the DLPack tensor for rank \(x.rank)")
        }
        var dl = DLTensor()
        describe(x, into: &dl, extents: extents)
        m.initialize(to: DLManagedTensor(dl_tensor: dl, manager_ctx: retainedValues(x), deleter: unversionedDeleter))
        out.pointee = m
    }
}

/// A tensor over the memory `dl` describes, checked field by field (see the header's
/// ag_tensor_from_dlpack); `onRelease` (the producer's deleter) runs once the engine no longer
/// uses the memory. Reads only the fields and the shape and strides arrays.
private func tensor(over dl: DLTensor, readOnly: Bool, onRelease: @escaping () -> Void) throws -> Tensor {
    let device = dl.device.device_type
    guard device == kDLCPU || device == kDLCUDAHost else {
        throw AutogradError.argument("the DLPack tensor is on device type \(device.rawValue) (device_id \(dl.device.device_id)); only CPU memory (kDLCPU = 1, kDLCUDAHost = 3) is read")
    }
    let dt = try dtype(of: dl.dtype)
    guard dl.ndim >= 0 && Int(dl.ndim) <= Shape.maxRank else {
        throw AutogradError.shape("the DLPack tensor's ndim \(dl.ndim) is outside 0...\(Shape.maxRank)")
    }
    let rank = Int(dl.ndim)
    var dims: [Int] = []
    if rank > 0 {
        guard let shape = dl.shape else { throw AutogradError.argument("the DLPack tensor's shape is NULL but its ndim is \(rank)") }
        dims = (0..<rank).map { Int(shape[$0]) }
    }
    let n = try Shape.count(dims)
    if n > 0, let strides = dl.strides {
        // Row-major compact: each axis of extent > 1 has the product of the extents after it
        // (extents 1 may have any stride: no step is ever taken along them). With no element
        // any strides describe the same (empty) tensor.
        var compact = 1
        for i in stride(from: rank - 1, through: 0, by: -1) {
            if dims[i] > 1 && strides[i] != Int64(compact) {
                let given = (0..<rank).map { strides[$0] }
                throw AutogradError.argument("the DLPack tensor's strides \(given) for shape \(dims) are not row-major contiguous; make it contiguous first (numpy.ascontiguousarray, torch.Tensor.contiguous)")
            }
            compact *= dims[i]  // at most n, which fits
        }
    }
    var data: UnsafeMutableRawPointer? = nil
    if n > 0 {
        guard let base = dl.data else {
            throw AutogradError.argument("the DLPack tensor's data is NULL but its shape \(dims) has \(n) elements")
        }
        let address = UInt(bitPattern: base)
        guard dl.byte_offset <= UInt64(UInt.max - address) else {
            throw AutogradError.argument("the DLPack tensor's byte_offset \(dl.byte_offset) runs past the end of the address space")
        }
        data = base + Int(bitPattern: UInt(dl.byte_offset))
    }
    return try Tensor(borrowing: data, shape: dims, dtype: dt, readOnly: readOnly, onRelease: onRelease)
}

@_cdecl("ag_tensor_from_dlpack")
public func ag_tensor_from_dlpack(_ out: UnsafeMutablePointer<UInt64>?, _ m: UnsafeMutablePointer<DLManagedTensorVersioned>?) -> Int32 {
    let deleter = m?.pointee.deleter
    return produceLent("ag_tensor_from_dlpack", out, release: { if let m { deleter?(m) } }) { onRelease in
        guard let m else { throw AutogradError.argument("m is NULL") }
        let v = m.pointee.version
        guard v.major == UInt32(DLPACK_MAJOR_VERSION) else {
            throw AutogradError.argument("DLPack version \(v.major).\(v.minor) is not supported (major version 1 is read); the caller keeps the tensor (its deleter may still be called)")
        }
        let readOnly = m.pointee.flags & UInt64(DLPACK_FLAG_BITMASK_READ_ONLY) != 0
        return try tensor(over: m.pointee.dl_tensor, readOnly: readOnly, onRelease: onRelease)
    }
}

@_cdecl("ag_tensor_from_dlpack_unversioned")
public func ag_tensor_from_dlpack_unversioned(_ out: UnsafeMutablePointer<UInt64>?, _ m: UnsafeMutablePointer<DLManagedTensor>?) -> Int32 {
    let deleter = m?.pointee.deleter
    return produceLent("ag_tensor_from_dlpack_unversioned", out, release: { if let m { deleter?(m) } }) { onRelease in
        guard let m else { throw AutogradError.argument("m is NULL") }
        return try tensor(over: m.pointee.dl_tensor, readOnly: false, onRelease: onRelease)
    }
}
