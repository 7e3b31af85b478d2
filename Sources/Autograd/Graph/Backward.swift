/// Reverse-mode gradient propagation over the recorded graph. The walk is iterative (an
/// explicit ready stack and dependency counts), so graph depth is limited by memory only.
enum Backward {
    /// What a pass does with the gradients that reach leaves.
    enum Mode {
        /// Add them into each leaf's `.grad` (backward).
        case accumulate
        /// Return the gradients of these tensors (leaves or not) and touch no `.grad` (grad()).
        case capture([Tensor])
    }

    /// Propagates `seeds` (nil: 1 for a one-element root) from `roots` through the graph.
    /// Returns, in capture mode, one gradient per captured tensor (nil where none arrived).
    @discardableResult
    static func run(roots: [Tensor], seeds: [Tensor?], retainGraph: Bool, createGraph: Bool, mode: Mode) throws -> [Tensor?] {
        let seedTensors = try zip(roots, seeds).map { try checkedSeed(root: $0, seed: $1) }
        for root in roots where !root.requiresGrad {
            throw AutogradError.state("the root does not require grad (no input of it requires grad, or it was computed with grad mode off)")
        }
        return try GraphLock.withLock { try GradMode.with(enabled: createGraph) {
            // The outermost pass numbers nodes in their passSlot fields; a pass started inside
            // it (from a hook) uses a dictionary so as not to disturb them.
            let outermost = activePasses == 0
            activePasses += 1
            var pass = Pass(mode: mode, retainGraph: retainGraph || createGraph, createGraph: createGraph, usesSlots: outermost)
            defer {
                activePasses -= 1
                if outermost {
                    for node in pass.nodes { node.passSlot = -1 }
                    for leaf in pass.leafOrder { leaf.anchor.passSlot = -1 }
                }
            }
            try pass.collect(roots: roots)
            try pass.seed(roots: roots, seeds: seedTensors)
            try pass.propagate()
            return try pass.finish()
        } }
    }

    /// The gradient the running rule may overwrite in place (set around each rule call, under
    /// the graph lock).
    nonisolated(unsafe) static var reusableGradient: ObjectIdentifier?

    /// Backward passes running on the thread holding the graph lock (nested ones come from hooks).
    nonisolated(unsafe) private static var activePasses = 0

    /// The seed checked against the root, or the implicit 1 for a one-element root.
    static func checkedSeed(root: Tensor, seed: Tensor?) throws -> Tensor {
        guard let seed else {
            guard root.count == 1 else {
                throw AutogradError.state("a seed (gradient) is needed for a root that is not a scalar; the root has shape \(root.shape)")
            }
            return try Tensor.full(root.shape, 1, dtype: root.dtype)
        }
        guard seed.dtype == root.dtype else {
            throw AutogradError.dtype("the seed is \(seed.dtype) but the root is \(root.dtype)")
        }
        guard seed.shape == root.shape else {
            throw AutogradError.shape("the seed has shape \(seed.shape) but the root has shape \(root.shape)")
        }
        return seed
    }

    /// The state of one backward pass.
    private struct Pass {
        let mode: Mode
        let retainGraph: Bool
        let createGraph: Bool
        let usesSlots: Bool
        var nodes: [Node] = []
        private var index: [ObjectIdentifier: Int] = [:]
        var deps: [Int32] = []
        var grads: [Tensor?] = []
        /// Nodes whose work reaches a captured tensor (capture mode only; empty, meaning all, otherwise).
        var needed: [Bool] = []
        /// Gradients that reached leaves in this pass, summed, in order of first arrival.
        var leafOrder: [Tensor] = []
        var leafGrads: [Tensor?] = []
        /// Where each leaf's gradient is in leafGrads: the anchor's passSlot, or this dictionary
        /// in a nested pass.
        private var leafIndex: [ObjectIdentifier: Int] = [:]
        /// Capture mode: where each captured tensor's gradient goes.
        var capturedLeaf: [ObjectIdentifier: [Int]] = [:]
        var capturedNode: [ObjectIdentifier: [Int]] = [:]
        var captured: [Tensor?] = []

