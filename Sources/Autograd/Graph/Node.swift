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
    case constant(Storage, [Int])

    /// Results are kept as they are; leaves that require grad weakly; other leaves (constants)
    /// by their values only.
    init(_ t: Tensor) {
        if t.gradFn != nil { self = .result(t) }
        else if t.requiresGrad { self = .leaf(WeakTensor(tensor: t), t.storage, t.shape) }
        else { self = .constant(t.storage, t.shape) }
    }

    var tensor: Tensor {
        switch self {
        case .result(let t): return t
        case .leaf(let weak, let storage, let shape): return weak.tensor ?? Tensor(shape: shape, storage: storage)
        case .constant(let storage, let shape): return Tensor(shape: shape, storage: storage)
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
    var edges: SmallList<Edge>
    /// Shapes of the inputs: the gradient of each is summed back to its shape (broadcasting).
    let inputShapes: SmallList<[Int]>
    var savedTensors: SmallList<SavedTensor>
    /// The output's values, when the rule uses them (tanh, exp, ...): kept as storage, not as
    /// the output tensor, which would make a tensor -> node -> tensor cycle.
    var savedOutput: Storage?
    /// nil once the graph has been released by a backward pass without retain_graph.
    var rule: BackwardRule?
    /// Hooks registered on the output tensor, run on its gradient before the rule.
    var hooks: [GradHook] = []
    /// The node's position in the backward pass that is running (see Backward.Pass).
    var passSlot = -1

    @inline(__always)
    init(name: StaticString, output: Tensor, inputs: [Tensor], saved: [Tensor], savesOutput: Bool, rule: @escaping BackwardRule) {
        self.name = name
        self.shape = output.shape
        self.dtype = output.dtype
        var edges = SmallList<Edge>()
        var shapes = SmallList<[Int]>()
        for t in inputs {
            if let fn = t.gradFn { edges.append(.node(fn)) }
            else { edges.append(t.requiresGrad ? .leaf(WeakTensor(tensor: t)) : .none) }
            shapes.append(t.shape)
        }
        self.edges = edges
        self.inputShapes = shapes
        var kept = SmallList<SavedTensor>()
        for t in saved { kept.append(SavedTensor(t)) }
        self.savedTensors = kept
        self.savedOutput = savesOutput ? output.storage : nil
        self.rule = rule
    }

    var isReleased: Bool { rule == nil }

    /// The k-th tensor saved at forward time.
    @inline(__always)
    func saved(_ k: Int) -> Tensor { savedTensors[k].tensor }

    /// The output's values as a constant (for rules recorded with savesOutput).
    func output() -> Tensor { Tensor(shape: shape, storage: savedOutput!) }

    /// Whether input `k` wants a gradient (rules skip the work for the others).
    @inline(__always)
    func needsGrad(_ k: Int) -> Bool {
        if case .none = edges[k] { return false }
        return true
    }

    /// Drops the saved tensors and the rule once backward no longer needs them.
    func release() {
        rule = nil
        savedTensors = SmallList()
        savedOutput = nil
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

    private static func detachChildren(edges: inout SmallList<Edge>, saved: inout SmallList<SavedTensor>, into work: inout [Node]) {
        for k in 0..<edges.count {
            if case .node(let n) = edges[k] { work.append(n) }
        }
        edges = SmallList()
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

    /// Records this tensor as the output of operation `name` on `inputs`; `savesOutput` keeps
    /// this tensor's values for the rule (`node.output()`).
    @inline(__always)
    func record(_ name: StaticString, inputs: [Tensor], saved: [Tensor] = [], savesOutput: Bool = false, rule: @escaping BackwardRule) {
        gradFn = Node(name: name, output: self, inputs: inputs, saved: saved, savesOutput: savesOutput, rule: rule)
        requiresGrad = true
    }
}

/// A list that keeps its first two elements inline: most nodes have one or two inputs and save
/// one or two tensors, and a separate array for each would be an allocation per node.
struct SmallList<Element>: RandomAccessCollection, MutableCollection {
    private var first: Element?
    private var second: Element?
    private var rest: [Element] = []
    private(set) var count = 0

    init() {}

    var startIndex: Int { @inline(__always) get { 0 } }
    var endIndex: Int { @inline(__always) get { count } }

    subscript(i: Int) -> Element {
        @inline(__always) get {
            switch i {
            case 0: return first!
            case 1: return second!
            default: return rest[i - 2]
            }
        }
        @inline(__always) set {
            switch i {
            case 0: first = newValue
            case 1: second = newValue
            default: rest[i - 2] = newValue
            }
        }
    }

    @inline(__always)
    mutating func append(_ e: Element) {
        switch count {
        case 0: first = e
        case 1: second = e
        default: rest.append(e)
        }
        count += 1
    }

    mutating func popLast() -> Element? {
        guard count > 0 else { return nil }
        count -= 1
        switch count {
        case 0: defer { first = nil }; return first
        case 1: defer { second = nil }; return second
        default: return rest.popLast()
        }
    }
}
