import Synchronization

/// The derivative rule of a recorded operation: given the gradient flowing into the output and
/// the node (its saved tensors, which inputs need a gradient), the gradient for each input
/// (nil where none is needed), in the output's broadcast shape.
/// Rules are written with differentiable tensor ops, so running them with grad mode on
/// (create_graph) records the backward pass itself. Rules must not capture tensors: tensors go
/// in `saved`, so the graph can be released and torn down without recursion.
typealias BackwardRule = (_ grad: Tensor, _ node: Node) throws -> InputGradients

/// What a rule returns: one gradient (or nil) per input. The first two live inline: rules of
/// one or two inputs use init(_:) or init(_:_:), which allocate nothing; the array-literal form
/// (rules of three or more inputs) goes through a variadic array.
struct InputGradients: ExpressibleByArrayLiteral {
    private var first: Tensor?
    private var second: Tensor?
    private var rest: [Tensor?] = []
    private(set) var count = 0

    init() {}

    /// One gradient (a one-input rule), without the array a literal would build.
    @inline(__always)
    init(_ only: Tensor?) {
        first = only
        count = 1
    }

    /// Two gradients (a two-input rule), without the array a literal would build.
    @inline(__always)
    init(_ a: Tensor?, _ b: Tensor?) {
        first = a
        second = b
        count = 2
    }

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
    /// A leaf that requires grad: its gradient accumulates into its `.grad`, through the
    /// leaf's anchor, never the leaf tensor itself: a leaf's `.grad` computed with create_graph
    /// refers back into the graph, and holding the leaf here would make a cycle.
    case leaf(LeafAnchor)
    /// The result of another recorded operation: its gradient flows on into that node.
    case node(Node)
}

/// An Edge's target without a reference count (see Node.inputRef).
enum InputRef {
    case none
    case leaf(Unmanaged<LeafAnchor>)
    case node(Unmanaged<Node>)

    @inline(__always)
    init(_ edge: Edge) {
        switch edge {
        case .none: self = .none
        case .leaf(let anchor): self = .leaf(Unmanaged.passUnretained(anchor))
        case .node(let node): self = .node(Unmanaged.passUnretained(node))
        }
    }
}

/// A leaf's autograd state, and how graphs refer to the leaf: its gradient, its hooks and its
/// values (a leaf's storage is fixed for its life). The leaf holds it; graphs hold it, never
/// the leaf, so a `.grad` with history (create_graph) makes no cycle through the leaf, and
/// freeing the leaf ends the anchor: gradient and hooks dropped, nothing sent to it after.
/// No weak reference is involved (one would make every retain of the leaf a slow one).
/// Mutable state is guarded by GraphLock.
final class LeafAnchor {
    let storage: Storage
    let shape: [Int]
    var grad: Tensor?
    var hooks: [GradHook] = []
    /// Gradient-ready hooks, run after each backward pass's accumulation into `grad`.
    var readyHooks: [GradReadyHook] = []
    /// The leaf's requires_grad, mirrored for stand-ins (see standIn()).
    var requiresGrad: Bool
    /// False once the leaf is freed.
    private(set) var isAlive = true
    /// The leaf's position in the backward pass that is running (see Backward.Pass).
    var passSlot: Int32 = -1

    init(shape: [Int], storage: Storage, requiresGrad: Bool) {
        self.shape = shape
        self.storage = storage
        self.requiresGrad = requiresGrad
    }

    /// Called as the leaf is freed (under the graph lock): returns what it held, for the
    /// caller to release after the lock.
    func end() -> (Tensor?, [GradHook], [GradReadyHook]) {
        isAlive = false
        requiresGrad = false
        defer { grad = nil; hooks = []; readyHooks = [] }
        return (grad, hooks, readyHooks)
    }