        init(mode: Mode, retainGraph: Bool, createGraph: Bool, usesSlots: Bool) {
            self.usesSlots = usesSlots
            self.mode = mode
            self.retainGraph = retainGraph
            self.createGraph = createGraph
            if case .capture(let targets) = mode {
                captured = [Tensor?](repeating: nil, count: targets.count)
                for (k, t) in targets.enumerated() {
                    if let fn = t.gradFn { capturedNode[ObjectIdentifier(fn), default: []].append(k) }
                    else { capturedLeaf[ObjectIdentifier(t), default: []].append(k) }
                }
            }
        }

        /// The node's number in this pass, if it was collected.
        @inline(__always)
        func slot(_ node: Node) -> Int? {
            if usesSlots { return node.passSlot >= 0 ? Int(node.passSlot) : nil }
            return index[ObjectIdentifier(node)]
        }

        @inline(__always)
        mutating func add(_ node: Node) {
            if usesSlots { node.passSlot = Int32(truncatingIfNeeded: nodes.count) } else { index[ObjectIdentifier(node)] = nodes.count }
            nodes.append(node)
        }

        /// Finds the nodes reachable from the roots and counts the edges into each; fails
        /// before anything runs if part of the graph was already released.
        mutating func collect(roots: [Tensor]) throws {
            for root in roots {
                guard let fn = root.gradFn, slot(fn) == nil else { continue }
                add(fn)
                deps.append(0)
            }
            // `nodes` doubles as the work list: every node is visited once, in discovery order.
            var cursor = 0
            while cursor < nodes.count {
                let node = nodes[cursor]
                cursor += 1
                if node.isReleased {
                    throw AutogradError.state("the graph through '\(node.name)' was already freed by an earlier backward; pass retain_graph = true to the first backward to run backward through it again")
                }
                for k in 0..<node.inputCount {
                    guard case .node(let child) = node.edge(k) else { continue }
                    if let i = slot(child) {
                        deps[i] += 1
                    } else {
                        add(child)
                        deps.append(1)
                    }
                }
            }
            grads = [Tensor?](repeating: nil, count: nodes.count)
            if case .capture = mode {
                needed = [Bool](repeating: true, count: nodes.count)
                markNeeded()
            }
        }

        /// Capture mode: a node is needed if it is captured or leads to a needed node or a
        /// captured leaf. Computed children-first over a topological order (Kahn's algorithm).
        private mutating func markNeeded() {
            var remaining = deps
            var order: [Int] = []
            order.reserveCapacity(nodes.count)
            var ready = remaining.indices.filter { remaining[$0] == 0 }
            while let i = ready.popLast() {
                order.append(i)
                for k in 0..<nodes[i].inputCount {
                    if case .node(let child) = nodes[i].edge(k), let j = slot(child) {
                        remaining[j] -= 1
                        if remaining[j] == 0 { ready.append(j) }
                    }
                }
            }
            for i in order.reversed() {
                let node = nodes[i]
                var hit = capturedNode[ObjectIdentifier(node)] != nil
                for k in 0..<node.inputCount where !hit {
                    switch node.edge(k) {
                    case .none: break
                    case .leaf(let anchor): hit = anchor.tensor.map { capturedLeaf[ObjectIdentifier($0)] != nil } ?? false
                    case .node(let child): hit = slot(child).map { needed[$0] } ?? false
                    }
                }
                needed[i] = hit
            }
        }

        mutating func seed(roots: [Tensor], seeds: [Tensor]) throws {
            for (root, s) in zip(roots, seeds) {
                if let fn = root.gradFn, let i = slot(fn) {
                    grads[i] = try grads[i].map { try $0.adding(s) } ?? s
                } else {
                    try arriveAtLeaf(root, s)
                }
            }
        }

        mutating func arriveAtLeaf(_ leaf: Tensor, _ g: Tensor) throws {
            let anchor = leaf.anchor
            let known = usesSlots ? (anchor.passSlot >= 0 ? Int(anchor.passSlot) : nil) : leafIndex[ObjectIdentifier(leaf)]
            if let i = known {
                try Backward.add(g, into: &leafGrads[i], inPlace: !createGraph)
            } else {
                if case .capture = mode, capturedLeaf[ObjectIdentifier(leaf)] == nil { return }
                if usesSlots { anchor.passSlot = Int32(truncatingIfNeeded: leafOrder.count) } else { leafIndex[ObjectIdentifier(leaf)] = leafOrder.count }
                leafGrads.append(g)
                leafOrder.append(leaf)
            }
        }

