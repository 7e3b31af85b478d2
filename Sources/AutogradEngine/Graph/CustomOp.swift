/// A differentiable operation defined by its user (PyTorch's `autograd.Function`, JAX's
/// `custom_vjp`/`custom_jvp`): a forward of n inputs and m outputs, its backward (VJP) and,
/// optionally, its JVP. The forward runs with grad mode off (its ops record nothing) and may
/// compute any way it likes; the backward gets one gradient per output (zeros for outputs no
/// gradient reached) and returns one per input (nil for none), in the input's shape or one that
/// broadcasting reduces to it. A backward written with differentiable ops gives second
/// derivatives (create_graph). The engine checks every callback's results: a wrong count,
/// dtype or shape is AutogradError.callback, never a trap.
///
/// Sendable: every stored property is a `let` set once in init; the callbacks themselves may run
/// on several threads at once (one per thread applying the op or running its backward), so what
/// they share must be theirs to synchronise, as with gradient hooks.
public final class CustomOp: @unchecked Sendable {
    public typealias Forward = (_ context: CustomOpContext, _ inputs: [Tensor]) throws -> [Tensor]
    public typealias Backward = (_ context: CustomOpContext, _ outputGradients: [Tensor]) throws -> [Tensor?]
    public typealias JVP = (_ context: CustomOpContext, _ inputs: [Tensor], _ tangents: [Tensor?]) throws -> [Tensor?]

    /// The most inputs, and the most outputs, an op may have.
    public static let maximumArity = 256
    /// The most custom-op callbacks that may run nested on one thread (a callback may apply
    /// custom ops; one that applies its own op would otherwise recurse until the stack overflows).
    public static let maximumNesting = 64

    public let name: String
    public let inputCount: Int
    public let outputCount: Int
    private let forward: Forward
    private let backward: Backward?
    private let jvp: JVP?
    private let opName: OpName
    private let backwardName: OpName
    /// The names of the output nodes of an op with several outputs ("name[k]").
    private let outputNames: [OpName]

    public init(name: String, inputs: Int, outputs: Int, forward: @escaping Forward, backward: Backward?, jvp: JVP? = nil) throws {
        guard !name.isEmpty, !name.utf8.contains(0) else {
            throw AutogradError.argument("a custom op needs a name (non-empty, without NUL characters)")
        }
        guard (1...CustomOp.maximumArity).contains(inputs) else {
            throw AutogradError.argument("custom op '\(name)': ninputs \(inputs) is outside 1...\(CustomOp.maximumArity)")
        }
        guard (1...CustomOp.maximumArity).contains(outputs) else {
            throw AutogradError.argument("custom op '\(name)': noutputs \(outputs) is outside 1...\(CustomOp.maximumArity)")
        }
        self.name = name
        self.inputCount = inputs
        self.outputCount = outputs
        self.forward = forward
        self.backward = backward
        self.jvp = jvp
        opName = OpName(interning: name)
        backwardName = OpName(interning: name + " backward")
        outputNames = outputs > 1 ? (0..<outputs).map { OpName(interning: "\(name)[\($0)]") } : []
    }

    /// Applies the op: runs the forward, and when grad mode is on and an input requires grad,
    /// records it (one node, or for several outputs one node per output over a shared one).
    public func apply(_ inputs: [Tensor]) throws -> [Tensor] {
        guard inputs.count == inputCount else {
            throw AutogradError.argument("custom op '\(name)': \(inputs.count) input\(inputs.count == 1 ? "" : "s") given, it takes \(inputCount)")
        }
        let records = Tensor.shouldRecord(inputs)
        let application = CustomOpApplication()
        let context = CustomOpContext(phase: .forward, needs: inputs.map { records && $0.requiresGrad }, saved: [], application: application)
        let traced = Trace.recorder != nil
        var raw = try runForward(context, inputs)
        let saved = context.savedTensors
        // A capture replays values by storage: an output must not be one of the inputs' values.
        if traced { raw = try raw.map { r in inputs.contains { $0.storage === r.storage } ? try Trace.suspended { try r.copy() } : r } }
        let outputs = raw.map { Tensor(shape: $0.shape, storage: $0.storage) }
        // Saved tensors that are neither inputs nor outputs (intermediates of the forward).
        let intermediates = saved.filter { s in !raw.contains { $0 === s } && !inputs.contains { $0 === s } }

        let holders = records ? record(outputs: outputs, raw: raw, inputs: inputs, saved: saved, application: application) : []
        // The JVP sees a saved output as the output itself (with its history, once recorded), as
        // the backward does; the node's copy of it then gets the output's tangent.
        let jvpSaved = saved.map { s in raw.firstIndex { $0 === s }.map { outputs[$0] } ?? s }
        try deriveTangents(of: outputs, inputs: inputs, saved: jvpSaved, application: application)
        // Without the tangent's own history: a tangent computed from the saved output refers back
        // to this op's node, which holds the stand-in, and that would be a cycle (a leak).
        for (holder, k) in holders {
            holder.tangentBox = outputs[k].tangentBox.map { Tangent(level: $0.level, value: $0.value.detach()) }
        }
        if Trace.isRecording { noteForward(outputs: outputs, intermediates: intermediates, inputs: inputs, application: application) }
        return outputs
    }

