/// What a custom op's callbacks share (PyTorch's `ctx`): the tensors the forward saves for the
/// backward and the JVP, and which inputs need a gradient. A context is open only while the
/// callback it was handed to runs; using it afterwards is an error, not undefined behaviour.
public final class CustomOpContext {
    /// Which callback the context was made for.
    public enum Phase: Sendable { case forward, backward, jvp }

    public let phase: Phase
    private let needs: [Bool]
    /// This application's state (see `state`), shared by the contexts of one application.
    let application: CustomOpApplication
    /// The forward's saved tensors (being saved in the forward; read in the backward and JVP).
    private(set) var savedTensors: [Tensor]
    private var isOpen = true

    init(phase: Phase, needs: [Bool], saved: [Tensor], application: CustomOpApplication) {
        self.phase = phase
        self.needs = needs
        self.savedTensors = saved
        self.application = application
    }

    /// State of the user's own for this application of the op (PyTorch's `ctx.k = 3`): set by
    /// the forward, read by the backward and the JVP of the same application. It lives as long as
    /// the application's graph (or, when nothing is recorded, until the op returns).
    public func state() throws -> AnyObject? {
        try checkOpen("state")
        return application.state
    }

    /// Sets the application's state (forward only); a state set before is released.
    public func setState(_ state: AnyObject?) throws {
        try checkOpen("set_state")
        guard phase == .forward else {
            throw AutogradError.state("the state can be set in the forward callback only (this context belongs to the \(phase) callback)")
        }
        application.state = state
    }

    /// Saves tensors for the backward and the JVP (forward only). Inputs and outputs may be
    /// saved: a saved output is, in the backward, the output itself (with its history, so
    /// second derivatives through it are right).
    public func save(_ tensors: [Tensor]) throws {
        try checkOpen("save")
        guard phase == .forward else {
            throw AutogradError.state("tensors can be saved in the forward callback only (this context belongs to the \(phase) callback)")
        }
        savedTensors += tensors
    }

    /// The tensors the forward saved, in the order it saved them (backward and JVP).
    public func saved() throws -> [Tensor] {
        try checkOpen("saved")
        return savedTensors
    }

    /// Whether input `k` needs a gradient: the backward may skip the others (their gradient is
    /// ignored).
    public func needsInputGradient(_ k: Int) throws -> Bool {
        try checkOpen("needs_input_grad")
        guard needs.indices.contains(k) else {
            throw AutogradError.argument("input index \(k) is out of range: the op has \(needs.count) input\(needs.count == 1 ? "" : "s")")
        }
        return needs[k]
    }

    /// Ends the context (its callback returned).
    func close() { isOpen = false }

    private func checkOpen(_ what: String) throws {
        guard isOpen else {
            throw AutogradError.state("\(what): the context is used after its callback returned (a context is valid only during the callback it was passed to)")
        }
    }
}

/// One application of a custom op: what its contexts share across its callbacks (the forward's
/// state), held by its node(s) and, in a capture, by its replay steps, which renew it per call.
final class CustomOpApplication {
    var state: AnyObject?
}