        mutating func propagate() throws {
            var ready = deps.indices.filter { deps[$0] == 0 }
            while let i = ready.popLast() {
                let node = nodes[i]
                // A node none of whose consumers produced a gradient (or that leads to nothing
                // captured) still passes on its dependency counts, so nodes below it run.
                var inputGrads = InputGradients()
                if var g = grads[i], let rule = node.rule {
                    grads[i] = nil
                    if node.hasHooks { for hook in node.hooks { g = try hook.apply(to: g) } }
                    if !capturedNode.isEmpty, let targets = capturedNode[ObjectIdentifier(node)] {
                        for k in targets { captured[k] = g }
                    }
                    if needed.isEmpty || needed[i] {
                        // A gradient nothing else holds may be overwritten by the rule's kernel
                        // (Tensor.gradient), saving a buffer per node.
                        if !createGraph && isKnownUniquelyReferenced(&g) && g.storageIsUnique() {
                            Backward.reusableGradient = ObjectIdentifier(g)
                        }
                        defer { Backward.reusableGradient = nil }
                        inputGrads = try rule(g, node)
                        guard inputGrads.count == node.inputCount else {
                            throw AutogradError.internal("the rule of '\(node.name)' returned \(inputGrads.count) gradients for \(node.inputCount) inputs")
                        }
                    }
                }
                if !retainGraph { node.release() }
                for k in 0..<node.inputCount {
                    let edge = node.edge(k)
                    var gk: Tensor? = nil
                    if k < inputGrads.count, let raw = inputGrads[k] {
                        gk = try raw.reduced(toShape: node.inputShape(k))
                    }
                    switch edge {
                    case .none:
                        break
                    case .leaf(let anchor):
                        if let gk, let leaf = anchor.tensor { try arriveAtLeaf(leaf, gk) }
                    case .node(let child):
                        guard let j = slot(child) else {
                            throw AutogradError.internal("backward reached node '\(child.name)' that was not collected")
                        }
                        if let gk { try Backward.add(gk, into: &grads[j], inPlace: !createGraph) }
                        deps[j] -= 1
                        if deps[j] == 0 { ready.append(j) }
                    }
                }
            }
        }

        /// Runs leaf hooks, then accumulates into `.grad` or hands the captured gradients back.
        mutating func finish() throws -> [Tensor?] {
            for (i, leaf) in leafOrder.enumerated() {
                let id = ObjectIdentifier(leaf)
                guard var g = leafGrads[i] else { continue }
                leafGrads[i] = nil
                for hook in leaf.hooks { g = try hook.apply(to: g) }
                switch mode {
                case .accumulate:
                    try Backward.accumulate(g, into: leaf, createGraph: createGraph)
                case .capture:
                    for k in capturedLeaf[id] ?? [] { captured[k] = createGraph ? g : g.detach() }
                }
            }
            return captured.map { g in g.map { createGraph ? $0 : $0.detach() } }
        }
    }

    /// Adds `g` to the gradient collected so far in `sum`: in place when the pass is not recorded
    /// and nothing else can see the collected tensor or its values, else into a new tensor.
    @inline(__always)
    static func add(_ g: Tensor, into sum: inout Tensor?, inPlace: Bool) throws {
        guard var existing = sum else { sum = g; return }
        sum = nil
        if inPlace && existing.storage !== g.storage && existing.dtype == g.dtype && existing.shape == g.shape
            && isKnownUniquelyReferenced(&existing) && existing.storageIsUnique() {
            existing.add(inPlace: g)
            sum = existing
        } else {
            sum = try existing.adding(g)
        }
    }

    /// Adds `g` into `leaf.grad`. Out of place: a gradient handed out earlier never changes.
    static func accumulate(_ g: Tensor, into leaf: Tensor, createGraph: Bool) throws {
        // Only a gradient with history needs to stay attached (create_graph); a leaf gradient
        // (a seed that is itself a leaf, even this one) is stored as a fresh alias, so `.grad`
        // never holds a leaf and no leaf -> grad -> leaf cycle can form.
        let g = createGraph && g.gradFn != nil ? g : g.detach()
        if let existing = leaf.grad {
            leaf.grad = try GradMode.with(enabled: createGraph) { try existing.adding(g) }
        } else {
            leaf.grad = g
        }
    }
}