    /// `apply` on its arguments: `op(x, y)`.
    public func callAsFunction(_ inputs: Tensor...) throws -> [Tensor] { try apply(inputs) }

    /// One call of the forward, checked: grad mode off, recording suspended (a capture notes the
    /// whole op as one step), no forward-mode pass inside (the JVP gives the tangents).
    private func runForward(_ context: CustomOpContext, _ inputs: [Tensor]) throws -> [Tensor] {
        defer { context.close() }
        let outputs = try userCall("forward") { try CustomOp.outsideForwardMode { try Trace.suspended { try forward(context, inputs) } } }
        guard outputs.count == outputCount else {
            throw AutogradError.callback("custom op '\(name)': the forward returned \(outputs.count) tensor\(outputs.count == 1 ? "" : "s"), the op has \(outputCount) output\(outputCount == 1 ? "" : "s")")
        }
        if let k = outputs.firstIndex(where: { !$0.dtype.isFloatingPoint }) {
            throw AutogradError.callback("custom op '\(name)': the forward returned output \(k) as \(outputs[k].dtype); a custom op's outputs are float32 or float64 (they may have gradients)")
        }
        if outputCount > 1, let k = outputs.firstIndex(where: { $0.dtype != outputs[0].dtype }) {
            throw AutogradError.callback("custom op '\(name)': the forward returned output 0 as \(outputs[0].dtype) and output \(k) as \(outputs[k].dtype); the outputs of an op share one dtype")
        }
        return outputs
    }

    // MARK: Reverse mode

    /// What a node of this op keeps besides its saved tensors: the outputs' shapes and which
    /// saved slots hold outputs (rebuilt with their history when the backward unpacks them).
    private struct Layout {
        let outputShapes: [[Int]]
        let dtype: DType
        /// For each saved slot, the output it holds, or -1.
        let savedOutput: [Int]
        /// Where each output starts in the flat gradient of a several-output op.
        let offsets: [Int]
        let counts: [Int]
        let total: Int
    }

    /// Records the op's node(s) and returns the saved outputs' stand-ins with their outputs'
    /// numbers (the caller gives them the outputs' tangents).
    private func record(outputs: [Tensor], raw: [Tensor], inputs: [Tensor], saved: [Tensor], application: CustomOpApplication) -> [(Tensor, Int)] {
        var slots: [SavedTensor] = []
        var savedOutput: [Int] = []
        var holders: [(Tensor, Int)] = []
        for s in saved {
            if let k = raw.firstIndex(where: { $0 === s }) {
                // Kept as a plain tensor over the output's values (given the output's tangent
                // after the JVP, for a forward-over-reverse pass); holding the output itself
                // would be a cycle.
                let holder = Tensor(shape: outputs[k].shape, storage: outputs[k].storage)
                holders.append((holder, k))
                slots.append(.result(holder))
                savedOutput.append(k)
            } else {
                slots.append(SavedTensor(s))
                savedOutput.append(-1)
            }
        }
        var offsets: [Int] = []
        var total = 0
        for o in outputs { offsets.append(total); total += o.count }
        let layout = Layout(outputShapes: outputs.map(\.shape), dtype: outputs[0].dtype, savedOutput: savedOutput,
                            offsets: offsets, counts: outputs.map(\.count), total: total)
        let edges = inputs.map { NodeInput(edge: Node.edge(to: $0), shape: $0.shape) }

        if outputCount == 1 {
            let node = Node(name: opName, shape: outputs[0].shape, dtype: outputs[0].dtype, inputs: edges, saved: slots) { [self] g, node in
                try runBackward(node, layout, [g], application)
            }
            outputs[0].gradFn = node
            outputs[0].requiresGrad = true
            return holders
        }
        // Several outputs: a shared node whose gradient is every output's, flattened and laid
        // end to end; each output's node places its gradient there (zeros elsewhere).
        let shared = Node(name: opName, shape: [total], dtype: layout.dtype, inputs: edges, saved: slots) { [self] g, node in
            let grads = try layout.outputShapes.indices.map { k in
                try g.slice(axis: 0, start: layout.offsets[k], stop: layout.offsets[k] + layout.counts[k]).reshaped(layout.outputShapes[k])
            }
            return try runBackward(node, layout, grads, application)
        }
        for (k, out) in outputs.enumerated() {
            out.gradFn = outputNode(k, of: shared, layout)
            out.requiresGrad = true
        }
        return holders
    }