    /// The saved leaf as rules see it: while the leaf lives, a tensor sharing its anchor, so
    /// that a recorded backward (create_graph) reaches the leaf's gradient; after, a constant
    /// with its values.
    func standIn() -> Tensor {
        isAlive ? Tensor(standingInFor: self) : Tensor(shape: shape, storage: storage)
    }
}

/// A tensor saved for backward. Inputs are kept as their values only, leaves through their
/// anchors (see Edge.leaf), other tensors as they are. Unpacked, an input is rebuilt from its
/// values and the node's edge to it (so create_graph reaches its producer); a live leaf is a
/// stand-in sharing its anchor (so create_graph reaches its gradient), a freed one a constant
/// with the same values.
enum SavedTensor {
    /// A tensor other than an input (an intermediate result an op keeps): held as it is.
    case result(Tensor)
    /// A leaf that requires grad, through its anchor: the leaf while it lives, its values after.
    case leaf(LeafAnchor)
    /// The values of the input with this slot's number (see Node.saved(_:)). Holding the input
    /// tensor itself would keep a tensor object per op alive for the life of the graph.
    case input(Storage)
    /// The node's own output values (see Node.output()): storage only, as the output tensor
    /// itself would make a tensor -> node -> tensor cycle.
    case output(Storage)
    case empty


    /// A leaf with an anchor (it requires grad, or once did, and may hold a `.grad` whose
    /// create_graph history saves it) is held through the anchor: holding the leaf,
    /// leaf -> .grad -> node -> leaf would be a cycle.
    init(_ t: Tensor) {
        if t.tangentBox != nil { self = .result(t) }
        else if t.gradFn == nil, let anchor = t.existingAnchor { self = .leaf(anchor) }
        else { self = .result(t) }
    }

    /// The values this saved tensor reads, nil for an empty slot (or an empty tensor).
    @inline(__always)
    var values: UnsafeMutableRawPointer? {
        switch self {
        case .result(let t): return t.storage.raw
        case .leaf(let anchor): return anchor.storage.raw
        case .input(let values), .output(let values): return values.raw
        case .empty: return nil
        }
    }

    @inline(__always)
    var isOutput: Bool {
        if case .output = self { return true }
        return false
    }

    /// The version of the values this saved tensor reads (0 for an empty slot).
    @inline(__always)
    var version: UInt32 {
        switch self {
        case .result(let t): return t.storage.version
        case .leaf(let anchor): return anchor.storage.version
        case .input(let values), .output(let values): return values.version
        case .empty: return 0
        }
    }

    /// The values this saved tensor reads (nil for an empty slot).
    @inline(__always)
    var storage: Storage? {
        switch self {
        case .result(let t): return t.storage
        case .leaf(let anchor): return anchor.storage
        case .input(let values), .output(let values): return values
        case .empty: return nil
        }
    }

    /// An input of the node saving it, kept as its values unless it is a leaf with an anchor or
    /// carries a tangent (forward mode: the rule's ops then need the tensor itself, so that
    /// gradients computed in a jvp carry their own tangents).
    init(input t: Tensor) {
        if t.tangentBox != nil { self = .result(t) }
        else if t.gradFn == nil, let anchor = t.existingAnchor { self = .leaf(anchor) }
        else { self = .input(t.storage) }
    }
}


/// An operation's name: a pointer to the static, NUL-terminated text of a string literal
/// (one word, where StaticString takes three).
struct OpName: CustomStringConvertible {
    let utf8: UnsafePointer<UInt8>
    init(_ s: StaticString) { utf8 = s.utf8Start }
    var description: String { String(cString: utf8) }

    /// The name of an op defined at run time (a CustomOp), kept for the life of the process
    /// (each distinct name once), so nodes may outlive the op that named them.
    init(interning s: String) { utf8 = OpName.interned.withLock { $0.pointer(for: s) } }

    private static let interned = Mutex(InternedNames())

    private struct InternedNames: ~Copyable {
        var table: [String: UnsafePointer<UInt8>] = [:]