/// A function run on the gradient flowing into a tensor during backward; it may return a
/// replacement of the same shape and dtype, or nil to keep the gradient.
public final class GradHook {
    public let id: Int
    let body: (Tensor) throws -> Tensor?

    public init(id: Int, _ body: @escaping (Tensor) throws -> Tensor?) {
        self.id = id
        self.body = body
    }

    func apply(to g: Tensor) throws -> Tensor {
        guard let replacement = try body(g) else { return g }
        guard replacement.shape == g.shape && replacement.dtype == g.dtype else {
            throw AutogradError.shape("hook \(id): the replacement gradient is \(replacement.dtype) \(replacement.shape), the gradient is \(g.dtype) \(g.shape)")
        }
        return replacement
    }
}

extension Tensor {
    /// Runs backward from this tensor, accumulating into the `.grad` of every leaf reached.
    public func backward(seed: Tensor? = nil, retainGraph: Bool = false, createGraph: Bool = false) throws {
        try Backward.run(roots: [self], seeds: [seed], retainGraph: retainGraph, createGraph: createGraph, mode: .accumulate)
    }

    /// The gradients of Σ⟨outputs[k], seeds[k]⟩ with respect to `inputs` (torch.autograd.grad),
    /// touching no `.grad`; nil for an unused input when `allowUnused`, an error otherwise.
    public static func gradients(of outputs: [Tensor], withRespectTo inputs: [Tensor], seeds: [Tensor?]? = nil,
                                 retainGraph: Bool = false, createGraph: Bool = false, allowUnused: Bool = false) throws -> [Tensor?] {
        guard !outputs.isEmpty, !inputs.isEmpty else { throw AutogradError.argument("grad: needs at least one output and one input") }
        let seeds = seeds ?? [Tensor?](repeating: nil, count: outputs.count)
        guard seeds.count == outputs.count else {
            throw AutogradError.argument("grad: \(seeds.count) seeds for \(outputs.count) outputs")
        }
        for (k, t) in inputs.enumerated() where !t.requiresGrad {
            throw AutogradError.state("grad: input \(k) does not require grad")
        }
        let result = try Backward.run(roots: outputs, seeds: seeds, retainGraph: retainGraph, createGraph: createGraph, mode: .capture(inputs))
        if !allowUnused, let k = result.firstIndex(where: { $0 == nil }) {
            throw AutogradError.state("grad: input \(k) is not used to compute the outputs (pass allow_unused to get no gradient for it)")
        }
        return result
    }

    /// Registers a hook on the gradient flowing into this tensor (see GradHook).
    public func registerHook(_ hook: GradHook) throws {
        try GraphLock.withLock {
            guard requiresGrad else { throw AutogradError.state("register_hook: the tensor does not require grad") }
            if let fn = gradFn { fn.hooks.append(hook) } else { hooks.append(hook) }
        }
    }

    /// Removes the hook with `id`; false if there is none.
    public func removeHook(id: Int) -> Bool {
        // The removed hook is released after the lock, so its destructor may call the engine.
        var removed: GradHook? = nil
        GraphLock.withLock {
            if let fn = gradFn, let i = fn.hooks.firstIndex(where: { $0.id == id }) { removed = fn.hooks.remove(at: i) }
            else if let i = hooks.firstIndex(where: { $0.id == id }) { removed = hooks.remove(at: i) }
        }
        return removed != nil
    }

    /// This gradient summed over the axes along which an operand of shape `shape` was
    /// broadcast: the one place where broadcasting is undone in backward.
    func reduced(toShape target: [Int]) throws -> Tensor {
        if shape == target { return self }
        let lead = rank - target.count
        guard lead >= 0 else {
            throw AutogradError.internal("gradient of shape \(shape) cannot be reduced to the larger shape \(target)")
        }
        var axes = Array(0..<lead)
        for i in 0..<target.count where target[i] == 1 && shape[i + lead] != 1 {
            axes.append(i + lead)
        }
        let summed = axes.isEmpty ? self : try sum(axes: axes, keepDims: true)
        return try summed.reshaped(target)
    }
}
