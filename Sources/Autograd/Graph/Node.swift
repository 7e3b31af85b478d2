/// The derivative rule of a recorded operation: given the gradient flowing into the output and
/// the node (its saved tensors, which inputs need a gradient), the gradient for each input
/// (nil where none is needed), in the output's broadcast shape.
/// Rules are written with differentiable tensor ops, so running them with grad mode on
/// (create_graph) records the backward pass itself. Rules must not capture tensors: tensors go
/// in `saved`, so the graph can be released and torn down without recursion.
typealias BackwardRule = (_ grad: Tensor, _ node: Node) throws -> InputGradients

/// What a rule returns: one gradient (or nil) per input. Written as an array literal; the
/// first two live inline, so the common rule allocates no array.
struct InputGradients: ExpressibleByArrayLiteral {
    private var first: Tensor?
    private var second: Tensor?
    private var rest: [Tensor?] = []
    private(set) var count = 0

    init() {}

    @inline(__always)
    init(arrayLiteral elements: Tensor?...) {
        self.init(elements)
    }

    @inline(__always)
    init(_ elements: [Tensor?]) {
        count = elements.count
        if count > 0 { first = elements[0] }
        if count > 1 { second = elements[1] }
        if count > 2 { rest = Array(elements[2...]) }
    }

    @inline(__always)
    subscript(k: Int) -> Tensor? {
        switch k {
        case 0: return first
        case 1: return second
        default: return rest[k - 2]
        }
    }
}

/// Where the gradient for one input of a node goes.
enum Edge {
    /// The input requires no grad: its gradient is not computed.
    case none
    /// A leaf that requires grad: its gradient accumulates into its `.grad`. Held weakly: a
    /// leaf's `.grad` computed with create_graph refers back into the graph, and a strong
    /// reference here would make a cycle. A leaf nobody holds can receive no gradient anyway.
    case leaf(LeafAnchor)
    /// The result of another recorded operation: its gradient flows on into that node.
    case node(Node)
}

/// Stands for a leaf in the graphs that use it: holds the leaf weakly, so one weak reference
/// per leaf serves every edge and saved copy (each an ordinary strong reference to this).
/// It also keeps the leaf's values (a leaf's storage is fixed for its life), so a graph that
/// saved the leaf can still use them after the leaf itself is gone.
final class LeafAnchor {
    weak var tensor: Tensor?
    let storage: Storage
    let shape: [Int]
    /// The leaf's position in the backward pass that is running (see Backward.Pass).
    var passSlot: Int32 = -1
    init(_ tensor: Tensor) {
        self.tensor = tensor
        storage = tensor.storage
        shape = tensor.shape
    }
}

/// A tensor saved for backward. Results of operations are held strongly; leaves weakly with
/// their values kept (see Edge.leaf): unpacked, a live leaf is itself (so create_graph sees it),
/// a freed one a constant with the same values.
enum SavedTensor: SmallListElement {
    /// A result, or a constant (a leaf that does not require grad): held as it is.
    case result(Tensor)
    /// A leaf that requires grad, through its anchor: the leaf while it lives, its values after.
    case leaf(LeafAnchor)
    /// The node's own output values (see Node.output()): storage only, as the output tensor
    /// itself would make a tensor -> node -> tensor cycle.
    case output(Storage)
    case empty

    static var placeholder: SavedTensor { .empty }

    init(_ t: Tensor) {
        if t.gradFn == nil && t.requiresGrad { self = .leaf(t.anchor) }
        else { self = .result(t) }
    }

    var tensor: Tensor {
        switch self {
        case .result(let t): return t
        case .leaf(let anchor): return anchor.tensor ?? Tensor(shape: anchor.shape, storage: anchor.storage)
        case .output, .empty: fatalError("unreachable: a saved-tensor slot without a tensor was read")
        }
    }
}


/// An operation's name: a pointer to the static, NUL-terminated text of a string literal
/// (one word, where StaticString takes three).
struct OpName: CustomStringConvertible {
    let utf8: UnsafePointer<UInt8>
    init(_ s: StaticString) { utf8 = s.utf8Start }
    var description: String { String(cString: utf8) }
}

/// One input of a recorded operation: where its gradient goes, and its shape (the gradient is
/// summed back to it where the input was broadcast).
struct NodeInput: SmallListElement {
    var edge: Edge
    let shape: [Int]
    static var placeholder: NodeInput { NodeInput(edge: .none, shape: []) }
}

/// One recorded operation of the graph (PyTorch's grad_fn). Kept small: a long graph is
/// mostly nodes.
final class Node {
    let name: OpName
    /// Shape and dtype of the output.
    let shape: [Int]
    let dtype: DType
    /// Whether hooks were registered on the output (they live in NodeHooks).
    var hasHooks = false
    /// The node's position in the backward pass that is running (see Backward.Pass).
    var passSlot: Int32 = -1
    /// The inputs, in the order the rule returns gradients.
    var inputs: SmallList<NodeInput>
    /// Tensors saved at forward time, then the output's values when the rule uses them.
    var savedTensors: SmallList<SavedTensor>
    /// nil once the graph has been released by a backward pass without retain_graph.
    var rule: BackwardRule?

    @inline(__always)
    init(name: StaticString, output: Tensor, inputs: [Tensor], saved: [Tensor], savesOutput: Bool, rule: @escaping BackwardRule) {
        self.name = OpName(name)
        self.shape = output.shape
        self.dtype = output.dtype
        var list = SmallList<NodeInput>()
        for t in inputs {
            let edge: Edge
            if let fn = t.gradFn { edge = .node(fn) } else { edge = t.requiresGrad ? .leaf(t.anchor) : .none }
            list.append(NodeInput(edge: edge, shape: t.shape))
        }
        self.inputs = list
        var kept = SmallList<SavedTensor>()
        for t in saved { kept.append(SavedTensor(t)) }
        if savesOutput { kept.append(.output(output.storage)) }
        self.savedTensors = kept
        self.rule = rule
    }

