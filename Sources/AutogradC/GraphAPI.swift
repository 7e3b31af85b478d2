#if canImport(Glibc)
import Glibc
#endif
import AutogradEngine

// Gradient checking and graph pictures (DOT export).

public typealias CBuildFunction = @convention(c) (UnsafeMutablePointer<UInt64>?, UnsafePointer<UInt64>?, Int64, UnsafeMutableRawPointer?) -> Int32

@_cdecl("ag_gradcheck")
public func ag_gradcheck(_ passed: UnsafeMutablePointer<Bool>?, _ worstInput: UnsafeMutablePointer<Int64>?,
                         _ worstIndex: UnsafeMutablePointer<Int64>?, _ worstAnalytic: UnsafeMutablePointer<Double>?,
                         _ worstNumeric: UnsafeMutablePointer<Double>?, _ build: CBuildFunction?, _ userData: UnsafeMutableRawPointer?,
                         _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64, _ eps: Double, _ atol: Double, _ rtol: Double) -> Int32 {
    guarded("ag_gradcheck") {
        let passedOut = try Arg.out(passed, "passed")
        let fn = try BuildFunction(build, userData)
        guard eps > 0 && eps.isFinite else { throw AutogradError.argument("eps must be positive and finite, got \(eps)") }
        guard atol >= 0 && rtol >= 0 else { throw AutogradError.argument("atol and rtol must not be negative (got \(atol), \(rtol))") }
        let xs = try Arg.tensorList(inputs, ninputs, "inputs", count: "ninputs")
        let result = try BuildFunction.nested("ag_gradcheck") {
            try GradCheck.check(xs, eps: eps, atol: atol, rtol: rtol) { ts in try fn(ts) }
        }
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
