/// Lazy re-evaluation of a retained graph (the design notebooks' semantics): while recomputable
/// graphs are on for a thread, every node it records keeps its op's forward (ForwardStep); after
/// leaves change in place, `recompute(root)` runs those forwards again, children first, writing
/// each result into the node's own output values, so the graph's tensors hold the new values
/// and a backward (or `gradients`) through it sees them. Nothing is rebuilt.
public enum Recompute {
    /// Each node's forward, by node (guarded by GraphLock; removed as the node is freed).
    nonisolated(unsafe) static var steps: [ObjectIdentifier: ForwardStep] = [:]

    /// Keeps `step` as `node`'s forward.
    static func attach(_ step: ForwardStep, to node: Node) {
        GraphLock.withLock {
            steps[ObjectIdentifier(node)] = step
            node.hasForward = true
        }
    }

    /// Whether recomputable graphs are on for this thread.
    public static var isEnabled: Bool { ThreadState.current.recomputable }

    /// Turns recomputable graphs on or off for this thread; returns the previous setting.
    @discardableResult
    public static func setEnabled(_ on: Bool) -> Bool {
        let state = ThreadState.current
        let previous = state.recomputable
        if on != previous {
            state.recomputable = on
            if state.recorder == nil { on ? Trace.threadStartsRecording() : Trace.threadStopsRecording() }
        }
        return previous
    }

    /// Re-evaluates every recorded op between the leaves and `root` from the current values of
    /// what they read, in place. Fails (changing nothing) when a node on the way was recorded
    /// without its forward, or its graph was freed by a backward without retain_graph.
    public static func run(_ root: Tensor) throws {
        guard let top = root.gradFn else { return }
        // The nodes under root, children before their consumers (depth-first postorder,
        // iterative), with their steps, checked before anything is written.
        var order: [(Node, ForwardStep)] = []
        try GraphLock.withLock {
            var seen: Set<ObjectIdentifier> = [ObjectIdentifier(top)]
            var stack: [(node: Node, next: Int)] = [(top, 0)]
            while let last = stack.last {
                let node = last.node
                if last.next < node.inputCount {
                    stack[stack.count - 1].next += 1
                    if case .node(let child) = node.edge(last.next), seen.insert(ObjectIdentifier(child)).inserted {
                        stack.append((child, 0))
                    }
                    continue
                }
                stack.removeLast()
                if node.isReleased {
                    throw AutogradError.state("recompute: the graph through '\(node.name)' was freed by a backward; pass retain_graph = true to keep it for recomputing")
                }
                guard node.hasForward, let step = steps[ObjectIdentifier(node)] else {
                    throw AutogradError.state("recompute: '\(node.name)' was recorded without its forward: build the graph with recomputable graphs on (ag_set_recomputable) to recompute it; a custom op of several outputs, or one that saved an intermediate, has none to rerun (build the graph again instead)")
                }
                // A node's output over read-only memory (a view of a read-only leaf) is written
                // only when it has values of its own; refused before anything is written.
                if step.inputs.allSatisfy({ $0.storage !== step.output.storage }) {
                    try step.output.storage.refuseReadOnly("recompute: the output of '\(node.name)'")
                }
                order.append((node, step))
            }
        }
        try Trace.suspended {
            for (node, step) in order {
                let inputs = step.inputs.map { Tensor(shape: $0.shape, storage: $0.storage) }
                let result = try step.rerun(inputs)
                let out = step.output.storage
                guard result.count == out.count, result.dtype == out.dtype else {
                    throw AutogradError.internal("recompute: '\(node.name)' gave \(result.count) elements of \(result.dtype) for \(out.count) of \(out.dtype)")
                }
                if result.storage !== out, out.count > 0, let src = result.storage.raw, let dst = out.raw {
                    dst.copyMemory(from: UnsafeRawPointer(src), byteCount: out.count * out.dtype.size)
                }
            }
            // The outputs' values moved: graphs outside this one that saved them refuse a stale
            // backward; the recomputed nodes agree with their values again.
            GraphLock.withLock {
                for (_, step) in order where step.inputs.allSatisfy({ $0.storage !== step.output.storage }) {
                    step.output.storage.bumpVersion()
                }
                for (node, _) in order { node.restampSavedVersions() }
            }
        }
    }
}

extension Tensor {
    /// Re-evaluates this tensor's graph in place from its leaves' current values (see Recompute).
    public func recompute() throws { try Recompute.run(self) }
}