        /// Never freed: a process defines few distinct op names, and nodes keep pointing at them.
        mutating func pointer(for s: String) -> UnsafePointer<UInt8> {
            if let p = table[s] { return p }
            let bytes = Array(s.utf8) + [0]
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: bytes.count)
            p.initialize(from: bytes, count: bytes.count)
            table[s] = UnsafePointer(p)
            return UnsafePointer(p)
        }
    }
}

/// One input of a recorded operation: where its gradient goes, and its shape (the gradient is
/// summed back to it where the input was broadcast).
struct NodeInput {
    var edge: Edge
    let shape: [Int]
    static var placeholder: NodeInput { NodeInput(edge: .none, shape: []) }
}

/// One recorded operation of the graph (PyTorch's grad_fn). Kept to 120 bytes (a 128-byte
/// malloc chunk, on allocators' fast paths): a long graph is mostly nodes. The first two
/// inputs and saved tensors are fields; further ones (concat's inputs) go in `overflow`.
final class Node {
    let name: OpName
    /// Shape of the output.
    let shape: [Int]
    /// nil once the graph has been released by a backward pass without retain_graph.
    var rule: BackwardRule?
    private var input0 = NodeInput.placeholder
    private var input1 = NodeInput.placeholder
    /// Tensors saved at forward time, then the output's values when the rule uses them.
    private var saved0 = SavedTensor.empty
    private var saved1 = SavedTensor.empty
    private var overflow: NodeOverflow?
    /// The node's position in the backward pass that is running (see Backward.Pass).
    var passSlot: Int32 = -1
    /// The sum (wrapping) of the versions of the saved values when they were saved. Versions
    /// only grow, so the sum moves exactly when one of them was written in place since.
    private var savedVersions: UInt32 = 0
    /// Inputs held in input0 and input1 (0 to 2); further ones are in overflow (16 bits keep
    /// the node within its 120 bytes).
    private var storedInputCount: UInt16 = 0
    private var savedCount: UInt16 = 0
    let dtype: DType
    /// Whether hooks were registered on the output (they live in NodeHooks).
    var hasHooks = false
    /// Whether the node keeps its op's forward (it lives in Recompute.steps).
    var hasForward = false
    /// The elementwise op whose fused loop non-recorded passes may run instead of `rule` (see
    /// ElementwiseKind); `.none` for other ops and for elementwise ones that broadcast.
    let elementwise: ElementwiseKind

    @inline(__always)
    init(name: StaticString, output: Tensor, inputs: [Tensor], saved: [Tensor], savesOutput: Bool, rule: @escaping BackwardRule) {
        self.name = OpName(name)
        self.shape = output.shape
        self.dtype = output.dtype
        self.rule = rule
        self.elementwise = .none
        for t in inputs { appendInput(NodeInput(edge: Node.edge(to: t), shape: t.shape)) }
        for t in saved { appendSaved(SavedTensor(t)) }
        if savesOutput { appendSaved(.output(output.storage)) }
    }

