/// Reverse-mode gradient propagation over the recorded graph. The walk is iterative (an
/// explicit ready stack and dependency counts), so graph depth is limited by memory only.
enum Backward {
    /// Runs backward from `root` with gradient `seed` (nil: 1 for a one-element root) and
    /// accumulates into the `.grad` of every leaf reached.
    static func run(root: Tensor, seed: Tensor?, retainGraph: Bool, createGraph: Bool) throws {
        let seedTensor = try checkedSeed(root: root, seed: seed)
        guard let rootNode = root.gradFn else {
            guard root.requiresGrad else {
                throw AutogradError.state("backward: the root does not require grad (no input of it requires grad, or it was computed with grad mode off)")
            }
            // A leaf root: its gradient is the seed itself.
            try accumulate(seedTensor, into: root, createGraph: createGraph)
            return
        }
        let order = try collect(from: rootNode)
        try GradMode.with(enabled: createGraph) {
            try propagate(order: order, seed: seedTensor, retainGraph: retainGraph || createGraph, createGraph: createGraph)
        }
    }

    /// The seed checked against the root, or the implicit 1 for a one-element root.
    static func checkedSeed(root: Tensor, seed: Tensor?) throws -> Tensor {
        guard let seed else {
            guard root.count == 1 else {
                throw AutogradError.state("backward: a seed (gradient) is needed for a root that is not a scalar; the root has shape \(root.shape)")
            }
            return try Tensor.full(root.shape, 1, dtype: root.dtype)
        }
        guard seed.dtype == root.dtype else {
            throw AutogradError.dtype("backward: the seed is \(seed.dtype) but the root is \(root.dtype)")
        }
        guard seed.shape == root.shape else {
            throw AutogradError.shape("backward: the seed has shape \(seed.shape) but the root has shape \(root.shape)")
        }
        return seed
    }

    /// The nodes reachable from `root` with the number of edges into each from within the
    /// reachable set; fails before anything runs if part of the graph was already released.
    private static func collect(from root: Node) throws -> (nodes: [Node], index: [ObjectIdentifier: Int], deps: [Int]) {
        var nodes: [Node] = [root]
        var index: [ObjectIdentifier: Int] = [ObjectIdentifier(root): 0]
        var deps: [Int] = [0]
        var stack: [Node] = [root]
        while let node = stack.popLast() {
            if node.isReleased {
                throw AutogradError.state("backward: the graph through '\(node.name)' was already freed by an earlier backward; pass retain_graph = true to the first backward to run backward through it again")
            }
            for edge in node.edges {
                guard case .node(let child) = edge else { continue }
                let id = ObjectIdentifier(child)
                if let i = index[id] {
                    deps[i] += 1
                } else {
                    index[id] = nodes.count
                    nodes.append(child)
                    deps.append(1)
                    stack.append(child)
                }
            }
        }
        return (nodes, index, deps)
    }

    private static func propagate(order: (nodes: [Node], index: [ObjectIdentifier: Int], deps: [Int]),
                                  seed: Tensor, retainGraph: Bool, createGraph: Bool) throws {
        var deps = order.deps
        var grads = [Tensor?](repeating: nil, count: order.nodes.count)
        grads[0] = seed
        var ready: [Int] = [0]
        while let i = ready.popLast() {
            let node = order.nodes[i]
            // A node none of whose consumers produced a gradient still passes on its
            // dependency counts, so nodes below it reached by other paths run.
            var inputGrads: [Tensor?] = []
            if let g = grads[i], let rule = node.rule {
                grads[i] = nil
                inputGrads = try rule(g, node)
                guard inputGrads.count == node.edges.count else {
                    throw AutogradError.internal("the rule of '\(node.name)' returned \(inputGrads.count) gradients for \(node.edges.count) inputs")
                }
            }
            if !retainGraph { node.release() }
            for (k, edge) in node.edges.enumerated() {
                if case .none = edge { continue }
                var gk: Tensor? = nil
                if k < inputGrads.count, let raw = inputGrads[k] {
                    gk = try raw.reduced(toShape: node.inputShapes[k])
                }
                switch edge {
                case .none:
                    break
                case .leaf(let leaf):
                    if let gk { try accumulate(gk, into: leaf, createGraph: createGraph) }
                case .node(let child):
                    guard let j = order.index[ObjectIdentifier(child)] else {
                        throw AutogradError.internal("backward reached node '\(child.name)' that was not collected")
                    }
                    if let gk {
                        grads[j] = try grads[j].map { try $0.adding(gk) } ?? gk
                    }
                    deps[j] -= 1
                    if deps[j] == 0 { ready.append(j) }
                }
            }
        }
    }

    /// Adds `g` into `leaf.grad`. Out of place: a gradient handed out earlier never changes.
    static func accumulate(_ g: Tensor, into leaf: Tensor, createGraph: Bool) throws {
        let g = createGraph ? g : g.detach()
        if let existing = leaf.grad {
            leaf.grad = try GradMode.with(enabled: createGraph) { try existing.adding(g) }
        } else {
            leaf.grad = g
        }
    }
}

extension Tensor {
    /// Runs backward from this tensor (see `Backward.run`).
    public func backward(seed: Tensor? = nil, retainGraph: Bool = false, createGraph: Bool = false) throws {
        try Backward.run(root: self, seed: seed, retainGraph: retainGraph, createGraph: createGraph)
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
