/// A training checkpoint: named parameters and an optimizer's whole state in one safetensors
/// file, so that a run stopped and resumed from it ends with the same weights, bit for bit, as
/// one that never stopped. Any safetensors reader can read it:
///   - each parameter under its own name, in its own dtype;
///   - per parameter with optimizer state, "optimizer.<name>.<slot>" (Optimizer.stateSlotNames:
///     SGD's momentum_buffer; Adam's exp_avg, exp_avg_sq (float64) and step (int64, 0-d));
///   - in the metadata, "autograd.optimizer" (its kind), "autograd.optimizer.lr",
///     "autograd.optimizer.steps" and "autograd.optimizer.<hyper-parameter>", each number in
///     Swift's shortest round-trip form, so that reading it back gives the same double.
public enum Checkpoint {
    /// Metadata keys of this prefix are the checkpoint's own; a caller's keys must not use it.
    public static let reservedPrefix = "autograd."
    static let kindKey = "autograd.optimizer"
    static let formatKey = "autograd.checkpoint"
    static let formatVersion = "1"

    /// Writes `parameters` (and `optimizer`'s state, if given) with the caller's `metadata` to
    /// `path` (Safetensors.write: never a partial file). Every parameter the optimizer updates
    /// must be among `parameters`.
    public static func save(to path: String, parameters: [(name: String, tensor: Tensor)], optimizer: Optimizer?,
                            metadata: [(key: String, value: String)] = []) throws {
        for (key, _) in metadata where key.hasPrefix(reservedPrefix) {
            throw AutogradError.argument("checkpoint: the metadata key '\(key)' starts with '\(reservedPrefix)', which the checkpoint's own entries use")
        }
        var tensors = parameters
        var meta = metadata
        meta.append((formatKey, formatVersion))
        if let optimizer {
            let names = try parameterNames(of: optimizer, in: parameters)
            meta.append((kindKey, optimizer.kindName))
            // One snapshot: a step on another thread lands before or after all of it, never
            // between the step count and the state (the lock is recursive; the state is copied).
            try GraphLock.withLock {
                meta.append((kindKey + ".lr", optimizer.learningRate.description))
                meta.append((kindKey + ".steps", optimizer.steps.description))
                for (name, value) in optimizer.hyperparameters { meta.append((kindKey + "." + name, value.description)) }
                for (k, name) in names.enumerated() {
                    for (slot, t) in try optimizer.stateTensors(ofParameter: k) {
                        tensors.append((stateName(name, slot), t))
                    }
                }
            }
        }
        try Safetensors.write(tensors, metadata: meta, to: path)
    }

    /// Restores a checkpoint written by `save`: each parameter's values are written into it in
    /// place (bumping its version counter, as an optimizer step does), and the optimizer's
    /// learning rate, step count and state are replaced. Everything is read and checked before
    /// anything changes.
    public static func load(from path: String, parameters: [(name: String, tensor: Tensor)], optimizer: Optimizer?) throws {
        let file = try SafetensorsFile(path: path)
        try load(file, parameters: parameters, optimizer: optimizer)
    }

    /// As `load(from:parameters:optimizer:)`, from a file already open.
    public static func load(_ file: SafetensorsFile, parameters: [(name: String, tensor: Tensor)], optimizer: Optimizer?) throws {
        // 1. Read and check every parameter's saved values.
        var seen = Set<ExactName>()
        var values: [Tensor] = []
        for (name, p) in parameters {
            guard seen.insert(ExactName(name)).inserted else { throw AutogradError.argument("checkpoint: the name '\(name)' is given twice") }
            guard let entry = file.entry(named: name) else {
                throw AutogradError.argument("checkpoint: no tensor named '\(name)' in the file")
            }
            guard p.isLeaf else {
                throw AutogradError.state("checkpoint: parameter '\(name)' is the result of an operation; only leaves are restored in place")
            }
            try p.storage.refuseReadOnly("checkpoint: parameter '\(name)'")
            guard entry.dtype == p.dtype else {
                throw AutogradError.dtype("checkpoint: '\(name)' is saved as \(entry.formatDType), but the parameter is \(p.dtype)")
            }
            guard entry.shape == p.shape else {
                throw AutogradError.shape("checkpoint: '\(name)' is saved with shape \(entry.shape), but the parameter has shape \(p.shape)")
            }
            values.append(try file.tensor(named: name))
        }
        // 2. Read and check the optimizer's state.
        var restore: (() throws -> Void)? = nil
        if let optimizer {
            restore = try optimizerRestore(file, optimizer, parameters)
        }
        // 3. Write. The state restore re-checks what it is given and copies before it changes
        // anything, so it goes first; the parameter writes cannot fail.
        try restore?()
        GraphLock.withLock {
            for ((_, p), v) in zip(parameters, values) where p.count > 0 {
                if let dst = p.storage.raw, let src = v.storage.raw {
                    dst.copyMemory(from: UnsafeRawPointer(src), byteCount: p.count * p.dtype.size)
                }
                p.storage.bumpVersion()
            }
        }
    }