    /// A node with given edges and saved tensors (user-defined ops, see CustomOp).
    init(name: OpName, shape: [Int], dtype: DType, inputs: [NodeInput], saved: [SavedTensor], rule: @escaping BackwardRule) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.rule = rule
        self.elementwise = .none
        for input in inputs { appendInput(input) }
        for s in saved { appendSaved(s) }
    }

    /// The same for one or two inputs, without building arrays (the per-op fast path).
    @inline(__always)
    init(name: StaticString, output: Tensor, _ a: Tensor, _ b: Tensor?, savesInputs: Bool, savesOutput: Bool,
         elementwise: ElementwiseKind, rule: @escaping BackwardRule) {
        self.name = OpName(name)
        self.shape = output.shape
        self.dtype = output.dtype
        self.rule = rule
        let fits = elementwise != .none && a.shape == output.shape && a.dtype == output.dtype
            && (b.map { $0.shape == output.shape && $0.dtype == output.dtype } ?? true)
        self.elementwise = fits ? elementwise : .none
        input0 = NodeInput(edge: Node.edge(to: a), shape: a.shape)
        storedInputCount = 1
        if let b {
            input1 = NodeInput(edge: Node.edge(to: b), shape: b.shape)
            storedInputCount = 2
        }
        if savesInputs {
            appendSaved(SavedTensor(input: a))
            if let b { appendSaved(SavedTensor(input: b)) }
        }
        if savesOutput { appendSaved(.output(output.storage)) }
    }

    @inline(__always)
    static func edge(to t: Tensor) -> Edge {
        if let fn = t.gradFn { return .node(fn) }
        return t.requiresGrad ? .leaf(t.anchor) : .none
    }

    private func appendInput(_ input: NodeInput) {
        switch storedInputCount {
        case 0: input0 = input
        case 1: input1 = input
        default:
            if overflow == nil { overflow = NodeOverflow() }
            overflow!.inputs.append(input)
            return
        }
        storedInputCount += 1
    }

    @inline(__always)
    private func appendSaved(_ saved: SavedTensor) {
        savedVersions &+= saved.storage?.version ?? 0
        switch savedCount {
        case 0: saved0 = saved
        case 1: saved1 = saved
        default:
            if overflow == nil { overflow = NodeOverflow() }
            overflow!.saved.append(saved)
        }
        savedCount += 1
    }

    var isReleased: Bool { rule == nil }

    @inline(__always) var inputCount: Int {
        let n = Int(storedInputCount)
        return n < 2 ? n : 2 + (overflow?.inputs.count ?? 0)
    }

    @inline(__always)
    private func input(_ k: Int) -> NodeInput {
        switch k {
        case 0: return input0
        case 1: return input1
        default: return overflow!.inputs[k - 2]
        }
    }

    @inline(__always) func edge(_ k: Int) -> Edge { input(k).edge }

    /// Input k's target, not retained: for the backward walk, which keeps the graph alive
    /// through its roots meanwhile (edges never change before a node is freed).
    @inline(__always)
    func inputRef(_ k: Int) -> InputRef {
        switch k {
        case 0: return InputRef(input0.edge)
        case 1: return InputRef(input1.edge)
        default: return InputRef(overflow!.inputs[k - 2].edge)
        }
    }
    @inline(__always) func inputShape(_ k: Int) -> [Int] { input(k).shape }

    @inline(__always)
    private func savedSlot(_ k: Int) -> SavedTensor {
        switch k {
        case 0: return saved0
        case 1: return saved1
        default: return overflow!.saved[k - 2]
        }
    }

    /// The k-th tensor saved at forward time.
    func saved(_ k: Int) -> Tensor {
        switch savedSlot(k) {
        case .result(let t): return t
        case .leaf(let anchor): return anchor.standIn()
        case .input(let values):
            // Saved inputs take the slots of their input numbers (the one- and two-input init).
            let t = Tensor(shape: inputShape(k), storage: values)
            if case .node(let producer) = edge(k) {
                t.gradFn = producer
                t.requiresGrad = true
            }
            return t
        case .output, .empty: fatalError("unreachable: the rule of '\(name)' read saved slot \(k), which holds no tensor")
        }
    }

    /// What an elementwise node's fused loop reads (see ElementwiseKind.apply): its saved inputs'
    /// values and its saved output's, with `g` standing in for any it did not save.
    @inline(__always)
    func fusedOperands(_ g: UnsafeMutableRawPointer) -> (x0: UnsafeMutableRawPointer, x1: UnsafeMutableRawPointer, y: UnsafeMutableRawPointer) {
        // An elementwise node saves at most two values (its inputs, or its input and output),
        // read in place: copying a slot out would retain its payload.
        switch savedCount {
        case 0: return (g, g, g)
        case 1:
            let v = saved0.values ?? g
            return saved0.isOutput ? (g, g, v) : (v, g, g)
        default:
            let v0 = saved0.values ?? g, v1 = saved1.values ?? g
            return saved1.isOutput ? (v0, g, v1) : (v0, v1, g)
        }
    }

    /// The storages fusedOperands reads (`g` standing in the same way), for a capture.
    func fusedOperandStorages(_ g: Storage) -> [Storage] {
        switch savedCount {
        case 0: return [g, g, g]
        case 1:
            let v = saved0.storage ?? g
            return saved0.isOutput ? [g, g, v] : [v, g, g]
        default:
            let v0 = saved0.storage ?? g, v1 = saved1.storage ?? g
            return saved1.isOutput ? [v0, g, v1] : [v0, v1, g]
        }
    }

    /// The output's values as a constant (for rules recorded with savesOutput).
    func output() -> Tensor { Tensor(shape: shape, storage: outputValues) }

    /// The output's values (for rules recorded with savesOutput).
    var outputValues: Storage {
        guard savedCount > 0, case .output(let storage) = savedSlot(Int(savedCount) - 1) else {
            fatalError("unreachable: the rule of '\(name)' reads an output it did not save")
        }
        return storage
    }

    /// Fails when a value this node saved was written in place after it was saved (an
    /// optimizer step, an in-place copy): its rule would silently mix old and new values.
    @inline(__always)
    func checkSavedVersions() throws {
        guard savedCount > 0 else { return }
        // The two inline slots are read in place (a copy of the enum would retain its payload).
        var sum = saved0.version &+ (savedCount > 1 ? saved1.version : 0)
        if savedCount > 2, let extra = overflow { for s in extra.saved { sum &+= s.version } }
        if sum != savedVersions { throw staleSavedValues() }
    }

    /// Takes the saved values' current versions as the ones saved (after Recompute wrote them).
    func restampSavedVersions() {
        var sum: UInt32 = 0
        for k in 0..<Int(savedCount) { sum &+= savedSlot(k).version }
        savedVersions = sum
    }

    /// The error for checkSavedVersions, naming the op and the saved values that were written.
    @inline(never)
    private func staleSavedValues() -> AutogradError {
        var written: [String] = []
        for k in 0..<Int(savedCount) {
            let slot = savedSlot(k)
            guard let version = slot.storage?.version, version > 0 else { continue }
            let what: String
            switch slot {
            case .output: what = "its output"
            case .leaf(let anchor): what = "a leaf of shape \(anchor.shape)"
            case .input: what = "input \(k) (shape \(inputShape(k)))"
            case .result(let t): what = "a saved result of shape \(t.shape)"
            case .empty: continue
            }
            written.append("\(what), now at version \(version)")
        }
        let which = written.isEmpty ? "" : " (written: " + written.joined(separator: "; ") + ")"
        return AutogradError.state("a value saved by '\(name)' for backward was modified in place after it was saved (by an optimizer step or an in-place write)\(which); the gradient would mix old and new values. Run the forward again after the update, or make the in-place write after the backward")
    }

    /// Whether input `k` wants a gradient (rules skip the work for the others).
    @inline(__always)
    func needsGrad(_ k: Int) -> Bool {
        if case .none = edge(k) { return false }
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
        saved0 = .empty
        saved1 = .empty
        overflow?.saved = []
        savedCount = 0
    }

    /// Tears the graph above this node down with an explicit work list instead of recursive
    /// deinits, so that dropping a chain of a million nodes cannot overflow the stack.
    deinit {
        if hasForward {
            let dropped = GraphLock.withLock { Recompute.steps.removeValue(forKey: ObjectIdentifier(self)) }
            _ = dropped
        }
        if hasHooks {
            // Released after the lock: a hook's destructor is user code.
            let dropped = GraphLock.withLock { NodeHooks.table.removeValue(forKey: ObjectIdentifier(self)) }
            _ = dropped
        }
        // A node emptied by the loop below (every node of a chain but the first) holds nothing.
        if storedInputCount == 0 && savedCount == 0 && overflow == nil { return }
        var work: [Node] = []
        detachChildren(into: &work)
        while var node = work.popLast() {
            if isKnownUniquelyReferenced(&node) { node.detachChildren(into: &work) }
        }
    }

    /// Moves the nodes this one refers to (inputs, and the producers of saved results it alone
    /// holds) onto `work`, and forgets its inputs and saved tensors.
    private func detachChildren(into work: inout [Node]) {
        let n = storedInputCount
        storedInputCount = 0
        if n > 0 { Node.moveChild(from: &input0, into: &work) }
        if n > 1 { Node.moveChild(from: &input1, into: &work) }
        if let extra = overflow {
            overflow = nil
            for input in extra.inputs { if case .node(let child) = input.edge { work.append(child) } }
            for var s in extra.saved { Node.detachProducer(&s, into: &work) }
        }
        if savedCount > 0 {
            savedCount = 0
            var first = SavedTensor.empty, second = SavedTensor.empty
            swap(&first, &saved0)
            swap(&second, &saved1)
            Node.detachProducer(&first, into: &work)
            Node.detachProducer(&second, into: &work)
        }
    }

    /// Moves an input's node (if it has one) onto `work`, leaving a placeholder.
    @inline(__always)
    private static func moveChild(from input: inout NodeInput, into work: inout [Node]) {
        var edge = Edge.none
        swap(&edge, &input.edge)
        switch consume edge {
        case .node(let child): work.append(consume child)
        case .leaf, .none: break
        }
    }

    /// A saved result held by nothing else hands its producer node to `work`.
    @inline(__always)
    private static func detachProducer(_ s: inout SavedTensor, into work: inout [Node]) {
        guard case .result(var t) = s else { return }
        s = .empty
        if isKnownUniquelyReferenced(&t), let fn = t.gradFn {
            t.gradFn = nil
            work.append(fn)
        }
    }
}

