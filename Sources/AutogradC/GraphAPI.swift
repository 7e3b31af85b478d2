#if canImport(Glibc)
import Glibc
#endif
import Autograd

// Gradient checking and graph pictures (DOT export).

public typealias CBuildFunction = @convention(c) (UnsafeMutablePointer<UInt64>?, UnsafePointer<UInt64>?, Int64, UnsafeMutableRawPointer?) -> Int32

/// How deeply ag_gradcheck calls are nested on this thread (a build function may call it), kept
/// as the pointer value of a thread-specific slot (no allocation, no destructor).
enum GradcheckNesting {
    /// Deeper calls fail with AG_ERR_STATE: a build function that calls ag_gradcheck on itself
    /// would otherwise recurse until the stack overflows.
    static let limit = 8

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static var depth: Int {
        get { Int(bitPattern: pthread_getspecific(key)) }
        set { pthread_setspecific(key, UnsafeRawPointer(bitPattern: newValue)) }
    }
}

/// One call of a C build function on `inputs`: new handles for the inputs (borrowed by the
/// function), its output taken over, every handle released whatever happens. Each way the
/// function breaks its contract is AutogradError.callback with a message saying which.
private func callBuild(_ build: CBuildFunction, _ userData: UnsafeMutableRawPointer?, _ inputs: [Tensor]) throws -> Tensor {
    var handles: [UInt64] = []
    handles.reserveCapacity(inputs.count)
    do {
        for t in inputs { handles.append(try Arg.handle(t)) }
    } catch {
        for h in handles { _ = HandleTable.shared.remove(h, kind: .tensor) }
        throw error
    }
    var out: UInt64 = 0
    let failuresBefore = LastError.failures
    let status = handles.withUnsafeBufferPointer { build(&out, $0.baseAddress, Int64($0.count), userData) }
    // The output, if there is one (taken before the inputs go: it may be one of them, the identity).
    var output: Tensor? = nil
    if status == 0 && out != 0, let object = HandleTable.shared.lookup(out, kind: .tensor) {
        output = unsafeDowncast(object, to: Tensor.self)  // only Tensors are stored under .tensor
    }
    // Release the inputs; one that is gone already was freed by the build function.
    var freedInput: Int? = nil
    for (k, h) in handles.enumerated() where !HandleTable.shared.remove(h, kind: .tensor) {
        if freedInput == nil { freedInput = k }
    }
    // Release the output (also after a failure: the library owns *out whatever build returns);
    // a handle of another kind is left alone.
    if out != 0 && !handles.contains(out) { _ = HandleTable.shared.remove(out, kind: .tensor) }

    guard status == 0 else {
        let inner = LastError.since(failuresBefore).map { " (its last error: \($0))" } ?? ""
        throw AutogradError.callback("the build function returned \(status)" + inner)
    }
    guard out != 0 else {
        throw AutogradError.callback("the build function returned 0 (success) but wrote no tensor handle to *out")
    }
    guard let output else {
        throw AutogradError.callback("the build function wrote 0x\(String(out, radix: 16)) to *out, which is not a live tensor handle (freed, made up, or of another kind)")
    }
    // (An input that is also the output and was freed ended above: it was not live for the lookup.)
    if let k = freedInput {
        throw AutogradError.callback("the build function freed its input handle \(k) (inputs are borrowed: do not free them)")
    }
    return output
}

@_cdecl("ag_gradcheck")
public func ag_gradcheck(_ passed: UnsafeMutablePointer<Bool>?, _ worstInput: UnsafeMutablePointer<Int64>?,
                         _ worstIndex: UnsafeMutablePointer<Int64>?, _ worstAnalytic: UnsafeMutablePointer<Double>?,
                         _ worstNumeric: UnsafeMutablePointer<Double>?, _ build: CBuildFunction?, _ userData: UnsafeMutableRawPointer?,
                         _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64, _ eps: Double, _ atol: Double, _ rtol: Double) -> Int32 {
    guarded("ag_gradcheck") {
        let passedOut = try Arg.out(passed, "passed")
        guard let build else { throw AutogradError.argument("build is NULL") }
        guard eps > 0 && eps.isFinite else { throw AutogradError.argument("eps must be positive and finite, got \(eps)") }
        guard atol >= 0 && rtol >= 0 else { throw AutogradError.argument("atol and rtol must not be negative (got \(atol), \(rtol))") }
        let xs = try Arg.tensorList(inputs, ninputs, "inputs", count: "ninputs")
        let depth = GradcheckNesting.depth
        guard depth < GradcheckNesting.limit else {
            throw AutogradError.state("\(depth) ag_gradcheck calls are active on this thread already, the most nested ag_gradcheck calls allowed (does a build function call ag_gradcheck on itself?)")
        }
        GradcheckNesting.depth = depth + 1
        defer { GradcheckNesting.depth = depth }
        let result = try GradCheck.check(xs, eps: eps, atol: atol, rtol: rtol) { ts in try callBuild(build, userData, ts) }
        passedOut.pointee = result.passed
        worstInput?.pointee = Int64(result.worstInput)
        worstIndex?.pointee = Int64(result.worstIndex)
        worstAnalytic?.pointee = result.analytic
        worstNumeric?.pointee = result.numeric
    }
}

@_cdecl("ag_graph_to_dot")
public func ag_graph_to_dot(_ out: UnsafeMutablePointer<CChar>?, _ capacity: Int64, _ length: UnsafeMutablePointer<Int64>?, _ root: UInt64) -> Int32 {
    guarded("ag_graph_to_dot") {
        let lengthOut = try Arg.out(length, "length")
        guard capacity >= 0 else { throw AutogradError.argument("capacity \(capacity) is negative") }
        guard out != nil || capacity == 0 else { throw AutogradError.argument("out is NULL but capacity is \(capacity)") }
        let dot = Array(try Arg.tensor(root, "root").graphDOT().utf8)
        if let out, capacity > 0 {
            let n = min(dot.count, Int(capacity) - 1)
            dot.withUnsafeBufferPointer { src in
                UnsafeMutableRawPointer(out).copyMemory(from: src.baseAddress!, byteCount: n)
            }
            out[n] = 0
        }
        lengthOut.pointee = Int64(dot.count)
    }
}
