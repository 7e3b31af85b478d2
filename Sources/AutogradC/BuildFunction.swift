#if canImport(Glibc)
import Glibc
#endif
import AutogradEngine

// The C build function (ag_build_fn) that ag_gradcheck and the function transforms run: the
// contract checks of one call, and the limit on calls nested through build functions.

/// A C build function and its user data, as one call of the library received them.
struct BuildFunction {
    let build: CBuildFunction
    let userData: UnsafeMutableRawPointer?

    /// AutogradError.argument when `build` is NULL.
    init(_ build: CBuildFunction?, _ userData: UnsafeMutableRawPointer?) throws {
        guard let build else { throw AutogradError.argument("build is NULL") }
        self.build = build
        self.userData = userData
    }

    /// One call on `inputs`: new handles for the inputs (borrowed by the function), its output
    /// taken over, every handle released whatever happens. Each way the function breaks its
    /// contract is AutogradError.callback with a message saying which.
    func callAsFunction(_ inputs: [Tensor]) throws -> Tensor {
        let handles = try Arg.handles(inputs)
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

    /// Runs `body` as one more call that runs build functions on this thread: ag_gradcheck and
    /// the transforms, counted together (a build function may call any of them). Beyond
    /// `BuildNesting.limit` it fails with AG_ERR_STATE: a build function that calls its own
    /// caller would otherwise recurse until the stack overflows.
    static func nested<R>(_ function: String, _ body: () throws -> R) throws -> R {
        let depth = BuildNesting.depth
        guard depth < BuildNesting.limit else {
            throw AutogradError.state("\(depth) calls that run build functions (nested ag_gradcheck calls and function transforms, counted together) are active on this thread already, the most allowed (does a build function call \(function) on itself?)")
        }
        BuildNesting.depth = depth + 1
        defer { BuildNesting.depth = depth }
        return try body()
    }
}

/// How deeply calls that run build functions are nested on this thread, kept as the pointer
/// value of a thread-specific slot (no allocation, no destructor).
enum BuildNesting {
    /// The most such calls active on one thread at once.
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
