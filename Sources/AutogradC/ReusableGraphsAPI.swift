import AutogradEngine

// Reusable graphs: values in place, recompute, capture and replay.

public typealias CCaptureFunction = @convention(c) (UnsafeMutablePointer<UInt64>?, Int64, UnsafePointer<UInt64>?, Int64, UnsafeMutableRawPointer?) -> Int32

/// The most outputs a captured function may have.
private let maximumOutputs: Int64 = 4096

extension Arg {
    static func function(_ handle: UInt64) throws -> CapturedFunction {
        guard handle != 0 else { throw InvalidHandle(message: "function handle is 0 (AG_NULL_FUNCTION)") }
        guard let object = HandleTable.shared.lookup(handle, kind: .function) else {
            throw InvalidHandle(message: "function handle 0x\(String(handle, radix: 16)) is not a live function handle (freed, made up, or of another kind)")
        }
        return unsafeDowncast(object, to: CapturedFunction.self)  // only CapturedFunctions are stored under .function
    }

    /// n tensor handles, n >= 0 (NULL allowed when n is 0).
    static func tensorsOrNone(_ p: UnsafePointer<UInt64>?, _ n: Int64, _ name: String, count: String) throws -> [Tensor] {
        guard n >= 0 else { throw AutogradError.argument("\(count) \(n) is negative") }
        if n == 0 { return [] }
        return try tensorList(p, n, name, count: count)
    }
}

@_cdecl("ag_tensor_set_data")
public func ag_tensor_set_data(_ t: UInt64, _ data: UnsafeRawPointer?, _ count: Int64, _ dtype: Int32) -> Int32 {
    guarded("ag_tensor_set_data") {
        let dst = try Arg.tensor(t)
        let dt = try Arg.dtype(dtype)
        guard count == Int64(dst.count) else {
            throw AutogradError.argument("count \(count) does not match the tensor's \(dst.count) elements")
        }
        guard data != nil || count == 0 else { throw AutogradError.argument("data is NULL but count is \(count)") }
        let values = try Tensor(copying: data, shape: dst.shape, dtype: dt).converted(to: dst.dtype)
        try dst.replaceValues(with: values)
    }
}

@_cdecl("ag_set_recomputable")
public func ag_set_recomputable(_ previous: UnsafeMutablePointer<Bool>?, _ enabled: UInt8) -> Int32 {
    guarded("ag_set_recomputable") {
        let old = Recompute.setEnabled(enabled != 0)
        previous?.pointee = old
    }
}

@_cdecl("ag_recompute")
public func ag_recompute(_ root: UInt64) -> Int32 {
    guarded("ag_recompute") { try Arg.tensor(root, "root").recompute() }
}

@_cdecl("ag_capture")
public func ag_capture(_ out: UnsafeMutablePointer<UInt64>?, _ fn: CCaptureFunction?, _ inputs: UnsafePointer<UInt64>?,
                       _ ninputs: Int64, _ noutputs: Int64, _ userData: UnsafeMutableRawPointer?) -> Int32 {
    guarded("ag_capture") {
        let out = try Arg.out(out)
        guard let fn else { throw AutogradError.argument("fn is NULL") }
        guard noutputs >= 1 && noutputs <= maximumOutputs else {
            throw AutogradError.argument("noutputs \(noutputs) is outside 1...\(maximumOutputs)")
        }
        let examples = try Arg.tensorsOrNone(inputs, ninputs, "inputs", count: "ninputs")
        let f = try BuildFunction.nested("ag_capture") {
            try CapturedFunction.capture(examples) { placeholders in
                try callCaptureFunction(fn, userData, placeholders, outputs: Int(noutputs))
            }
        }
        out.pointee = try HandleTable.shared.insert(f, kind: .function)
    }
}

/// One call of a C capture function: borrowed handles for the placeholders, its outputs taken
/// over, every handle released whatever happens; each broken contract is AutogradError.callback.
private func callCaptureFunction(_ fn: CCaptureFunction, _ userData: UnsafeMutableRawPointer?, _ inputs: [Tensor],
                                 outputs n: Int) throws -> [Tensor] {
    try callWithHandles("the function", borrowing: [inputs], names: ["inputs"], writes: n, into: "outputs", optional: false) { o, ins in
        fn(o, Int64(n), ins[0], Int64(inputs.count), userData)
    }.map { $0! }  // never nil: without `optional`, a missing output throws inside
}

@_cdecl("ag_function_call")
public func ag_function_call(_ outputs: UnsafeMutablePointer<UInt64>?, _ noutputs: Int64, _ f: UInt64,
                             _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64) -> Int32 {
    guarded("ag_function_call") {
        let out = try Arg.out(outputs, "outputs")
        let function = try Arg.function(f)
        guard noutputs == Int64(function.outputShapes.count) else {
            throw AutogradError.argument("noutputs is \(noutputs), the function has \(function.outputShapes.count) outputs")
        }
        let xs = try Arg.tensorsOrNone(inputs, ninputs, "inputs", count: "ninputs")
        try MemoryReserve.ensureArmed()
        for (k, h) in try Arg.handles(function(xs)).enumerated() { out[k] = h }
    }
}

@_cdecl("ag_function_call_into")
public func ag_function_call_into(_ outputs: UnsafePointer<UInt64>?, _ noutputs: Int64, _ f: UInt64,
                                  _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64) -> Int32 {
    guarded("ag_function_call_into") {
        let function = try Arg.function(f)
        guard noutputs == Int64(function.outputShapes.count) else {
            throw AutogradError.argument("noutputs is \(noutputs), the function has \(function.outputShapes.count) outputs")
        }
        let targets = try Arg.tensorList(outputs, noutputs, "outputs", count: "noutputs")
        let xs = try Arg.tensorsOrNone(inputs, ninputs, "inputs", count: "ninputs")
        try function.call(xs, into: targets)
    }
}

@_cdecl("ag_function_info")
public func ag_function_info(_ out: UnsafeMutablePointer<Int64>?, _ capacity: Int64, _ f: UInt64) -> Int32 {
    guarded("ag_function_info") {
        guard capacity >= 0 else { throw AutogradError.argument("capacity \(capacity) is negative") }
        guard out != nil || capacity == 0 else { throw AutogradError.argument("out is NULL but capacity is \(capacity)") }
        let info = try Arg.function(f).info
        for k in 0..<min(Int(capacity), info.count) { out![k] = Int64(info[k]) }
    }
}

@_cdecl("ag_function_free")
public func ag_function_free(_ f: UInt64) -> Int32 {
    guarded("ag_function_free") {
        if f == 0 { return }
        guard HandleTable.shared.remove(f, kind: .function) else {
            throw InvalidHandle(message: "function handle 0x\(String(f, radix: 16)) is not a live function handle (already freed, made up, or of another kind)")
        }
    }
}
