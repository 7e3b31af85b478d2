import AutogradEngine

/// Checked conversions from C arguments: handles, shapes, axes, dtypes and out-pointers.
enum Arg {
    static func tensor(_ handle: UInt64, _ what: @autoclosure () -> String = "tensor") throws -> Tensor {
        guard handle != 0 else { throw InvalidHandle(message: "\(what()) handle is 0 (AG_NULL_TENSOR)") }
        // Only Tensor objects are ever stored under the tensor kind, so no dynamic cast is needed.
        guard let object = HandleTable.shared.lookup(handle, kind: .tensor) else {
            throw InvalidHandle(message: "\(what()) handle 0x\(String(handle, radix: 16)) is not a live tensor handle (freed, made up, or of another kind)")
        }
        return unsafeDowncast(object, to: Tensor.self)
    }

    /// The operands of a binary op, looked up together (one lock instead of two).
    static func tensors(_ a: UInt64, _ b: UInt64) throws -> (Tensor, Tensor) {
        guard a != 0 && b != 0 else {
            _ = try tensor(a, "a")
            _ = try tensor(b, "b")
            throw InvalidHandle(message: "unreachable: a null handle passed its check")
        }
        let (x, y) = HandleTable.shared.lookup(a, b, kind: .tensor)
        guard let x, let y else {
            if x == nil { _ = try tensor(a, "a") }
            _ = try tensor(b, "b")
            throw InvalidHandle(message: "unreachable: a dead handle passed its check")
        }
        return (unsafeDowncast(x, to: Tensor.self), unsafeDowncast(y, to: Tensor.self))
    }

    /// A new handle for `t`, owned by the caller.
    static func handle(_ t: consuming Tensor) throws -> UInt64 {
        try HandleTable.shared.insert(consume t, kind: .tensor)
    }

    /// New handles for `tensors`, all or none (a failure releases those already made).
    static func handles(_ tensors: [Tensor]) throws -> [UInt64] {
        var handles: [UInt64] = []
        handles.reserveCapacity(tensors.count)
        do {
            for t in tensors { handles.append(try handle(t)) }
        } catch {
            for h in handles { _ = HandleTable.shared.remove(h, kind: .tensor) }
            throw error
        }
        return handles
    }

    static func out<T>(_ p: UnsafeMutablePointer<T>?, _ name: String = "out") throws -> UnsafeMutablePointer<T> {
        guard let p else { throw AutogradError.argument("the output pointer '\(name)' is NULL") }
        return p
    }

