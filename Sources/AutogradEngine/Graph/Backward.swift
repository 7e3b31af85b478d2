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
        // A hook (or a custom op's backward) may run a backward pass, whose hooks may run
        // another: bounded, so a callback that reaches itself fails instead of overflowing the stack.
        let state = ThreadState.current
        guard state.backwardDepth < maximumNesting else {
            throw AutogradError.state("\(maximumNesting) backward passes are running nested on this thread already, the most allowed (a gradient hook or a custom op's backward runs a backward that reaches it again?)")
        }
        state.backwardDepth += 1
        defer { state.backwardDepth -= 1 }
        let seedTensors = try zip(roots, seeds).map { try checkedSeed(root: $0, seed: $1) }
        for root in roots where !root.requiresGrad {
            throw AutogradError.state("the root does not require grad (no input of it requires grad, or it was computed with grad mode off)")
        }
        // Gradients that accumulation replaced are released after the lock: one with history
        // (create_graph) may free a graph whose hooks' destructors are user code.
        var replaced: [Tensor] = []
        return try GraphLock.withLock { try GradMode.with(enabled: createGraph) {
            // The outermost pass numbers nodes in their passSlot fields; a pass started inside
            // it (from a hook) uses a dictionary so as not to disturb them.
            let outermost = activePasses == 0
            activePasses += 1
            var pass = Pass(mode: mode, retainGraph: retainGraph || createGraph, createGraph: createGraph, usesSlots: outermost)
            if outermost { pass.exchangeArrays(with: &spareArrays) }
            defer {
                swap(&replaced, &pass.replaced)
                activePasses -= 1
                if outermost {
                    for node in pass.nodes { node._withUnsafeGuaranteedRef { $0.passSlot = -1 } }
                    for anchor in pass.leafOrder { anchor.passSlot = -1 }
                    pass.clearArrays()
                    if pass.nodes.capacity <= PassArrays.keptCapacity { pass.exchangeArrays(with: &spareArrays) }
                }
            }
            try pass.collect(roots: roots)
            try pass.seed(roots: roots, seeds: seedTensors)
            try pass.propagate()
            return try pass.finish()
        } }
    }

    /// The per-node arrays of the last outermost pass, emptied, kept for the next one (under the
    /// graph lock): a pass then makes no large allocation. glibc merges every small free chunk
    /// on each large allocation or free (malloc_consolidate), which slowed the allocations of
    /// the next graph's thousands of nodes.
    nonisolated(unsafe) private static var spareArrays = PassArrays()

    struct PassArrays {
        /// Arrays for graphs of up to this many nodes are kept (a few MiB at most).
        static let keptCapacity = 1 << 16
        var nodes: [Unmanaged<Node>] = []
        var deps: [Int32] = []
        var grads: [Tensor?] = []
        var edgeStart: [Int32] = []
        var edgeTarget: [Int32] = []
        var ready: [Int] = []
    }

    /// The most backward passes that may run nested on one thread (see run).
    static let maximumNesting = 64

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
        /// A forward-mode pass (jvp) runs on this thread: saved inputs and gradients may carry
        /// tangents, so every gradient is computed by ops that derive theirs (recorded rules, no
        /// fused loops, no in-place sums) and keeps its tangent when handed out (forward over
        /// reverse, with or without create_graph).
        let keepsTangents: Bool
        /// A capture records this pass (see CapturedFunction): every gradient is computed by a
        /// noted op or loop and summed out of place, so the capture holds the pass's arithmetic.
        let traced: Bool
        let usesSlots: Bool
        /// The nodes reachable from the roots, by slot. Not retained: the roots (held by run)
        /// keep them alive through edges, which never change before a node is freed.
        var nodes: [Unmanaged<Node>] = []
        private var index: [ObjectIdentifier: Int] = [:]
        var deps: [Int32] = []
        var grads: [Tensor?] = []
        /// Where each input's gradient goes, found once by collect: inputs of node i are
        /// entries edgeStart[i]..<edgeStart[i + 1] of edgeTarget, each a node slot (>= 0), a
        /// leaf slot (-2 - s) or nowhere (-1).
        var edgeStart: [Int32] = []
        var edgeTarget: [Int32] = []
        /// Nodes whose consumers have all run (propagate's work list).
        var ready: [Int] = []
        /// Nodes whose work reaches a captured tensor (capture mode only; empty, meaning all, otherwise).
        var needed: [Bool] = []
        /// Gradients that reached leaves in this pass, summed, in order of first arrival (the
        /// leaves by their anchors: a leaf freed meanwhile gets nothing, see finish()).
        var leafOrder: [LeafAnchor] = []
        var leafGrads: [Tensor?] = []
        /// Edges into each leaf (by leafGrads' index) whose node has not run yet: at 0 the
        /// leaf's gradient for this pass is complete. Counted only when finishesLeavesEarly.
        var leafDeps: [Int32] = []
        /// Whether a leaf of this pass has gradient-ready hooks (accumulate mode only): such a
        /// leaf is finished as soon as its gradient is complete, not at the end of the pass.
        var finishesLeavesEarly = false
        /// Where each leaf's gradient is in leafGrads: the anchor's passSlot, or this dictionary
        /// in a nested pass.
        private var leafIndex: [ObjectIdentifier: Int] = [:]
        /// Capture mode: where each captured tensor's gradient goes (leaves by their anchors).
        var capturedLeaf: [ObjectIdentifier: [Int]] = [:]
        var capturedNode: [ObjectIdentifier: [Int]] = [:]
        var captured: [Tensor?] = []
        /// Leaves' previous `.grad` tensors, replaced by accumulation (released after the lock).
        var replaced: [Tensor] = []

        /// Swaps the per-node arrays with `spare` (no copies: both stay uniquely referenced).
        mutating func exchangeArrays(with spare: inout PassArrays) {
            swap(&nodes, &spare.nodes)
            swap(&deps, &spare.deps)
            swap(&grads, &spare.grads)
            swap(&edgeStart, &spare.edgeStart)
            swap(&edgeTarget, &spare.edgeTarget)
            swap(&ready, &spare.ready)
        }

        /// Empties the per-node arrays, keeping their memory.
        mutating func clearArrays() {
            nodes.removeAll(keepingCapacity: true)
            deps.removeAll(keepingCapacity: true)
            grads.removeAll(keepingCapacity: true)
            edgeStart.removeAll(keepingCapacity: true)
            edgeTarget.removeAll(keepingCapacity: true)
            ready.removeAll(keepingCapacity: true)
        }

        init(mode: Mode, retainGraph: Bool, createGraph: Bool, usesSlots: Bool) {
            self.usesSlots = usesSlots
            self.mode = mode
            self.retainGraph = retainGraph
            self.createGraph = createGraph
            self.keepsTangents = ThreadState.current.forwardLevel != 0
            self.traced = Trace.recorder != nil
            if case .capture(let targets) = mode {
                captured = [Tensor?](repeating: nil, count: targets.count)
                for (k, t) in targets.enumerated() {
                    if let fn = t.gradFn { capturedNode[ObjectIdentifier(fn), default: []].append(k) }
                    else { capturedLeaf[ObjectIdentifier(t.anchor), default: []].append(k) }
                }
            }
        }

        /// Whether gradients may be summed in place (only this pass sees them, and no graph or
        /// tangent of the sum is wanted).
        var sumsInPlace: Bool { !createGraph && !keepsTangents && !traced }

        /// The node's number in this pass, if it was collected.
        @inline(__always)
        func slot(_ node: Node) -> Int? {
            if usesSlots { return node.passSlot >= 0 ? Int(node.passSlot) : nil }
            return index[ObjectIdentifier(node)]
        }

        @inline(__always)
        mutating func add(_ node: Node) {
            if usesSlots { node.passSlot = Int32(truncatingIfNeeded: nodes.count) } else { index[ObjectIdentifier(node)] = nodes.count }
            nodes.append(Unmanaged.passUnretained(node))
        }

        /// The node in slot i (retained by the caller's binding; the hot loops borrow instead).
        @inline(__always)
        func node(_ i: Int) -> Node { nodes[i].takeUnretainedValue() }

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
                let ref = nodes[cursor]
                cursor += 1
                try ref._withUnsafeGuaranteedRef { try visit($0) }
            }
            edgeStart.append(Int32(truncatingIfNeeded: edgeTarget.count))
            grads.append(contentsOf: repeatElement(nil, count: nodes.count))
            if finishesLeavesEarly {
                leafDeps = [Int32](repeating: 0, count: leafOrder.count)
                for target in edgeTarget where target <= -2 { leafDeps[Int(-2 - target)] += 1 }
            }
            if case .capture = mode {
                needed = [Bool](repeating: true, count: nodes.count)
                markNeeded()
            }
        }

        /// Numbers the targets of a collected node's inputs, collecting the nodes among them.
        @inline(__always)
        private mutating func visit(_ node: Node) throws {
            if node.isReleased {
                throw AutogradError.state("the graph through '\(node.name)' was already freed by an earlier backward; pass retain_graph = true to the first backward to run backward through it again")
            }
            edgeStart.append(Int32(truncatingIfNeeded: edgeTarget.count))
            for k in 0..<node.inputCount {
                switch node.inputRef(k) {
                case .none:
                    edgeTarget.append(-1)
                case .leaf(let anchor):
                    edgeTarget.append(anchor._withUnsafeGuaranteedRef { leafSlot($0) }.map { -2 - Int32(truncatingIfNeeded: $0) } ?? -1)
                case .node(let child):
                    let known = child._withUnsafeGuaranteedRef { slot($0) }
                    if let i = known {
                        deps[i] += 1
                        edgeTarget.append(Int32(truncatingIfNeeded: i))
                    } else {
                        edgeTarget.append(Int32(truncatingIfNeeded: nodes.count))
                        child._withUnsafeGuaranteedRef { add($0) }
                        deps.append(1)
                    }
                }
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
                let node = node(i)
                for k in 0..<node.inputCount {
                    if case .node(let child) = node.edge(k), let j = slot(child) {
                        remaining[j] -= 1
                        if remaining[j] == 0 { ready.append(j) }
                    }
                }
            }
            for i in order.reversed() {
                let node = node(i)
                var hit = capturedNode[ObjectIdentifier(node)] != nil
                for k in 0..<node.inputCount where !hit {
                    switch node.edge(k) {
                    case .none: break
                    case .leaf(let anchor): hit = capturedLeaf[ObjectIdentifier(anchor)] != nil
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
                    try arriveAtLeaf(root.anchor, s)
                }
            }
        }

        mutating func arriveAtLeaf(_ anchor: LeafAnchor, _ g: Tensor) throws {
            if let i = leafSlot(anchor) {
                try Backward.add(g, into: &leafGrads[i], inPlace: sumsInPlace)
            }
        }

        /// Where the gradient of this leaf is summed in this pass, made on first arrival; nil
        /// for a leaf a capture pass does not want.
        @inline(__always)
        mutating func leafSlot(_ anchor: LeafAnchor) -> Int? {
            if usesSlots, anchor.passSlot >= 0 { return Int(anchor.passSlot) }
            if !usesSlots, let i = leafIndex[ObjectIdentifier(anchor)] { return i }
            if case .capture = mode, capturedLeaf[ObjectIdentifier(anchor)] == nil { return nil }
            if usesSlots { anchor.passSlot = Int32(truncatingIfNeeded: leafOrder.count) } else { leafIndex[ObjectIdentifier(anchor)] = leafOrder.count }
            leafGrads.append(nil)
            leafOrder.append(anchor)
            if case .accumulate = mode, !anchor.readyHooks.isEmpty { finishesLeavesEarly = true }
            return leafOrder.count - 1
        }

        mutating func propagate() throws {
            var ready: [Int] = []
            swap(&ready, &self.ready)
            defer { swap(&ready, &self.ready) }
            for i in deps.indices where deps[i] == 0 { ready.append(i) }
            while let i = ready.popLast() {
                try nodes[i]._withUnsafeGuaranteedRef { try runNode($0, slot: i, ready: &ready) }
            }
        }

        /// Counts node i's edges as done, queueing the inputs that have nothing left to wait for.
        @inline(__always)
        mutating func passDependencies(of i: Int, ready: inout [Int]) throws {
            for e in Int(edgeStart[i])..<Int(edgeStart[i + 1]) {
                let target = Int(edgeTarget[e])
                if target >= 0 {
                    deps[target] -= 1
                    if deps[target] == 0 { ready.append(target) }
                } else if target <= -2 && finishesLeavesEarly {
                    try leafEdgeDone(-2 - target)
                }
            }
        }

        /// Counts one edge into leaf j as done (only when finishesLeavesEarly); a leaf with
        /// gradient-ready hooks is finished once it has nothing left to wait for, so work its
        /// hooks start overlaps the rest of the pass.
        mutating func leafEdgeDone(_ j: Int) throws {
            leafDeps[j] -= 1
            if leafDeps[j] == 0 && !leafOrder[j].readyHooks.isEmpty { try finishLeaf(j) }
        }

        /// Runs node i (hooks and capture first): its fused loop where it has one and the pass
        /// is not recorded, else its rule, summing what it gives into the inputs' slots. A node
        /// none of whose consumers produced a gradient (or that leads to nothing captured) still
        /// passes on its dependency counts, so nodes below it run.
        mutating func runNode(_ node: Node, slot i: Int, ready: inout [Int]) throws {
            var inputGrads = InputGradients()
            if var g = Backward.take(&grads[i]) {
                if node.hasHooks {
                    if traced { throw Backward.hooksInCapture(on: "the result of '\(node.name)'") }
                    g = try Backward.runHooks(node.hooks, on: g)
                }
                // collect() saw every node unreleased: one released since was released by a
                // backward pass that ran while a hook did (from the hook or another thread).
                if node.isReleased { throw Backward.freedDuringPass(node) }
                if !capturedNode.isEmpty, let targets = capturedNode[ObjectIdentifier(node)] {
                    for k in targets { captured[k] = g }
                }
                if needed.isEmpty || needed[i] {
                    try node.checkSavedVersions()
                    if Backward.runsFused(node, g, createGraph: createGraph, keepsTangents: keepsTangents) {
                        try deliverFused(node, slot: i, &g)
                        if !retainGraph { node.release() }
                        try passDependencies(of: i, ready: &ready)
                        return
                    }
                    // Loaded only here: copying the closure out costs a retain the fused path skips.
                    guard let rule = node.rule else { throw Backward.freedDuringPass(node) }
                    inputGrads = try rule(g, node)
                    guard inputGrads.count == node.inputCount else {
                        throw AutogradError.internal("the rule of '\(node.name)' returned \(inputGrads.count) gradients for \(node.inputCount) inputs")
                    }
                }
            }
            if !retainGraph { node.release() }
            let first = Int(edgeStart[i])
            for k in 0..<(Int(edgeStart[i + 1]) - first) {
                let target = Int(edgeTarget[first + k])
                if target == -1 { continue }
                var gk: Tensor? = nil
                if k < inputGrads.count, let raw = inputGrads[k] {
                    gk = try raw.reduced(toShape: node.inputShape(k))
                }
                if target >= 0 {
                    if let gk { try Backward.add(gk, into: &grads[target], inPlace: sumsInPlace) }
                    deps[target] -= 1
                    if deps[target] == 0 { ready.append(target) }
                } else {
                    if let gk { try Backward.add(gk, into: &leafGrads[-2 - target], inPlace: sumsInPlace) }
                    if finishesLeavesEarly { try leafEdgeDone(-2 - target) }
                }
            }
        }

        /// Runs an elementwise node's fused loop and sums each input's gradient into its slot:
        /// in place where the slot already holds a gradient only this pass sees, else into g's
        /// own buffer for input 0 when nothing else holds g (the pass owns g then, and hands
        /// that ownership to the loop), else into a new tensor. Inputs go last to first, so
        /// input 0 is the one that may overwrite g. The node's kind dispatches once, to the
        /// run(_:) below specialised for its op.
        mutating func deliverFused(_ node: Node, slot i: Int, _ g: inout Tensor) throws {
            try withUnsafeMutablePointer(to: &self) { pass in
                try withUnsafeMutablePointer(to: &g) { g in
                    var delivery = FusedDelivery(pass: pass, node: Unmanaged.passUnretained(node), slot: i, g: g)
                    try node.elementwise.dispatch(to: &delivery)
                }
            }
        }

        /// deliverFused's visitor: runs the pass's run(_:) for the node's op. Its pointers are
        /// valid for the dispatch only: deliverFused holds exclusive access to the pass and g,
        /// and the caller keeps the node alive meanwhile (its graph's roots hold it).
        private struct FusedDelivery: ElementwiseVisitor {
            let pass: UnsafeMutablePointer<Pass>
            let node: Unmanaged<Node>
            let slot: Int
            let g: UnsafeMutablePointer<Tensor>

            @inline(__always)
            mutating func visit<Op: UnaryElementwise>(_ op: Op) throws {
                try node._withUnsafeGuaranteedRef { try pass.pointee.run(op, $0, slot: slot, &g.pointee) }
            }

            @inline(__always)
            mutating func visit<Op: BinaryElementwise>(_ op: Op) throws {
                try node._withUnsafeGuaranteedRef { try pass.pointee.run(op, $0, slot: slot, &g.pointee) }
            }
        }

        mutating func run<Op: UnaryElementwise>(_ op: Op, _ node: Node, slot i: Int, _ g: inout Tensor) throws {
            let dtype = g.dtype
            if traced {
                try deliverTraced(node, slot: i, g, passesThrough: { _ in false }) { _ in ElementLoops.derivative(op, dtype: dtype) }
                return
            }
            try deliver(node, slot: i, &g, passesThrough: { _ in false }) { _, gp, x, _, y, out, n, accumulate in
                FusedLoop.unary(op, dtype: dtype, v: gp, x: x, y: y, into: out, count: n, accumulate: accumulate)
            }
        }

        mutating func run<Op: BinaryElementwise>(_ op: Op, _ node: Node, slot i: Int, _ g: inout Tensor) throws {
            let dtype = g.dtype
            if traced {
                try deliverTraced(node, slot: i, g, passesThrough: { op.passesThrough($0) }) { k in ElementLoops.derivative(op, k, dtype: dtype) }
                return
            }
            try deliver(node, slot: i, &g, passesThrough: { op.passesThrough($0) }) { k, gp, a, b, y, out, n, accumulate in
                FusedLoop.binary(op, k, dtype: dtype, v: gp, a: a, b: b, y: y, into: out, count: n, accumulate: accumulate)
            }
        }

        /// The walk over the node's inputs behind run(_:): `loop(k, g, x0, x1, y, out, n,
        /// accumulate)` is the op's fused loop for input k.
        @inline(__always)
        private mutating func deliver(_ node: Node, slot i: Int, _ g: inout Tensor, passesThrough: (Int) -> Bool,
                                      _ loop: (Int, UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeMutableRawPointer,
                                               UnsafeMutableRawPointer, UnsafeMutableRawPointer, Int, Bool) -> Void) throws {
            var gIsOurs = isKnownUniquelyReferenced(&g) && g.storageIsUnique()
            guard let gp = g.storage.raw else { return }
            let (x0, x1, y) = node.fusedOperands(gp)
            let n = g.count, dtype = g.dtype
            let first = Int(edgeStart[i])
            var k = Int(edgeStart[i + 1]) - first - 1
            while k >= 0 {
                let target = Int(edgeTarget[first + k])
                @inline(__always)
                func sumInto(_ sum: inout Tensor?) throws {
                    if var existing = Backward.take(&sum) {
                        if existing.storage !== g.storage && isKnownUniquelyReferenced(&existing) && existing.storageIsUnique(),
                           let ep = existing.storage.raw {
                            loop(k, gp, x0, x1, y, ep, n, true)
                            sum = existing
                        } else {
                            let fresh = try Tensor(uninitialized: g.shape, dtype: dtype)
                            guard let fp = fresh.storage.raw, let ep = existing.storage.raw else { return }
                            fp.copyMemory(from: ep, byteCount: n * dtype.size)
                            loop(k, gp, x0, x1, y, fp, n, true)
                            sum = fresh
                        }
                    } else if passesThrough(k) {
                        sum = g
                        gIsOurs = false
                    } else if k == 0 && gIsOurs {
                        loop(k, gp, x0, x1, y, gp, n, false)
                        sum = g
                        gIsOurs = false
                    } else {
                        let fresh = try Tensor(uninitialized: g.shape, dtype: dtype)
                        guard let fp = fresh.storage.raw else { return }
                        loop(k, gp, x0, x1, y, fp, n, false)
                        sum = fresh
                    }
                }
                if target >= 0 {
                    try sumInto(&grads[target])
                } else if target <= -2 {
                    try sumInto(&leafGrads[-2 - target])
                }
                k -= 1
            }
        }

        /// deliver as a capture records it: each input's gradient from the fused loop into a
        /// tensor of its own (noted as an elementwise step), then summed out of place. The
        /// values are the eager pass's: the same loop, and existing + d is what its in-place
        /// accumulation computes. Inputs go last to first, as in deliver.
        private mutating func deliverTraced(_ node: Node, slot i: Int, _ g: Tensor, passesThrough: (Int) -> Bool,
                                            loop: (Int) -> ElementLoop) throws {
            let operands = node.fusedOperandStorages(g.storage).map { Tensor(shape: g.shape, storage: $0) }
            let first = Int(edgeStart[i])
            var k = Int(edgeStart[i + 1]) - first - 1
            while k >= 0 {
                let target = Int(edgeTarget[first + k])
                if target != -1 {
                    var gk = g
                    if !passesThrough(k) {
                        let inputs = [g] + operands
                        let l = loop(k)
                        gk = try ElementLoops.run(l, inputs)
                        Trace.note(gk, node.name, inputs, kernel: .elementwise(l)) { ins in try ElementLoops.run(l, ins) }
                    }
                    if target >= 0 {
                        try Backward.add(gk, into: &grads[target], inPlace: false)
                    } else {
                        try Backward.add(gk, into: &leafGrads[-2 - target], inPlace: false)
                    }
                }
                k -= 1
            }
        }

        /// Runs leaf i's hooks on its gradient for this pass, then accumulates it into `.grad`
        /// and runs its gradient-ready hooks, or keeps it for the captures that want it.
        mutating func finishLeaf(_ i: Int) throws {
            let anchor = leafOrder[i]
            // A leaf freed since it was used receives nothing: nobody could read it.
            guard var g = Backward.take(&leafGrads[i]), anchor.isAlive else { return }
            let hooks = anchor.hooks
            if !hooks.isEmpty {
                if traced { throw Backward.hooksInCapture(on: "a leaf of shape \(anchor.shape)") }
                g = try Backward.runHooks(hooks, on: g)
            }
            switch mode {
            case .accumulate:
                guard anchor.isAlive else { return }
                if let old = try Backward.accumulate(&g, into: anchor, createGraph: createGraph, keepsTangents: keepsTangents) {
                    replaced.append(old)
                }
                let readyHooks = anchor.readyHooks
                if !readyHooks.isEmpty {
                    if traced { throw Backward.hooksInCapture(on: "a leaf of shape \(anchor.shape)") }
                    try Backward.runReadyHooks(readyHooks, on: anchor.standIn())
                }
            case .capture:
                for k in capturedLeaf[ObjectIdentifier(anchor)] ?? [] { captured[k] = g }
            }
        }

        /// Finishes the leaves not finished yet (see finishLeaf), in order of first arrival,
        /// and hands the captured gradients back.
        mutating func finish() throws -> [Tensor?] {
            for i in leafOrder.indices where leafGrads[i] != nil { try finishLeaf(i) }
            // Each gradient handed out owns its values (see Backward.owned); under create_graph
            // one with history is returned as it is (its values are a graph result).
            for k in captured.indices {
                guard var g = Backward.take(&captured[k]) else { continue }
                captured[k] = createGraph && g.gradFn != nil ? g : try Backward.owned(&g, keepsTangent: keepsTangents)
            }
            return captured
        }
    }

    /// The error for a hook met by a backward pass that a capture records.
    /// The capture fails at its end too, even if the function goes on after this error.
    static func hooksInCapture(on what: String) -> AutogradError {
        let message = "the backward reached a hook on \(what); hooks run user code on each backward and cannot be replayed (remove the hook, or apply its change as ops inside the captured function)"
        Trace.refuse(message)
        return AutogradError.state("capture: " + message)
    }

    /// The error for a node a backward pass run from a hook freed while this pass ran.
    @inline(never)
    static func freedDuringPass(_ node: Node) -> AutogradError {
        AutogradError.state("the graph through '\(node.name)' was freed during this backward, by a backward run from a hook (or from another thread while a hook ran); pass retain_graph = true to that backward")
    }

    /// Where the choice between an elementwise node's fused loop and its recorded rule is made:
    /// the loop (a non-differentiable computation of the same derivative) runs when the pass is
    /// not recorded, the node has one (its inputs are not broadcast), and no tangent can be
    /// involved (no forward-mode pass runs, so neither g nor the saved inputs carry one).
    @inline(__always)
    static func runsFused(_ node: Node, _ g: Tensor, createGraph: Bool, keepsTangents: Bool) -> Bool {
        !createGraph && !keepsTangents && node.elementwise != .none && g.count > 0 && g.tangentBox == nil
    }

    /// Runs user hooks on `g` in order, with the graph lock released (a hook may wait for a
    /// thread that calls into the engine). The pass's own state is local to it and its nodes
    /// stay alive through the roots; what other threads may change meanwhile (a node released,
    /// a leaf freed) is checked again after.
    static func runHooks(_ hooks: [GradHook], on g: Tensor) throws -> Tensor {
        try GraphLock.withoutLock {
            var g = g
            for hook in hooks { g = try hook.apply(to: g) }
            return g
        }
    }

    /// Runs gradient-ready hooks on the leaf (a stand-in sharing its anchor, so `.grad` reads
    /// the gradient just accumulated), with the graph lock released as runHooks does.
    static func runReadyHooks(_ hooks: [GradReadyHook], on leaf: Tensor) throws {
        try GraphLock.withoutLock {
            for hook in hooks { try hook.body(leaf) }
        }
    }

    /// The value of `slot`, leaving nil there: moved out, so it stays uniquely referenced
    /// (a copy then `slot = nil` costs a retain and a release).
    @inline(__always)
    static func take(_ slot: inout Tensor?) -> Tensor? {
        var value: Tensor? = nil
        swap(&value, &slot)
        return value
    }

    /// Adds `g` to the gradient collected so far in `sum`: in place when the pass is not recorded
    /// and nothing else can see the collected tensor or its values, else into a new tensor.
    @inline(__always)
    static func add(_ g: Tensor, into sum: inout Tensor?, inPlace: Bool) throws {
        guard var existing = take(&sum) else { sum = g; return }
        if inPlace && existing.storage !== g.storage && existing.dtype == g.dtype && existing.shape == g.shape
            && isKnownUniquelyReferenced(&existing) && existing.storageIsUnique() {
            existing.add(inPlace: g)
            sum = existing
        } else {
            sum = try existing.adding(g)
        }
    }

    /// `g` as a tensor without history whose values nothing else can see: a fresh alias when
    /// nothing else holds `g` or its values, else a copy. A gradient that shared memory with a
    /// seed, a parameter or another leaf's gradient would change under an in-place write to it
    /// (an optimizer step, ag_tensor_copy_). With `keepsTangent` (a forward-mode pass runs) the
    /// result keeps g's tangent.
    static func owned(_ g: inout Tensor, keepsTangent: Bool = false) throws -> Tensor {
        let tangent = keepsTangent ? g.tangentBox : nil
        let result = isKnownUniquelyReferenced(&g) && g.storageIsUnique() ? g.detach() : try g.copy()
        if let tangent { result.tangentBox = tangent }
        return result
    }

    /// Adds `g` into the leaf's `.grad`. Out of place: a gradient handed out earlier never changes.
    /// Returns the gradient it replaced, for the caller to release after the graph lock.
    static func accumulate(_ g: inout Tensor, into leaf: LeafAnchor, createGraph: Bool, keepsTangents: Bool) throws -> Tensor? {
        // Only a gradient with history needs to stay attached (create_graph); any other is
        // stored as a tensor of its own (Backward.owned), so `.grad` never holds a leaf (no
        // leaf -> grad -> leaf cycle) and never shares values with the seed or the parameter.
        if let existing = leaf.grad {
            let term = createGraph && g.gradFn != nil ? g : g.detach()
            if keepsTangents && term !== g { term.tangentBox = g.tangentBox }
            leaf.grad = try GradMode.with(enabled: createGraph) { try existing.adding(term) }
            return existing
        }
        leaf.grad = createGraph && g.gradFn != nil ? g : try owned(&g, keepsTangent: keepsTangents)
        return nil
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

/// A function run on a leaf once per backward pass, right after the pass accumulated the leaf's
/// gradient into `.grad` and as soon as nothing more will reach it in that pass (PyTorch's
/// post-accumulate-grad hook): data parallelism starts its all-reduce of that gradient there.
public final class GradReadyHook {
    public let id: Int
    let body: (Tensor) throws -> Void

    public init(id: Int, _ body: @escaping (Tensor) throws -> Void) {
        self.id = id
        self.body = body
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

    /// Registers a gradient-ready hook on this leaf (see GradReadyHook).
    public func registerPostAccumulateGradHook(_ hook: GradReadyHook) throws {
        try GraphLock.withLock {
            guard requiresGrad else { throw AutogradError.state("register_post_accumulate_grad_hook: the tensor does not require grad") }
            guard gradFn == nil else {
                throw AutogradError.state("register_post_accumulate_grad_hook: the tensor is not a leaf (it has history), so no gradient is accumulated into it")
            }
            readyHooks.append(hook)
        }
    }

    /// Removes the hook (of either kind) with `id`; false if there is none.
    public func removeHook(id: Int) -> Bool {
        // The removed hook is released after the lock, so its destructor may call the engine.
        var removed: AnyObject? = nil
        GraphLock.withLock {
            if let fn = gradFn, let i = fn.hooks.firstIndex(where: { $0.id == id }) { removed = fn.hooks.remove(at: i) }
            else if let i = hooks.firstIndex(where: { $0.id == id }) { removed = hooks.remove(at: i) }
            else if gradFn == nil, let i = readyHooks.firstIndex(where: { $0.id == id }) { removed = readyHooks.remove(at: i) }
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
