/// The derivative rule of a recorded operation: given the gradient flowing into the output and
/// the node (its saved tensors, which inputs need a gradient), the gradient for each input
/// (nil where none is needed), in the output's broadcast shape.
/// Rules are written with differentiable tensor ops, so running them with grad mode on
/// (create_graph) records the backward pass itself. Rules must not capture tensors: tensors go
/// in `saved`, so the graph can be released and torn down without recursion.
typealias BackwardRule = (_ grad: Tensor, _ node: Node) throws -> [Tensor?]

/// Where the gradient for one input of a node goes.
enum Edge {
    /// The input requires no grad: its gradient is not computed.
    case none
    /// A leaf that requires grad: its gradient accumulates into its `.grad`. Held weakly: a
    /// leaf's `.grad` computed with create_graph refers back into the graph, and a strong
    /// reference here would make a cycle. A leaf nobody holds can receive no gradient anyway.
    case leaf(WeakTensor)
    /// The result of another recorded operation: its gradient flows on into that node.
    case node(Node)
}

struct WeakTensor {
    weak var tensor: Tensor?
}

/// A tensor saved for backward. Results of operations are held strongly; leaves weakly with
/// their values kept (see Edge.leaf): unpacked, a live leaf is itself (so create_graph sees it),
/// a freed one a constant with the same values.
enum SavedTensor {
    case result(Tensor)
    case leaf(WeakTensor, Storage, [Int])

    init(_ t: Tensor) {
        self = t.gradFn == nil ? .leaf(WeakTensor(tensor: t), t.storage, t.shape) : .result(t)
    }

    var tensor: Tensor {
        switch self {
        case .result(let t): return t
        case .leaf(let weak, let storage, let shape): return weak.tensor ?? Tensor(shape: shape, storage: storage)
        }
    }
}

/// One recorded operation of the graph (PyTorch's grad_fn).
final class Node {
    let name: StaticString
    /// Shape and dtype of the output, for checking seeds and incoming gradients.
    let shape: [Int]
    let dtype: DType
    /// One edge per input, in the order the rule returns gradients.
    var edges: [Edge]
    /// Shapes of the inputs: the gradient of each is summed back to its shape (broadcasting).
    let inputShapes: [[Int]]
    var savedTensors: [SavedTensor]
    /// nil once the graph has been released by a backward pass without retain_graph.
    var rule: BackwardRule?
    /// Hooks registered on the output tensor, run on its gradient before the rule.
    var hooks: [GradHook] = []

    init(name: StaticString, output shape: [Int], dtype: DType, inputs: [Tensor], saved: [Tensor], rule: @escaping BackwardRule) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.edges = inputs.map { t in
            if let fn = t.gradFn { return .node(fn) }
            return t.requiresGrad ? .leaf(WeakTensor(tensor: t)) : .none
        }
        self.inputShapes = inputs.map(\.shape)
        self.savedTensors = saved.map(SavedTensor.init)
        self.rule = rule
    }

    var isReleased: Bool { rule == nil }

    /// The k-th tensor saved at forward time.
    @inline(__always)
    func saved(_ k: Int) -> Tensor { savedTensors[k].tensor }

    /// Whether input `k` wants a gradient (rules skip the work for the others).
    @inline(__always)
    func needsGrad(_ k: Int) -> Bool {
        if case .none = edges[k] { return false }
        return true
    }

    /// Drops the saved tensors and the rule once backward no longer needs them.
    func release() {
        rule = nil
        savedTensors = []
    }

    /// Tears the graph above this node down with an explicit work list instead of recursive
    /// deinits, so that dropping a chain of a million nodes cannot overflow the stack.
    deinit {
        var work: [Node] = []
        Node.detachChildren(edges: &edges, saved: &savedTensors, into: &work)
        while var node = work.popLast() {
            if isKnownUniquelyReferenced(&node) {
                Node.detachChildren(edges: &node.edges, saved: &node.savedTensors, into: &work)
            }
        }
    }

    private static func detachChildren(edges: inout [Edge], saved: inout [SavedTensor], into work: inout [Node]) {
        for edge in edges {
            if case .node(let n) = edge { work.append(n) }
        }
        edges = []
        while let s = saved.popLast() {
            guard case .result(var t) = s else { continue }
            if isKnownUniquelyReferenced(&t), let fn = t.gradFn {
                t.gradFn = nil
                work.append(fn)
            }
        }
    }
}

extension Tensor {
    /// Whether an operation on `inputs` must be recorded: grad mode is on and one requires grad.
    @inline(__always)
    static func shouldRecord(_ a: Tensor) -> Bool {
        a.requiresGrad && GradMode.isEnabled
    }

    @inline(__always)
    static func shouldRecord(_ a: Tensor, _ b: Tensor) -> Bool {
        (a.requiresGrad || b.requiresGrad) && GradMode.isEnabled
    }

    static func shouldRecord(_ inputs: [Tensor]) -> Bool {
        inputs.contains { $0.requiresGrad } && GradMode.isEnabled
    }

    /// Records this tensor as the output of operation `name` on `inputs`.
    func record(_ name: StaticString, inputs: [Tensor], saved: [Tensor] = [], rule: @escaping BackwardRule) {
        gradFn = Node(name: name, output: shape, dtype: dtype, inputs: inputs, saved: saved, rule: rule)
        requiresGrad = true
    }
}