    static func dtype(_ raw: Int32) throws -> DType {
        guard let d = DType(rawValue: raw) else {
            throw AutogradError.dtype("unknown dtype \(raw) (use AG_FLOAT32 = 1, AG_FLOAT64 = 2, AG_INT64 = 3 or AG_BOOL = 4)")
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

    /// Extents as given (no checks beyond rank): for callers that interpret -1 themselves.
    static func extents(_ shape: UnsafePointer<Int64>?, _ ndim: Int64) throws -> [Int] {
        guard ndim >= 0 && ndim <= Int64(Shape.maxRank) else {
            throw AutogradError.argument("ndim \(ndim) is outside 0...\(Shape.maxRank)")
        }
        if ndim == 0 { return [] }
        guard let shape else { throw AutogradError.argument("shape is NULL but ndim is \(ndim)") }
        return (0..<Int(ndim)).map { Int(shape[$0]) }
    }

    /// A shape in which one extent may be -1, inferred so the element count is `count`.
    static func shape(_ shape: UnsafePointer<Int64>?, _ ndim: Int64, inferringFrom count: Int) throws -> [Int] {
        var dims = try extents(shape, ndim)
        let unknown = dims.indices.filter { dims[$0] == -1 }
        guard unknown.count <= 1 else { throw AutogradError.argument("reshape: more than one extent is -1 in \(dims)") }
        if let u = unknown.first {
            dims[u] = 1
            let known = try Shape.count(dims)
            guard known > 0 && count % known == 0 else {
                throw AutogradError.shape("reshape: cannot infer the -1 extent of \(dims) for \(count) elements")
            }
            dims[u] = count / known
        }
        _ = try Shape.count(dims)
        return dims
    }

    /// n int64 indices (n may be 0 with a NULL pointer).
    static func indices(_ p: UnsafePointer<Int64>?, _ n: Int64, _ name: String) throws -> [Int] {
        guard n >= 0 else { throw AutogradError.argument("the number of \(name) (\(n)) is negative") }
        if n == 0 { return [] }
        guard let p else { throw AutogradError.argument("\(name) is NULL but its count is \(n)") }
        return (0..<Int(n)).map { Int(p[$0]) }
    }

    /// n tensor handles (n >= 1).
    static func tensorList(_ p: UnsafePointer<UInt64>?, _ n: Int64, _ name: String = "tensors", count: String = "n") throws -> [Tensor] {
        guard n >= 1 else { throw AutogradError.argument("at least one tensor is needed, \(count) is \(n)") }
        guard let p else { throw AutogradError.argument("\(name) is NULL but \(count) is \(n)") }
        return try (0..<Int(n)).map { try tensor(p[$0], "\(name)[\($0)]") }
    }

    /// A C string as Swift text: NULL and invalid UTF-8 are argument errors naming `what`.
    static func string(_ p: UnsafePointer<CChar>?, _ what: @autoclosure () -> String) throws -> String {
        guard let p else { throw AutogradError.argument("\(what()) is NULL") }
        guard let s = String(validatingCString: p) else { throw AutogradError.argument("\(what()) is not valid UTF-8") }
        return s
    }

    /// n C strings (n >= 0; the array may be NULL when n is 0).
    static func strings(_ p: UnsafePointer<UnsafePointer<CChar>?>?, _ n: Int64, _ what: String, count: String) throws -> [String] {
        guard n >= 0 else { throw AutogradError.argument("\(count) (\(n)) is negative") }
        if n == 0 { return [] }
        guard let p else { throw AutogradError.argument("\(what) is NULL but \(count) is \(n)") }
        return try (0 ..< Int(n)).map { try string(p[$0], "\(what)[\($0)]") }
    }

    /// n (key, value) string pairs from the parallel C arrays metadata_keys and metadata_values
    /// (both may be NULL when nmetadata is 0).
    static func stringPairs(_ keys: UnsafePointer<UnsafePointer<CChar>?>?, _ values: UnsafePointer<UnsafePointer<CChar>?>?,
                            _ n: Int64) throws -> [(key: String, value: String)] {
        let k = try strings(keys, n, "metadata_keys", count: "nmetadata")
        let v = try strings(values, n, "metadata_values", count: "nmetadata")
        return zip(k, v).map { (key: $0, value: $1) }
    }

    /// n (name, tensor) pairs from the parallel C arrays `names` and `what` (n >= 0; both may be
    /// NULL when n is 0).
    static func namedTensors(_ names: UnsafePointer<UnsafePointer<CChar>?>?, _ tensors: UnsafePointer<UInt64>?, _ n: Int64,
                             _ what: String) throws -> [(name: String, tensor: Tensor)] {
        let list = try strings(names, n, "names", count: "n")
        if n == 0 { return [] }
        guard let tensors else { throw AutogradError.argument("\(what) is NULL but n is \(n)") }
        return try list.enumerated().map { i, name in (name, try tensor(tensors[i], "\(what)[\(i)]")) }
    }

    static func axes(_ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ name: String = "axes", count: String = "naxes") throws -> [Int] {
        guard naxes >= 0 && naxes <= Int64(Shape.maxRank) else {
            throw AutogradError.argument("\(count) \(naxes) is outside 0...\(Shape.maxRank)")
        }
        if naxes == 0 { return [] }
        guard let axes else { throw AutogradError.argument("\(name) is NULL but \(count) is \(naxes)") }
        return (0..<Int(naxes)).map { Int(axes[$0]) }
    }
}

/// Runs `body` and stores the handle of the tensor it returns in `out` (checked first, so a
/// NULL out-pointer costs no work and leaks nothing). Refused while the emergency memory
/// reserve is spent and cannot be made again (MemoryReserve), views included.
@inline(__always)
func produce(_ function: StaticString, _ out: UnsafeMutablePointer<UInt64>?, _ body: () throws -> Tensor) -> Int32 {
    guarded(function) {
        let out = try Arg.out(out)
        try MemoryReserve.ensureArmed()
        out.pointee = try Arg.handle(body())
    }
}