    /// Output k's node of a several-output op: its gradient, placed into the shared node's.
    private func outputNode(_ k: Int, of shared: Node, _ layout: Layout) -> Node {
        let edge = NodeInput(edge: .node(shared), shape: [layout.total])
        return Node(name: outputNames[k], shape: layout.outputShapes[k], dtype: layout.dtype, inputs: [edge], saved: []) { g, _ in
            let flat = try g.reshaped([g.count])
            let before = layout.offsets[k], after = layout.total - before - g.count
            var parts: [Tensor] = []
            if before > 0 { parts.append(try Tensor.zeros([before], dtype: g.dtype)) }
            parts.append(flat)
            if after > 0 { parts.append(try Tensor.zeros([after], dtype: g.dtype)) }
            return InputGradients(parts.count == 1 ? flat : try Tensor.concat(parts, axis: 0))
        }
    }

    /// The saved tensors as the backward sees them: outputs with their history (so a backward
    /// recorded with create_graph reaches this op again), the rest as saved.
    private func unpackSaved(_ node: Node, _ layout: Layout) -> [Tensor] {
        layout.savedOutput.enumerated().map { slot, k in
            let t = node.saved(slot)
            guard k >= 0 else { return t }
            let out = Tensor(shape: t.shape, storage: t.storage)
            out.tangentBox = t.tangentBox
            out.gradFn = outputCount == 1 ? node : outputNode(k, of: node, layout)
            out.requiresGrad = true
            return out
        }
    }

    /// The node's rule: the user's backward on the outputs' gradients, checked, with the graph
    /// lock released (as for hooks: the backward may wait for threads that call the engine).
    private func runBackward(_ node: Node, _ layout: Layout, _ grads: [Tensor], _ application: CustomOpApplication) throws -> InputGradients {
        guard backward != nil else {
            throw AutogradError.state("custom op '\(name)' was defined without a backward, so no gradient flows through it")
        }
        let needs = (0..<inputCount).map { node.needsGrad($0) }
        let shapes = (0..<inputCount).map { node.inputShape($0) }
        let saved = unpackSaved(node, layout)
        let dtypes = inputDTypes(node)
        let results: [Tensor?]
        if Trace.recorder != nil {
            // A capture notes the whole backward as one step, rerun (calling the backward
            // again) by every replay; the user's ops inside it are not recorded one by one.
            let needed = (0..<inputCount).filter { needs[$0] }
            let call: ([Tensor]) throws -> [Tensor] = { [self] ins in
                let r = try Trace.suspended {
                    try callBackward(Array(ins[..<outputCount]), saved: Array(ins[outputCount...]), needs: needs, shapes: shapes, dtypes: dtypes, application: application)
                }
                // Each gradient in its input's shape (summed back here, as the eager pass would
                // after), so every replay's results have the capture's shapes whatever shape,
                // legal for the input, the backward gives this time (or zeros for none).
                return try needed.map { k in
                    guard let g = r[k] else { return try Tensor.zeros(shapes[k], dtype: dtypes[k] ?? layout.dtype) }
                    let reduced = try g.reduced(toShape: shapes[k])
                    return ins.contains { $0.storage === reduced.storage } ? try reduced.copy() : reduced
                }
            }
            let stepInputs = grads + saved
            let computed = try GraphLock.withoutLock { try call(stepInputs) }
            var r = [Tensor?](repeating: nil, count: inputCount)
            for (j, k) in needed.enumerated() { r[k] = computed[j] }
            results = r
            CustomOp.noteSteps(computed, backwardName, stepInputs, call)
        } else {
            results = try GraphLock.withoutLock {
                try callBackward(grads, saved: saved, needs: needs, shapes: shapes, dtypes: dtypes, application: application)
            }
        }
        return InputGradients(results)
    }

