import Autograd

/// Checked conversions from C arguments: handles, shapes, axes, dtypes and out-pointers.
enum Arg {
    static func tensor(_ handle: UInt64, _ what: String = "tensor") throws -> Tensor {
        guard handle != 0 else { throw InvalidHandle(message: "\(what) handle is 0 (AG_NULL_TENSOR)") }
        guard let t = HandleTable.shared.lookup(handle, kind: .tensor) as? Tensor else {
            throw InvalidHandle(message: "\(what) handle 0x\(String(handle, radix: 16)) is not a live tensor handle (freed, made up, or of another kind)")
        }
        return t
    }

    /// A new handle for `t`, owned by the caller.
    static func handle(_ t: Tensor) throws -> UInt64 {
        try HandleTable.shared.insert(t, kind: .tensor)
    }

    static func out<T>(_ p: UnsafeMutablePointer<T>?, _ name: String = "out") throws -> UnsafeMutablePointer<T> {
        guard let p else { throw AutogradError.argument("the output pointer '\(name)' is NULL") }
        return p
    }

    static func dtype(_ raw: Int32) throws -> DType {
        guard let d = DType(rawValue: raw) else {
            throw AutogradError.dtype("unknown dtype \(raw) (use AG_FLOAT32 = 1 or AG_FLOAT64 = 2)")
        }
        return d
    }

    static func shape(_ shape: UnsafePointer<Int64>?, _ ndim: Int64) throws -> [Int] {
        guard ndim >= 0 && ndim <= Int64(Shape.maxRank) else {
            throw AutogradError.argument("ndim \(ndim) is outside 0...\(Shape.maxRank)")
        }
        if ndim == 0 { return [] }
        guard let shape else { throw AutogradError.argument("shape is NULL but ndim is \(ndim)") }
        let dims = (0..<Int(ndim)).map { Int(shape[$0]) }
        _ = try Shape.count(dims)
        return dims
    }

    static func axes(_ axes: UnsafePointer<Int64>?, _ naxes: Int64) throws -> [Int] {
        guard naxes >= 0 && naxes <= Int64(Shape.maxRank) else {
            throw AutogradError.argument("naxes \(naxes) is outside 0...\(Shape.maxRank)")
        }
        if naxes == 0 { return [] }
        guard let axes else { throw AutogradError.argument("axes is NULL but naxes is \(naxes)") }
        return (0..<Int(naxes)).map { Int(axes[$0]) }
    }
}

/// Runs `body` and stores the handle of the tensor it returns in `out` (checked first, so a
/// NULL out-pointer costs no work and leaks nothing).
@inline(__always)
func produce(_ function: StaticString, _ out: UnsafeMutablePointer<UInt64>?, _ body: () throws -> Tensor) -> Int32 {
    guarded(function) {
        let out = try Arg.out(out)
        out.pointee = try Arg.handle(body())
    }
}