/// Inputs and saved tensors of a node beyond its first two.
final class NodeOverflow {
    var inputs: [NodeInput] = []
    var saved: [SavedTensor] = []
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

    /// For an op whose output has x's shape and dtype and whose backward has a kernel of its
    /// own (layer norm's standardisation, attention's softmax): whether the gradient g must
    /// come from the op's rule over differentiable ops instead, because it will be recorded
    /// (create_graph), carries a forward-mode tangent, or is not of the kernel's form.
    static func backwardNeedsRule(_ g: Tensor, _ x: Tensor) -> Bool {
        shouldRecord(g, x) || g.tangentBox != nil || x.tangentBox != nil || g.shape != x.shape || g.dtype != x.dtype
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
    func record(_ name: StaticString, _ a: Tensor, savesInput: Bool = false, savesOutput: Bool = false,
                elementwise: ElementwiseKind = .none, rule: @escaping BackwardRule) {
        gradFn = Node(name: name, output: self, a, nil, savesInputs: savesInput, savesOutput: savesOutput, elementwise: elementwise, rule: rule)
        requiresGrad = true
    }

    /// Records this tensor as the output of a binary operation on `a` and `b`.
    @inline(__always)
    func record(_ name: StaticString, _ a: Tensor, _ b: Tensor, savesInputs: Bool = false,
                elementwise: ElementwiseKind = .none, rule: @escaping BackwardRule) {
        gradFn = Node(name: name, output: self, a, b, savesInputs: savesInputs, savesOutput: false, elementwise: elementwise, rule: rule)
        requiresGrad = true
    }
}

/// Hooks on non-leaf tensors, by node: rare, so kept out of every node (guarded by GraphLock).
enum NodeHooks {
    nonisolated(unsafe) static var table: [ObjectIdentifier: [GradHook]] = [:]
}
