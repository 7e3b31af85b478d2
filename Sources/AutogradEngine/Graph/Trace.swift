import Synchronization

/// How an op's forward runs again, noted by the op next to its forward while a capture or a
/// recomputable graph is being recorded on its thread (see Trace). Every op notes its rerun (the
/// op itself, on tensors: always right, allocates); elementwise ops and the hot ones also give a
/// kernel over raw buffers that a replay runs without allocating.
struct ForwardStep {
    let name: OpName
    /// The values the op read (shapes as the op saw them; storages by identity).
    let inputs: [StepValue]
    /// The op's result.
    let output: StepValue
    /// The op again, on tensors with the inputs' values (grad mode off).
    let rerun: ([Tensor]) throws -> Tensor
    let kernel: StepKernel
}

/// A value a step reads or writes: its storage (identity and buffer) and its shape there.
struct StepValue {
    let shape: [Int]
    let storage: Storage
    init(_ t: Tensor) { shape = t.shape; storage = t.storage }
    init(shape: [Int], storage: Storage) { self.shape = shape; self.storage = storage }
}

/// What a replay runs for a step besides `rerun`.
enum StepKernel {
    /// None: the replay reruns the op (one allocation per call).
    case rerunOnly
    /// A view: the output shares its input's storage, so there is nothing to run.
    case view
    /// A copy of the input (a replay may use the input itself when nothing reads it after).
    case copy
    /// An elementwise loop (see ElementLoop): fusable with its neighbours.
    case elementwise(ElementLoop)
    /// A loop over the inputs' buffers writing the output's (`args`: the inputs, in order).
    case buffers((_ args: UnsafePointer<UnsafeMutableRawPointer>, _ out: UnsafeMutableRawPointer) throws -> Void)
    /// An in-place write (an optimizer step, a copy into a leaf): `apply(inputs)` writes the
    /// storages in `writes`; the step has no output value of its own.
    case effect(writes: [Storage], apply: ([Tensor]) throws -> Void)
}

/// An elementwise loop over raw buffers: out[i] = f(args[0][i], args[1][i], ...) for i < n,
/// where an argument whose bit is set in `scalars` is a single element read at every i (a
/// broadcast scalar). The loop is the op's own (its value or its fused derivative), so a replay
/// gives the eager op's bits.
enum ElementLoop {
    /// A table op by its kind: its value (role -1) or its fused derivative for input `role`,
    /// reached through ElementwiseKind.dispatch, so the loop is specialised for the op.
    case table(ElementwiseKind, role: Int8, dtype: DType)
    /// Any other loop (ops without a kind, comparisons, masks).
    case closure((_ out: UnsafeMutableRawPointer, _ args: UnsafePointer<UnsafeMutableRawPointer>, _ scalars: Int, _ n: Int) -> Void)

    @inline(__always)
    func callAsFunction(_ out: UnsafeMutableRawPointer, _ args: UnsafePointer<UnsafeMutableRawPointer>, _ scalars: Int, _ n: Int) {
        switch self {
        case .table(let kind, let role, let dtype):
            ElementLoopRunner.run(kind, role: role, dtype: dtype, out, args, scalars, n)
        case .closure(let loop):
            loop(out, args, scalars, n)
        }
    }
}

/// Runs a table op's loop given its kind (see ElementLoop.table).
struct ElementLoopRunner: ElementwiseVisitor {
    let out: UnsafeMutableRawPointer
    let args: UnsafePointer<UnsafeMutableRawPointer>
    let scalars: Int
    let n: Int
    let role: Int8
    let dtype: DType

    @inline(__always)
    static func run(_ kind: ElementwiseKind, role: Int8, dtype: DType, _ out: UnsafeMutableRawPointer,
                    _ args: UnsafePointer<UnsafeMutableRawPointer>, _ scalars: Int, _ n: Int) {
        run(kind.decoded, role: role, dtype: dtype, out, args, scalars, n)
    }