    /// The dtype of each input of `node` (nil where the node cannot tell: an input without
    /// history that requires no grad, whose gradient is ignored anyway).
    private func inputDTypes(_ node: Node) -> [DType?] {
        (0..<inputCount).map { k in
            switch node.edge(k) {
            case .node(let producer): return producer.dtype
            case .leaf(let anchor): return anchor.storage.dtype
            case .none: return nil
            }
        }
    }

    /// One call of the backward, its results checked against the inputs (count, dtype, a
    /// shape that reduces to the input's); gradients for inputs that need none are dropped.
    private func callBackward(_ grads: [Tensor], saved: [Tensor], needs: [Bool], shapes: [[Int]], dtypes: [DType?],
                              application: CustomOpApplication) throws -> [Tensor?] {
        guard let backward else { throw AutogradError.state("custom op '\(name)' was defined without a backward") }
        let context = CustomOpContext(phase: .backward, needs: needs, saved: saved, application: application)
        defer { context.close() }
        let results = try userCall("backward") { try backward(context, grads) }
        guard results.count == inputCount else {
            throw AutogradError.callback("custom op '\(name)': the backward returned \(results.count) gradients, the op has \(inputCount) inputs")
        }
        return try results.enumerated().map { k, g in
            guard needs[k], let g else { return nil }
            if let d = dtypes[k], g.dtype != d {
                throw AutogradError.callback("custom op '\(name)': the backward returned gradient \(k) as \(g.dtype), input \(k) is \(d)")
            }
            guard CustomOp.reduces(g.shape, to: shapes[k]) else {
                throw AutogradError.callback("custom op '\(name)': the backward returned gradient \(k) of shape \(g.shape) for input \(k) of shape \(shapes[k]) (a gradient has the input's shape, or one that broadcasting reduces to it)")
            }
            return g
        }
    }

    /// Whether a gradient of `shape` sums back to an input of `target` (the input broadcasts to it).
    static func reduces(_ shape: [Int], to target: [Int]) -> Bool {
        let lead = shape.count - target.count
        guard lead >= 0 else { return false }
        for i in 0..<target.count where target[i] != shape[i + lead] && target[i] != 1 { return false }
        return true
    }

    // MARK: Forward mode

    /// Sets the outputs' tangents from the JVP when an input carries one in the forward-mode
    /// pass running on this thread.
    private func deriveTangents(of outputs: [Tensor], inputs: [Tensor], saved: [Tensor], application: CustomOpApplication) throws {
        guard ForwardMode.isRunning, inputs.contains(where: { $0.tangentBox != nil }) else { return }
        let tangents = inputs.map { ForwardMode.tangent(of: $0) }
        guard tangents.contains(where: { $0 != nil }) else { return }
        guard let jvp else {
            throw AutogradError.state("custom op '\(name)' was defined without a JVP, so it cannot be differentiated in forward mode (jvp, hvp, hessian, forward-mode jacobian)")
        }
        let level = ThreadState.current.forwardLevel
        let context = CustomOpContext(phase: .jvp, needs: inputs.map { _ in false }, saved: saved, application: application)
        defer { context.close() }
        let results = try userCall("JVP") { try CustomOp.outsideForwardMode { try jvp(context, inputs, tangents) } }
        guard results.count == outputCount else {
            throw AutogradError.callback("custom op '\(name)': the JVP returned \(results.count) tangents, the op has \(outputCount) outputs")
        }
        for (k, out) in outputs.enumerated() {
            let t = try results[k] ?? Tensor.zeros(out.shape, dtype: out.dtype)
            guard t.dtype == out.dtype, t.shape == out.shape else {
                throw AutogradError.callback("custom op '\(name)': the JVP returned tangent \(k) as \(t.dtype) \(t.shape), output \(k) is \(out.dtype) \(out.shape)")
            }
            out.tangentBox = Tangent(level: level, value: t)
        }
    }

