#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A function captured once and replayed on new inputs (ggml's built graph, `jax.jit`, CUDA
/// graphs). `capture` runs the function once on placeholders shaped like the example inputs,
/// recording every op, backward pass, optimizer step and in-place write it makes (see Trace);
/// the recording is compiled into a Program. A call points the program at the new inputs and
/// replays: the same arithmetic in the same order as the eager function, so the same bits.
///
/// What a replay does not redo: hooks (a capture that reaches one is refused), Swift or C code
/// between ops (control flow on values is frozen at the capture's path), and `.grad` fields
/// (a replay updates parameters written in place, not their `.grad`; return gradients as
/// outputs). Tensors made outside the function (parameters) are read in place at each call, so
/// updates to them are seen; constants made inside it keep their capture-time values. Shapes
/// and dtypes are fixed per capture: other ones are an error (capture again for them).
/// Concurrent calls of one function run one at a time (a lock per function).
public final class CapturedFunction: @unchecked Sendable {
    let program: Program
    /// Serialises calls: a run writes the program's buffers. Guards `program`'s run.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Runs `body` once on placeholders with the values, shapes, dtypes and requires_grad of
    /// `examples`, and compiles what it did. Its effects happen (an optimizer step in it
    /// updates the parameters once).
    public static func capture(_ examples: [Tensor], _ body: ([Tensor]) throws -> [Tensor]) throws -> CapturedFunction {
        let state = ThreadState.current
        guard state.recorder == nil else {
            throw AutogradError.state("capture: a capture is already running on this thread (capture cannot be nested)")
        }
        guard state.forwardLevel == 0 else {
            throw AutogradError.state("capture: cannot capture inside a forward-mode pass (jvp, hvp, hessian)")
        }
        let placeholders = try examples.map { example -> Tensor in
            let t = try example.copy()
            try t.setRequiresGrad(example.requiresGrad)
            return t
        }
        let recorder = TraceRecorder()
        let outputs: [Tensor]
        do {
            state.recorder = recorder
            if !state.recomputable { Trace.threadStartsRecording() }
            defer {
                state.recorder = nil
                if !state.recomputable { Trace.threadStopsRecording() }
            }
            outputs = try body(placeholders)
        }
        if let reason = recorder.refusal { throw AutogradError.state("capture: \(reason)") }
        guard !outputs.isEmpty else { throw AutogradError.argument("capture: the function returned no outputs") }
        return CapturedFunction(program: try Program(recorder, inputs: placeholders, outputs: outputs))
    }

    private init(program: Program) {
        self.program = program
        mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public var inputShapes: [[Int]] { program.inputShapes }
    public var inputDTypes: [DType] { program.inputDTypes }
    public var outputShapes: [[Int]] { program.outputShapes }
    public var outputDTypes: [DType] { program.outputDTypes }

    /// What the compiler made of the capture (see Program.Stats).
    var stats: Program.Stats { program.stats }

    /// The stats as ag_function_info lists them: steps recorded, live steps, instructions, fused
    /// groups, fused steps, rerun steps, arena bytes, scratch bytes.
    public var info: [Int] {
        let s = program.stats
        return [s.recordedSteps, s.liveSteps, s.instructions, s.fusedGroups, s.fusedSteps, s.rerunSteps, s.arenaBytes, s.scratchBytes]
    }

    /// Replays on `inputs`: new tensors holding the outputs (no history).
    public func callAsFunction(_ inputs: [Tensor]) throws -> [Tensor] {
        try locked(inputs) {
            try zip(program.outputShapes, program.outputDTypes).enumerated().map { k, sd in
                let t = try Tensor(uninitialized: sd.0, dtype: sd.1)
                if let src = program.outputPointers[k], let dst = t.storage.raw {
                    dst.copyMemory(from: UnsafeRawPointer(src), byteCount: t.count * sd.1.size)
                }
                return t
            }
        }
    }

    /// Replays on `inputs`, writing the outputs into `outputs` in place (each of the output's
    /// shape and dtype, a leaf; its version is bumped as by any in-place write): allocates nothing.
    public func call(_ inputs: [Tensor], into outputs: [Tensor]) throws {
        guard outputs.count == program.outputShapes.count else {
            throw AutogradError.argument("call: \(outputs.count) output tensors for a function of \(program.outputShapes.count) outputs")
        }
        for (k, t) in outputs.enumerated() {
            guard t.dtype == program.outputDTypes[k] else {
                throw AutogradError.dtype("call: output \(k) is \(t.dtype) \(t.shape), the function's output \(k) is \(program.outputDTypes[k]) \(program.outputShapes[k])")
            }
            guard t.shape == program.outputShapes[k] else {
                throw AutogradError.shape("call: output \(k) is \(t.dtype) \(t.shape), the function's output \(k) is \(program.outputDTypes[k]) \(program.outputShapes[k])")
            }
            guard t.isLeaf else { throw AutogradError.state("call: output \(k) is the result of a recorded op; only leaves can be written in place") }
            if t.requiresGrad && GradMode.isEnabled {
                throw AutogradError.state("call: output \(k) requires grad and grad mode is on; the write would not be recorded (turn grad mode off, or pass a tensor that does not require grad)")
            }
            try t.storage.refuseReadOnly("call: output \(k)")
            for j in 0..<k where outputs[j].storage === t.storage {
                throw AutogradError.argument("call: outputs \(j) and \(k) share their values")
            }
        }
        try locked(inputs) {
            GraphLock.withLock {
                for (k, t) in outputs.enumerated() {
                    if let src = program.outputPointers[k], let dst = t.storage.raw {
                        dst.copyMemory(from: UnsafeRawPointer(src), byteCount: t.count * t.dtype.size)
                    }
                    t.storage.bumpVersion()
                }
            }
        }
    }

    /// Checks `inputs` against the capture's, then runs the program and `body` under the lock.
    private func locked<R>(_ inputs: [Tensor], _ body: () throws -> R) throws -> R {
        guard inputs.count == program.inputShapes.count else {
            throw AutogradError.argument("call: \(inputs.count) inputs for a function captured with \(program.inputShapes.count)")
        }
        for (k, t) in inputs.enumerated() {
            guard t.dtype == program.inputDTypes[k] else {
                throw AutogradError.dtype("call: input \(k) is \(t.dtype), the function was captured with \(program.inputDTypes[k]) (capture again for other dtypes)")
            }
            guard t.shape == program.inputShapes[k] else {
                throw AutogradError.shape("call: input \(k) has shape \(t.shape), the function was captured with \(program.inputShapes[k]) (shapes are fixed per capture: capture again for other shapes)")
            }
        }
        if Trace.recorder != nil {
            throw AutogradError.state("call: a captured function cannot be called inside a capture (call the function it was captured from instead)")
        }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        try program.run(inputs)
        return try body()
    }
}