    @inline(__always)
    static func run(_ kind: DecodedElementwiseKind, role: Int8, dtype: DType, _ out: UnsafeMutableRawPointer,
                    _ args: UnsafePointer<UnsafeMutableRawPointer>, _ scalars: Int, _ n: Int) {
        var runner = ElementLoopRunner(out: out, args: args, scalars: scalars, n: n, role: role, dtype: dtype)
        // The visits never throw.
        try? kind.dispatch(to: &runner)
    }

    @inline(__always)
    mutating func visit<Op: UnaryElementwise>(_ op: Op) {
        if role >= 0 {
            FusedLoop.unary(op, dtype: dtype, v: args[0], x: args[1], y: args[3], into: out, count: n, accumulate: false)
            return
        }
        switch dtype {
        case .float32: ElementLoops.unaryValue(op, Float.self, out, args[0], scalars, n)
        case .float64: ElementLoops.unaryValue(op, Double.self, out, args[0], scalars, n)
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }

    @inline(__always)
    mutating func visit<Op: BinaryElementwise>(_ op: Op) {
        if role >= 0 {
            FusedLoop.binary(op, Int(role), dtype: dtype, v: args[0], a: args[1], b: args[2], y: args[3], into: out, count: n, accumulate: false)
            return
        }
        switch dtype {
        case .float32: ElementLoops.binaryValue(op, Float.self, out, args[0], args[1], scalars, n)
        case .float64: ElementLoops.binaryValue(op, Double.self, out, args[0], args[1], scalars, n)
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }
}

/// What one thread records: the steps of a capture in the order they ran, and what it needs to
/// tell the values apart (see CapturedFunction).
final class TraceRecorder {
    var steps: [ForwardStep] = []
    /// Storages made while recording, by identity: held, so no identity is reused meanwhile.
    var made: [ObjectIdentifier: Storage] = [:]
    /// Storages made by creation functions (constants of the function: seeds, `constant(c)`).
    var constants: Set<ObjectIdentifier> = []
    /// Why the capture cannot be replayed, if something said so (a hook, a random creator).
    var refusal: String?
}

/// The switch behind capture and recomputable graphs: ops note their forward (ForwardStep) while
/// a thread records. Costs one relaxed atomic load per op when no thread records.
enum Trace {
    /// Threads that record now (capturing, or with recomputable graphs on).
    private static let recordingThreads = Atomic<Int>(0)

    /// Whether this thread records (ops call it before building a step).
    @inline(__always)
    static var isRecording: Bool {
        guard recordingThreads.load(ordering: .relaxed) != 0 else { return false }
        let state = ThreadState.current
        return state.recorder != nil || state.recomputable
    }

    /// The capture recording on this thread, if any.
    static var recorder: TraceRecorder? {
        recordingThreads.load(ordering: .relaxed) != 0 ? ThreadState.current.recorder : nil
    }

    /// Counts this thread in or out of the recording ones (when its recorder or recomputable
    /// flag changes between none and some).
    static func threadStartsRecording() { recordingThreads.add(1, ordering: .relaxed) }
    static func threadStopsRecording() { recordingThreads.subtract(1, ordering: .relaxed) }

    /// Runs `body` with this thread's recording suspended (a replay or a recompute rerunning ops).
    static func suspended<R>(_ body: () throws -> R) rethrows -> R {
        guard recordingThreads.load(ordering: .relaxed) != 0 else { return try withNoGrad(body) }
        let state = ThreadState.current
        let (recorder, recomputable) = (state.recorder, state.recomputable)
        state.recorder = nil
        state.recomputable = false
        defer { state.recorder = recorder; state.recomputable = recomputable }
        return try withNoGrad(body)
    }

    /// Notes `out` as the result of op `name` on `inputs`: into the capture recording on this
    /// thread, and onto out's node when recomputable graphs are on.
    static func note(_ out: Tensor, _ name: StaticString, _ inputs: [Tensor], kernel: StepKernel = .rerunOnly,
                     _ rerun: @escaping ([Tensor]) throws -> Tensor) {
        note(out, OpName(name), inputs, kernel: kernel, rerun)
    }

    static func note(_ out: Tensor, _ name: OpName, _ inputs: [Tensor], kernel: StepKernel = .rerunOnly,
                     _ rerun: @escaping ([Tensor]) throws -> Tensor) {
        let state = ThreadState.current
        let step = ForwardStep(name: name, inputs: inputs.map(StepValue.init), output: StepValue(out),
                               rerun: rerun, kernel: kernel)
        state.recorder?.steps.append(step)
        if state.recomputable, let node = out.gradFn { Recompute.attach(step, to: node) }
    }

    /// Notes `out` for Recompute only: a composite op whose parts a capture records one by one
    /// but whose node needs a forward of its own.
    static func noteNode(_ out: Tensor, _ name: StaticString, _ inputs: [Tensor], _ rerun: @escaping ([Tensor]) throws -> Tensor) {
        let state = ThreadState.current
        guard state.recomputable, let node = out.gradFn else { return }
        Recompute.attach(ForwardStep(name: OpName(name), inputs: inputs.map(StepValue.init), output: StepValue(out),
                                     rerun: rerun, kernel: .rerunOnly), to: node)
    }

    /// Notes an in-place write of `writes` (see StepKernel.effect) into the capture recording.
    static func noteEffect(_ name: StaticString, reads inputs: [Tensor], writes: [Storage], _ apply: @escaping ([Tensor]) throws -> Void) {
        guard let recorder else { return }
        // An in-place step has no result; its output names no value (an empty storage of its own).
        let dummy = StepValue(shape: [0], storage: Storage.empty())
        recorder.steps.append(ForwardStep(name: OpName(name), inputs: inputs.map(StepValue.init), output: dummy,
                                          rerun: { _ in throw AutogradError.internal("an in-place step has no result") },
                                          kernel: .effect(writes: writes, apply: apply)))
    }

    /// Notes a storage made while this thread captures (see TraceRecorder.made). Checks the
    /// count inline and records out of line, so the per-allocation path retains nothing.
    @inline(__always)
    static func noteMade(_ storage: ManagedBuffer<StorageHeader, UInt64>) {
        // Passed unretained: the caller holds the storage across the call.
        if recordingThreads.load(ordering: .relaxed) != 0 { recordMade(Unmanaged.passUnretained(storage)) }
    }

    @inline(never)
    private static func recordMade(_ storage: Unmanaged<ManagedBuffer<StorageHeader, UInt64>>) {
        guard let recorder = ThreadState.current.recorder else { return }
        let s = unsafeDowncast(storage.takeUnretainedValue(), to: Storage.self)  // made by Storage.make
        recorder.made[ObjectIdentifier(s)] = s
    }

    /// Notes a tensor made by a creation function (its values do not depend on any input).
    static func noteConstant(_ t: Tensor) {
        guard let recorder else { return }
        recorder.constants.insert(ObjectIdentifier(t.storage))
    }

    /// Records why the capture running on this thread cannot be replayed (the first reason wins).
    static func refuse(_ reason: @autoclosure () -> String) {
        guard let recorder, recorder.refusal == nil else { return }
        recorder.refusal = reason()
    }
}

/// The elementwise loops of the op table (see ElementwiseOp.swift), as ElementLoops.
enum ElementLoops {
    /// out = op(x): the op's raw forward kernel where it has one, else its value at each element.
    static func value<Op: UnaryElementwise>(_ op: Op, dtype: DType) -> ElementLoop {
        if op.kind != .none { return .table(op.kind, role: -1, dtype: dtype) }
        switch dtype {
        case .float32: return .closure { out, args, scalars, n in unaryValue(op, Float.self, out, args[0], scalars, n) }
        case .float64, .int64, .bool:  // only floating-point values get here (requireFloatingPoint)
            return .closure { out, args, scalars, n in unaryValue(op, Double.self, out, args[0], scalars, n) }
        }
    }

    @inline(__always)
    static func unaryValue<Op: UnaryElementwise, T: TensorElement>(_ op: Op, _: T.Type, _ out: UnsafeMutableRawPointer,
                                                                   _ x: UnsafeMutableRawPointer, _ scalars: Int, _ n: Int) {
        if scalars & 1 == 0, op.forward(x, into: out, count: n, dtype: T.dtype) { return }
        let o = out.assumingMemoryBound(to: T.self), xp = x.assumingMemoryBound(to: T.self)
        if scalars & 1 != 0 {
            let v = op.value(xp[0])
            for i in 0..<n { o[i] = v }
        } else {
            for i in 0..<n { o[i] = op.value(xp[i]) }
        }
    }

    /// out = op(a, b), either side possibly a broadcast scalar.
    static func value<Op: BinaryElementwise>(_ op: Op, dtype: DType) -> ElementLoop {
        if op.kind != .none { return .table(op.kind, role: -1, dtype: dtype) }
        switch dtype {
        case .float32: return .closure { out, args, scalars, n in binaryValue(op, Float.self, out, args[0], args[1], scalars, n) }
        case .float64, .int64, .bool:  // only floating-point values get here (requireFloatingPoint)
            return .closure { out, args, scalars, n in binaryValue(op, Double.self, out, args[0], args[1], scalars, n) }
        }
    }

    @inline(__always)
    static func binaryValue<Op: BinaryElementwise, T: TensorElement>(_ op: Op, _: T.Type, _ out: UnsafeMutableRawPointer,
                                                                     _ a: UnsafeMutableRawPointer, _ b: UnsafeMutableRawPointer,
                                                                     _ scalars: Int, _ n: Int) {
        zip({ (x: T, y: T) in op.value(x, y) }, out, a, b, scalars, n)
    }

    /// out = f(a, b) for a non-table elementwise function (comparisons, masks), either side
    /// possibly a broadcast scalar; the same closures as the eager op's.
    static func zip(dtype: DType, _ f32: @escaping (Float, Float) -> Float, _ f64: @escaping (Double, Double) -> Double) -> ElementLoop {
        switch dtype {
        case .float32: return .closure { out, args, scalars, n in zip(f32, out, args[0], args[1], scalars, n) }
        case .float64, .int64, .bool:  // only floating-point values get here (requireFloatingPoint)
            return .closure { out, args, scalars, n in zip(f64, out, args[0], args[1], scalars, n) }
        }
    }

    @inline(__always)
    private static func zip<T: TensorElement>(_ f: (T, T) -> T, _ out: UnsafeMutableRawPointer, _ a: UnsafeMutableRawPointer,
                                              _ b: UnsafeMutableRawPointer, _ scalars: Int, _ n: Int) {
        let o = out.assumingMemoryBound(to: T.self)
        let ap = a.assumingMemoryBound(to: T.self), bp = b.assumingMemoryBound(to: T.self)
        switch scalars & 3 {
        case 0: for i in 0..<n { o[i] = f(ap[i], bp[i]) }
        case 1: let s = ap[0]; for i in 0..<n { o[i] = f(s, bp[i]) }
        case 2: let s = bp[0]; for i in 0..<n { o[i] = f(ap[i], s) }
        default: let v = f(ap[0], bp[0]); for i in 0..<n { o[i] = v }
        }
    }

    /// The fused backward loop of a unary op (args: v, x, unused, y: the operands
    /// Node.fusedOperandStorages lists), as the backward pass runs it (fused nodes have a kind).
    static func derivative<Op: UnaryElementwise>(_ op: Op, dtype: DType) -> ElementLoop {
        .table(op.kind, role: 0, dtype: dtype)
    }

    /// The fused backward loop of a binary op for input k (args: v, a, b, y).
    static func derivative<Op: BinaryElementwise>(_ op: Op, _ k: Int, dtype: DType) -> ElementLoop {
        .table(op.kind, role: Int8(k), dtype: dtype)
    }

    /// Runs an elementwise loop on tensors of one count (its arguments) into a new tensor.
    static func run(_ loop: ElementLoop, _ args: [Tensor]) throws -> Tensor {
        let out = try Tensor(uninitialized: args[0].shape, dtype: args[0].dtype)
        guard let o = out.storage.raw else { return out }
        let pointers = args.map { $0.storage.raw ?? o }
        pointers.withUnsafeBufferPointer { loop(o, $0.baseAddress!, 0, out.count) }
        return out
    }

    /// Which of a binary op's operands are broadcast scalars against an output of `count`
    /// elements (bit 0: a, bit 1: b), or nil when one is broadcast some other way.
    static func scalarBits(_ a: Tensor, _ b: Tensor, count: Int) -> Int? {
        var bits = 0
        if a.count != count { guard a.count == 1 else { return nil }; bits |= 1 }
        if b.count != count { guard b.count == 1 else { return nil }; bits |= 2 }
        return bits
    }
}

extension Tensor {
    /// The elements of a buffer holding a tensor of `shape` (for kernels noted as steps).
    @inline(__always)
    static func elements<T: BitwiseCopyable>(_ p: UnsafeMutableRawPointer, _: T.Type, _ shape: [Int]) -> UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(start: p.assumingMemoryBound(to: T.self), count: shape.reduce(1, *))
    }

    /// A binary elementwise op broadcast some other way than a scalar, as a step: the eager
    /// op's own loop (Elementwise.zip) with the strides of a and b against out, specialised for
    /// the op (its value inlined in the loop, not called through a closure per element).
    static func broadcastKernel<Op: BinaryElementwise>(_ op: Op, _ a: Tensor, _ b: Tensor, _ out: Tensor) -> StepKernel {
        let (shape, sa, sb) = (out.shape, Shape.broadcastStrides(a.shape, to: out.shape), Shape.broadcastStrides(b.shape, to: out.shape))
        let (shapeA, shapeB) = (a.shape, b.shape)
        let same = a.count == out.count && b.count == out.count
        switch out.dtype {
        case .float32:
            return .buffers { args, o in
                Elementwise.zip(elements(args[0], Float.self, shapeA), same ? [] : sa, elements(args[1], Float.self, shapeB), same ? [] : sb,
                                into: elements(o, Float.self, shape), shape: shape) { op.value($0, $1) }
            }
        case .float64, .int64, .bool:  // only floating-point values get here (requireFloatingPoint)
            return .buffers { args, o in
                Elementwise.zip(elements(args[0], Double.self, shapeA), same ? [] : sa, elements(args[1], Double.self, shapeB), same ? [] : sb,
                                into: elements(o, Double.self, shape), shape: shape) { op.value($0, $1) }
            }
        }
    }


    /// expand's and permute's kernel as a step: the strided copy of the input into the output.
    static func gatherKernel(_ dtype: DType, from inputShape: [Int], strides: [Int], to outShape: [Int]) -> StepKernel {
        .buffers { args, out in
            switch dtype {
            case .float32: Elementwise.gather(elements(args[0], Float.self, inputShape), strides: strides, into: elements(out, Float.self, outShape), shape: outShape)
            case .float64: Elementwise.gather(elements(args[0], Double.self, inputShape), strides: strides, into: elements(out, Double.self, outShape), shape: outShape)
            case .int64: Elementwise.gather(elements(args[0], Int64.self, inputShape), strides: strides, into: elements(out, Int64.self, outShape), shape: outShape)
            case .bool: Elementwise.gather(elements(args[0], UInt8.self, inputShape), strides: strides, into: elements(out, UInt8.self, outShape), shape: outShape)
            }
        }
    }
}
