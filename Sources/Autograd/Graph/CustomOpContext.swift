/// What a custom op's callbacks share (PyTorch's `ctx`): the tensors the forward saves for the
/// backward and the JVP, and which inputs need a gradient. A context is open only while the
/// callback it was handed to runs; using it afterwards is an error, not undefined behaviour.
public final class CustomOpContext {
    /// Which callback the context was made for.
    public enum Phase: Sendable { case forward, backward, jvp }

    public let phase: Phase
    private let needs: [Bool]
    /// The forward's saved tensors (being saved in the forward; read in the backward and JVP).
    private(set) var savedTensors: [Tensor]
    private var isOpen = true

    init(phase: Phase, needs: [Bool], saved: [Tensor]) {
        self.phase = phase
        self.needs = needs
        self.savedTensors = saved
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
            throw AutogradError.argument("input index \(k) is outside 0..<\(needs.count)")
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
