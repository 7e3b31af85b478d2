#if canImport(Glibc)
import Glibc
#endif
import AutogradEngine

// Tensors: creation, inspection and release.

@_cdecl("ag_tensor_from_data")
public func ag_tensor_from_data(_ out: UnsafeMutablePointer<UInt64>?, _ data: UnsafeRawPointer?,
                                _ shape: UnsafePointer<Int64>?, _ ndim: Int64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_from_data", out) {
        let dims = try Arg.shape(shape, ndim)
        let dt = try Arg.dtype(dtype)
        return try Tensor(copying: data, shape: dims, dtype: dt)
    }
}

@_cdecl("ag_tensor_zeros")
public func ag_tensor_zeros(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_zeros", out) { try Tensor.zeros(Arg.shape(shape, ndim), dtype: Arg.dtype(dtype)) }
}

@_cdecl("ag_tensor_ones")
public func ag_tensor_ones(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_ones", out) { try Tensor.ones(Arg.shape(shape, ndim), dtype: Arg.dtype(dtype)) }
}

@_cdecl("ag_tensor_full")
public func ag_tensor_full(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64, _ value: Double, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_full", out) { try Tensor.full(Arg.shape(shape, ndim), value, dtype: Arg.dtype(dtype)) }
}

@_cdecl("ag_tensor_arange")
public func ag_tensor_arange(_ out: UnsafeMutablePointer<UInt64>?, _ start: Double, _ stop: Double, _ step: Double, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_arange", out) { try Tensor.arange(start: start, stop: stop, step: step, dtype: Arg.dtype(dtype)) }
}

@_cdecl("ag_tensor_eye")
public func ag_tensor_eye(_ out: UnsafeMutablePointer<UInt64>?, _ n: Int64, _ m: Int64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_eye", out) {
        let dt = try Arg.dtype(dtype)
        guard n >= 0 && m >= 0 else { throw AutogradError.shape("eye: extents \(n) and \(m) must not be negative") }
        return try Tensor.eye(Int(n), Int(m), dtype: dt)
    }
}

@_cdecl("ag_tensor_rand_uniform")
public func ag_tensor_rand_uniform(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64,
                                   _ low: Double, _ high: Double, _ seed: UInt64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_rand_uniform", out) {
        try Tensor.uniform(Arg.shape(shape, ndim), low: low, high: high, seed: seed, dtype: Arg.dtype(dtype))
    }
}

@_cdecl("ag_tensor_rand_normal")
public func ag_tensor_rand_normal(_ out: UnsafeMutablePointer<UInt64>?, _ shape: UnsafePointer<Int64>?, _ ndim: Int64,
                                  _ mean: Double, _ std: Double, _ seed: UInt64, _ dtype: Int32) -> Int32 {
    produce("ag_tensor_rand_normal", out) {
        try Tensor.normal(Arg.shape(shape, ndim), mean: mean, std: std, seed: seed, dtype: Arg.dtype(dtype))
    }
}

@_cdecl("ag_tensor_free")
public func ag_tensor_free(_ t: UInt64) -> Int32 {
    if t == 0 { return Status.ok.rawValue }
    guard HandleTable.shared.remove(t, kind: .tensor) else {
        return fail(.invalidHandle, "ag_tensor_free: handle 0x\(String(t, radix: 16)) is not a live tensor handle (already freed, made up, or of another kind)")
    }
    return Status.ok.rawValue
}

@_cdecl("ag_tensor_ndim")
public func ag_tensor_ndim(_ out: UnsafeMutablePointer<Int64>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_ndim") {
        let out = try Arg.out(out)
        out.pointee = Int64(try Arg.tensor(t).rank)
    }
}

@_cdecl("ag_tensor_shape")
public func ag_tensor_shape(_ out: UnsafeMutablePointer<Int64>?, _ capacity: Int64, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_shape") {
        let tensor = try Arg.tensor(t)
        guard capacity >= Int64(tensor.rank) else {
            throw AutogradError.argument("capacity \(capacity) is less than the rank \(tensor.rank)")
        }
        if tensor.rank == 0 { return }
        let out = try Arg.out(out)
        for (i, d) in tensor.shape.enumerated() { out[i] = Int64(d) }
    }
}

@_cdecl("ag_tensor_numel")
public func ag_tensor_numel(_ out: UnsafeMutablePointer<Int64>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_numel") {
        let out = try Arg.out(out)
        out.pointee = Int64(try Arg.tensor(t).count)
    }
}

@_cdecl("ag_tensor_dtype")
public func ag_tensor_dtype(_ out: UnsafeMutablePointer<Int32>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_dtype") {
        let out = try Arg.out(out)
        out.pointee = try Arg.tensor(t).dtype.rawValue
    }
}

@_cdecl("ag_tensor_copy_data")
public func ag_tensor_copy_data(_ out: UnsafeMutableRawPointer?, _ capacity: Int64, _ dtype: Int32, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_copy_data") {
        let tensor = try Arg.tensor(t)
        let target = try Arg.dtype(dtype)
        guard capacity >= 0 else { throw AutogradError.argument("capacity \(capacity) is negative") }
        try tensor.copyValues(to: out, capacity: Int(capacity), dtype: target)
    }
}

@_cdecl("ag_tensor_data_ptr")
public func ag_tensor_data_ptr(_ out: UnsafeMutablePointer<UnsafeRawPointer?>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_data_ptr") {
        let out = try Arg.out(out)
        out.pointee = try Arg.tensor(t).unsafeDataPointer
    }
}

@_cdecl("ag_tensor_copy_")
public func ag_tensor_copy_(_ dst: UInt64, _ src: UInt64) -> Int32 {
    guarded("ag_tensor_copy_") {
        try Arg.tensor(dst, "dst").replaceValues(with: Arg.tensor(src, "src"))
    }
}

@_cdecl("ag_tensor_item")
public func ag_tensor_item(_ out: UnsafeMutablePointer<Double>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_item") {
        let out = try Arg.out(out)
        out.pointee = try Arg.tensor(t).item()
    }
}

@_cdecl("ag_tensor_set_requires_grad")
public func ag_tensor_set_requires_grad(_ t: UInt64, _ flag: UInt8) -> Int32 {
    guarded("ag_tensor_set_requires_grad") { try Arg.tensor(t).setRequiresGrad(flag != 0) }
}

@_cdecl("ag_tensor_requires_grad")
public func ag_tensor_requires_grad(_ out: UnsafeMutablePointer<Bool>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_requires_grad") {
        let out = try Arg.out(out)
        out.pointee = try Arg.tensor(t).requiresGrad
    }
}

@_cdecl("ag_tensor_grad")
public func ag_tensor_grad(_ out: UnsafeMutablePointer<UInt64>?, _ t: UInt64) -> Int32 {
    guarded("ag_tensor_grad") {
        let out = try Arg.out(out)
        let tensor = try Arg.tensor(t)
        out.pointee = try tensor.grad.map(Arg.handle) ?? 0
    }
}

@_cdecl("ag_tensor_zero_grad")
public func ag_tensor_zero_grad(_ t: UInt64) -> Int32 {
    guarded("ag_tensor_zero_grad") { try Arg.tensor(t).zeroGrad() }
}