    /// Runs a callback (`body`), counted among the custom-op callbacks nested on this thread.
    private func userCall<R>(_ which: String, _ body: () throws -> R) throws -> R {
        let state = ThreadState.current
        guard state.customOpDepth < CustomOp.maximumNesting else {
            throw AutogradError.state("custom op '\(name)': \(CustomOp.maximumNesting) custom-op callbacks are running nested on this thread already, the most allowed (does its \(which) apply the op itself?)")
        }
        state.customOpDepth += 1
        defer { state.customOpDepth -= 1 }
        return try body()
    }

    /// Runs `body` with the forward-mode pass of this thread (if any) suspended.
    private static func outsideForwardMode<R>(_ body: () throws -> R) rethrows -> R {
        let state = ThreadState.current
        let level = state.forwardLevel
        state.forwardLevel = 0
        defer { state.forwardLevel = level }
        return try body()
    }

    // MARK: Capture and recompute

    /// Notes the forward for a capture (one step for the op: a replay calls the forward again)
    /// and, for an op of one output that saves no intermediates, for Recompute.
    private func noteForward(outputs: [Tensor], intermediates: [Tensor], inputs: [Tensor], application: CustomOpApplication) {
        let expected = outputs.map(\.shape) + intermediates.map(\.shape)
        let expectedDTypes = outputs.map(\.dtype) + intermediates.map(\.dtype)
        let rerun: ([Tensor]) throws -> [Tensor] = { [self] ins in
            // A replay's (or a recompute's) forward renews the application's state, which its
            // backward step reads; it starts with none, as the first forward did.
            application.state = nil
            let context = CustomOpContext(phase: .forward, needs: ins.map { _ in false }, saved: [], application: application)
            let raw = try runForward(context, ins)
            let extra = context.savedTensors.filter { s in !raw.contains { $0 === s } && !ins.contains { $0 === s } }
            let all = try (raw + extra).map { r in ins.contains { $0.storage === r.storage } ? try r.copy() : r }
            guard all.map(\.shape) == expected else {
                throw AutogradError.callback("custom op '\(name)': in a replay the forward returned and saved tensors of shapes \(all.map(\.shape)), at the capture \(expected) (a captured custom op must give the same shapes on every call)")
            }
            guard all.map(\.dtype) == expectedDTypes else {
                throw AutogradError.callback("custom op '\(name)': in a replay the forward returned and saved tensors of dtypes [\(all.map { "\($0.dtype)" }.joined(separator: ", "))], at the capture [\(expectedDTypes.map { "\($0)" }.joined(separator: ", "))] (a captured custom op must give the same dtypes on every call)")
            }
            return all
        }
        if intermediates.isEmpty && outputCount == 1 {
            Trace.note(outputs[0], opName, inputs) { try rerun($0)[0] }
        } else {
            CustomOp.noteSteps(outputs + intermediates, opName, inputs, rerun)
        }
    }

    /// Notes a call that makes several values for a capture: one step for the first value,
    /// which runs the call, then one per further value, which hands out what that run made
    /// (each reads the first value, so it stays live and runs first).
    static func noteSteps(_ values: [Tensor], _ name: OpName, _ inputs: [Tensor], _ call: @escaping ([Tensor]) throws -> [Tensor]) {
        guard let recorder = Trace.recorder, !values.isEmpty else { return }
        // Results of the last run, held between its steps. A captured function runs one call at
        // a time (its lock), so the box is never shared between runs.
        let box = StepResults()
        let ins = inputs.map(StepValue.init)
        recorder.steps.append(ForwardStep(name: name, inputs: ins, output: StepValue(values[0]), rerun: { args in
            let all = try call(args)
            box.values = all
            return all[0]
        }, kernel: .rerunOnly))
        for k in values.indices.dropFirst() {
            recorder.steps.append(ForwardStep(name: name, inputs: ins + [StepValue(values[0])], output: StepValue(values[k]), rerun: { _ in
                guard k < box.values.count else { throw AutogradError.internal("replay: the values of '\(name)' were not made by its first step") }
                defer { if k == box.values.count - 1 { box.values = [] } }
                return box.values[k]
            }, kernel: .rerunOnly))
        }
    }
}

/// The values one run of a several-value step made (see CustomOp.noteSteps).
final class StepResults {
    var values: [Tensor] = []
}