    /// The same for one or two inputs, without building arrays (the per-op fast path).
    @inline(__always)
    init(name: StaticString, output: Tensor, _ a: Tensor, _ b: Tensor?, savesInputs: Bool, savesOutput: Bool, rule: @escaping BackwardRule) {
        self.name = OpName(name)
        self.shape = output.shape
        self.dtype = output.dtype
        var list = SmallList<NodeInput>()
        list.append(NodeInput(edge: Node.edge(to: a), shape: a.shape))
        if let b { list.append(NodeInput(edge: Node.edge(to: b), shape: b.shape)) }
        self.inputs = list
        var kept = SmallList<SavedTensor>()
        if savesInputs {
            kept.append(SavedTensor(a))
            if let b { kept.append(SavedTensor(b)) }
        }
        if savesOutput { kept.append(.output(output.storage)) }
        self.savedTensors = kept
        self.rule = rule
    }

    @inline(__always)
    static func edge(to t: Tensor) -> Edge {
        if let fn = t.gradFn { return .node(fn) }
        return t.requiresGrad ? .leaf(t.anchor) : .none
    }

    var isReleased: Bool { rule == nil }

    @inline(__always) var inputCount: Int { inputs.count }
    @inline(__always) func edge(_ k: Int) -> Edge { inputs[k].edge }
    @inline(__always) func inputShape(_ k: Int) -> [Int] { inputs[k].shape }

    /// The k-th tensor saved at forward time.
    @inline(__always)
    func saved(_ k: Int) -> Tensor { savedTensors[k].tensor }

    /// The output's values as a constant (for rules recorded with savesOutput).
    func output() -> Tensor { Tensor(shape: shape, storage: outputValues) }

    /// The output's values (for rules recorded with savesOutput).
    var outputValues: Storage {
        guard savedTensors.count > 0, case .output(let storage) = savedTensors[savedTensors.count - 1] else {
            fatalError("unreachable: the rule of '\(name)' reads an output it did not save")
        }
        return storage
    }

    /// Whether input `k` wants a gradient (rules skip the work for the others).
    @inline(__always)
    func needsGrad(_ k: Int) -> Bool {
        if case .none = inputs[k].edge { return false }
        return true
    }

    /// Hooks registered on the output tensor, run on its gradient before the rule.
    var hooks: [GradHook] {
        get { hasHooks ? NodeHooks.table[ObjectIdentifier(self)] ?? [] : [] }
        set {
            NodeHooks.table[ObjectIdentifier(self)] = newValue.isEmpty ? nil : newValue
            hasHooks = !newValue.isEmpty
        }
    }

    /// Drops the saved tensors and the rule once backward no longer needs them.
    func release() {
        rule = nil
        savedTensors = SmallList()
    }

    /// Tears the graph above this node down with an explicit work list instead of recursive
    /// deinits, so that dropping a chain of a million nodes cannot overflow the stack.
    deinit {
        if hasHooks { GraphLock.withLock { NodeHooks.table[ObjectIdentifier(self)] = nil } }
        var work: [Node] = []
        Node.detachChildren(inputs: &inputs, saved: &savedTensors, into: &work)
        while var node = work.popLast() {
            if isKnownUniquelyReferenced(&node) {
                Node.detachChildren(inputs: &node.inputs, saved: &node.savedTensors, into: &work)
            }
        }
    }

    private static func detachChildren(inputs: inout SmallList<NodeInput>, saved: inout SmallList<SavedTensor>, into work: inout [Node]) {
        for k in 0..<inputs.count {
            if case .node(let n) = inputs[k].edge { work.append(n) }
        }
        inputs = SmallList()
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

    /// Records this tensor as the output of a unary operation on `a`.
    @inline(__always)
    func record(_ name: StaticString, _ a: Tensor, savesInput: Bool = false, savesOutput: Bool = false, rule: @escaping BackwardRule) {
        gradFn = Node(name: name, output: self, a, nil, savesInputs: savesInput, savesOutput: savesOutput, rule: rule)
        requiresGrad = true
    }

    /// Records this tensor as the output of a binary operation on `a` and `b`.
    @inline(__always)
    func record(_ name: StaticString, _ a: Tensor, _ b: Tensor, savesInputs: Bool = false, rule: @escaping BackwardRule) {
        gradFn = Node(name: name, output: self, a, b, savesInputs: savesInputs, savesOutput: false, rule: rule)
        requiresGrad = true
    }
}

/// A list that keeps its first two elements inline: most nodes have one or two inputs and save
/// one or two tensors, and a separate array for each would be an allocation per node.
/// Hooks on non-leaf tensors, by node: rare, so kept out of every node (guarded by GraphLock).
enum NodeHooks {
    nonisolated(unsafe) static var table: [ObjectIdentifier: [GradHook]] = [:]
}

/// What an empty slot of a SmallList holds.
protocol SmallListElement {
    static var placeholder: Self { get }
}

struct SmallList<Element: SmallListElement>: RandomAccessCollection, MutableCollection {
    private var first = Element.placeholder
    private var second = Element.placeholder
    private var rest: [Element] = []
    private(set) var count = 0

    init() {}

    var startIndex: Int { @inline(__always) get { 0 } }
    var endIndex: Int { @inline(__always) get { count } }

    subscript(i: Int) -> Element {
        @inline(__always) get {
            switch i {
            case 0: return first
            case 1: return second
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
        case 0: defer { first = .placeholder }; return first
        case 1: defer { second = .placeholder }; return second
        default: return rest.popLast()
        }
    }
}