    /// Checks the optimizer part of `file` against `optimizer` and returns the restore to run.
    private static func optimizerRestore(_ file: SafetensorsFile, _ optimizer: Optimizer,
                                         _ parameters: [(name: String, tensor: Tensor)]) throws -> () throws -> Void {
        guard let kind = file.metadataValue(forKey: kindKey) else {
            throw AutogradError.argument("checkpoint: the file has no optimizer state (no '\(kindKey)' metadata), but an optimizer was given")
        }
        guard kind == optimizer.kindName else {
            throw AutogradError.argument("checkpoint: the file holds the state of a '\(kind)' optimizer, but the optimizer given is '\(optimizer.kindName)'")
        }
        func number(_ key: String) throws -> Double {
            guard let text = file.metadataValue(forKey: key), let value = Double(text) else {
                throw AutogradError.format("checkpoint: the metadata '\(key)' is missing or not a number")
            }
            return value
        }
        for (name, value) in optimizer.hyperparameters {
            let saved = try number(kindKey + "." + name)
            guard saved.bitPattern == value.bitPattern else {
                throw AutogradError.argument("checkpoint: the saved \(name) (\(saved)) differs from the optimizer's (\(value))")
            }
        }
        let lr = try number(kindKey + ".lr")
        guard let stepsText = file.metadataValue(forKey: kindKey + ".steps"), let steps = Int(stepsText), steps >= 0 else {
            throw AutogradError.format("checkpoint: the metadata '\(kindKey).steps' is missing or not a count")
        }
        let names = try parameterNames(of: optimizer, in: parameters)
        var state: [[String: Tensor]?] = []
        for name in names {
            var slots: [String: Tensor] = [:]
            for slot in optimizer.stateSlotNames where file.entry(named: stateName(name, slot)) != nil {
                slots[slot] = try file.tensor(named: stateName(name, slot))
            }
            if slots.isEmpty {
                state.append(nil)
            } else if slots.count == optimizer.stateSlotNames.count {
                state.append(slots)
            } else {
                throw AutogradError.format("checkpoint: the optimizer state of '\(name)' is incomplete: it has \(slots.keys.sorted()), want \(optimizer.stateSlotNames)")
            }
        }
        // restoreState's argument errors are a file that does not fit: say so as a format error.
        return {
            do {
                try optimizer.restoreState(learningRate: lr, steps: steps, tensors: state)
            } catch AutogradError.argument(let message) {
                throw AutogradError.format("checkpoint: \(message)")
            }
        }
    }

    /// The checkpoint name of each of the optimizer's parameters: the name it has in `parameters`
    /// (the same tensor, or a tensor over the same values and shape).
    static func parameterNames(of optimizer: Optimizer, in parameters: [(name: String, tensor: Tensor)]) throws -> [String] {
        try optimizer.parameters.enumerated().map { k, p in
            guard let named = parameters.first(where: { $0.tensor === p })
                ?? parameters.first(where: { $0.tensor.storage === p.storage && $0.tensor.shape == p.shape }) else {
                throw AutogradError.argument("checkpoint: the optimizer's parameter \(k) (shape \(p.shape)) is not among the named parameters")
            }
            return named.name
        }
    }

    static func stateName(_ parameter: String, _ slot: String) -> String { "optimizer.\(parameter).\(slot)" }
}
