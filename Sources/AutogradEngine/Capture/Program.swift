#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A capture compiled for replay: the live steps of a trace in their recorded order, each value
/// given a fixed place once (inputs and outputs in their own buffers, the rest planned into one
/// arena by lifetime), and runs of elementwise steps fused into blocked loops whose
/// intermediates stay in a small scratch. Every buffer address is fixed at compile time (an
/// input's is rebound to the caller's tensor when it moves, see InputBinding), so a run allocates
/// nothing for values and touches no handle table: it runs the instructions and leaves the
/// outputs at `outputPointers`.
final class Program {
    /// What the compiler counted (for tests, the C API's ag_function_info and the docs).
    struct Stats: Equatable {
        /// Steps the capture recorded, and those an output or an in-place write needs.
        var recordedSteps = 0
        var liveSteps = 0
        /// Instructions a run executes (a fused group counts once).
        var instructions = 0
        /// Fused groups of two or more elementwise steps, and the steps inside them.
        var fusedGroups = 0
        var fusedSteps = 0
        /// Steps run by rerunning the op (one allocation each per run).
        var rerunSteps = 0
        /// The arena and the scratch of the fused groups.
        var arenaBytes = 0
        var scratchBytes = 0
    }

    private(set) var stats = Stats()
    /// The names of the steps rerun by their op (for tests and diagnostics).
    private(set) var rerunNames: [String] = []
    let inputShapes: [[Int]]
    let inputDTypes: [DType]
    let outputShapes: [[Int]]
    let outputDTypes: [DType]
    /// The inputs' buffers (the placeholders' storages), written by each run.
    private let inputStorages: [Storage]
    /// Where each output's values are after a run.
    private(set) var outputPointers: [UnsafeMutableRawPointer?] = []
    /// The instructions, held here; `unretained` lists them for run(), which calls them without
    /// retaining (this program holds each as long as it lives).
    private var instructions: [Instruction] = []
    private var unretained: [Unmanaged<Instruction>] = []
    /// Constants, parameters and placeholders the instructions read in place, held alive.
    private var retained: [Storage] = []
    private var arena: UnsafeMutableRawPointer?
    private var inputBindings: [InputBinding] = []
    /// Storages the function's in-place writes write (an input aliasing one is copied in).
    private var writtenStorages: Set<ObjectIdentifier> = []
    private var scratch: UnsafeMutableRawPointer?
    /// The pointer given for a value with no element (never read or written).
    // nonisolated(unsafe): the block is allocated once and never read or written.
    nonisolated(unsafe) private static let nowhere = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)


    /// A value of the trace: one version of one storage's contents.
    private struct Value {
        enum Place { case input(Int), fixed, computed }
        let storage: Storage
        let place: Place
        /// The step that wrote it (computed values and in-place writes), else nil.
        let definer: Int?
        var dtype: DType { storage.dtype }
        var count: Int { storage.count }
        var bytes: Int { storage.count * storage.dtype.size }
    }

    init(_ recorder: TraceRecorder, inputs: [Tensor], outputs: [Tensor]) throws {
        inputShapes = inputs.map(\.shape)
        inputDTypes = inputs.map(\.dtype)
        outputShapes = outputs.map(\.shape)
        outputDTypes = outputs.map(\.dtype)
        inputStorages = inputs.map(\.storage)
        let steps = recorder.steps
        stats.recordedSteps = steps.count

        // 1. Values: each storage's current version, in the order the steps ran.
        var values: [Value] = []
        var current: [ObjectIdentifier: Int] = [:]
        for (k, t) in inputs.enumerated() {
            current[ObjectIdentifier(t.storage)] = values.count
            values.append(Value(storage: t.storage, place: .input(k), definer: nil))
        }
        func resolve(_ storage: Storage, _ reader: OpName?) throws -> Int {
            let id = ObjectIdentifier(storage)
            if let v = current[id] { return v }
            if recorder.made[id] != nil && !recorder.constants.contains(id) {
                let who = reader.map { "'\($0)'" } ?? "an output"
                throw AutogradError.internal("capture: \(who) read a value made during the capture by an operation that records no replay step (please report it)")
            }
            // A constant made by the function, or a tensor from outside (a parameter): read in place.
            current[id] = values.count
            values.append(Value(storage: storage, place: .fixed, definer: nil))
            return values.count - 1
        }
        var stepInputs = [[Int]](repeating: [], count: steps.count)
        var stepOutput = [Int](repeating: -1, count: steps.count)
        for (s, step) in steps.enumerated() {
            stepInputs[s] = try step.inputs.map { try resolve($0.storage, step.name) }
            switch step.kernel {
            case .view where step.inputs.contains(where: { $0.storage === step.output.storage }):
                continue
            case .effect(let writes, _):
                for w in writes {
                    current[ObjectIdentifier(w)] = values.count
                    values.append(Value(storage: w, place: .fixed, definer: s))
                }
            default:
                current[ObjectIdentifier(step.output.storage)] = values.count
                stepOutput[s] = values.count
                values.append(Value(storage: step.output.storage, place: .computed, definer: s))
            }
        }
        var outputValues = try outputs.map { try resolve($0.storage, nil) }

        // 2. Live steps: those an output needs, and every in-place write (with what they read).
        var live = [Bool](repeating: false, count: steps.count)
        for v in outputValues { if let d = values[v].definer { live[d] = true } }
        for s in steps.indices.reversed() {
            if case .effect = steps[s].kernel { live[s] = true }
            guard live[s] else { continue }
            for v in stepInputs[s] { if let d = values[v].definer { live[d] = true } }
        }
        var schedule = steps.indices.filter { live[$0] && stepOutput[$0] >= 0 || live[$0] && Program.isEffect(steps[$0]) }

        // A copy of a computed value read by nothing after the copy is the value itself (the
        // backward copies gradients it hands out; a replay need not).
        var lastReader = [Int](repeating: -1, count: values.count)
        for s in schedule { for v in stepInputs[s] { lastReader[v] = s } }
        var alias = [Int](values.indices)
        var copies: Set<Int> = []
        for s in schedule {
            guard case .copy = steps[s].kernel else { continue }
            let source = stepInputs[s][0]
            guard case .computed = values[source].place, lastReader[source] == s, !outputValues.contains(source) else { continue }
            alias[stepOutput[s]] = alias[source]
            copies.insert(s)
        }
        if !copies.isEmpty {
            schedule.removeAll { copies.contains($0) }
            for s in schedule { stepInputs[s] = stepInputs[s].map { alias[$0] } }
            outputValues = outputValues.map { alias[$0] }
        }
        stats.liveSteps = schedule.count

        // 3. Instructions: maximal runs of elementwise steps over one count and dtype form a
        // group; every other step is one instruction.
        var plan: [[Int]] = []
        var groupOutputs: Set<Int> = []
        for s in schedule {
            if case .elementwise = steps[s].kernel, let last = plan.last, let head = last.first,
               case .elementwise = steps[head].kernel, Program.fits(s, head: head, members: groupOutputs, values, stepInputs, stepOutput) {
                plan[plan.count - 1].append(s)
            } else {
                plan.append([s])
                groupOutputs.removeAll(keepingCapacity: true)
            }
            if stepOutput[s] >= 0 { groupOutputs.insert(stepOutput[s]) }
        }

        // 4. Lifetimes, by instruction. A value used only inside its own group (and not an
        // output) lives in the group's scratch instead of the arena.
        var instructionOf = [Int](repeating: -1, count: steps.count)
        for (i, group) in plan.enumerated() { for s in group { instructionOf[s] = i } }
        var lastUse = [Int](repeating: -1, count: values.count)
        var usedOutsideDefiner = [Bool](repeating: false, count: values.count)
        for (i, group) in plan.enumerated() {
            for s in group {
                for v in stepInputs[s] {
                    lastUse[v] = Swift.max(lastUse[v], i)
                    if let d = values[v].definer, instructionOf[d] != i { usedOutsideDefiner[v] = true }
                }
            }
        }
        let isOutput = Set(outputValues)
        for v in outputValues { lastUse[v] = plan.count }

        // 5. The arena: computed values outside scratch get offsets, reused once a value's last
        // instruction has run (outputs live to the end).
        var offset = [Int](repeating: -1, count: values.count)
        // Freed blocks by size (in 64-byte lines): a value takes a freed block of its own size.
        var free: [Int: [Int]] = [:]
        var arenaSize = 0
        var dying = [[Int]](repeating: [], count: plan.count + 1)
        for v in values.indices where lastUse[v] >= 0 && lastUse[v] <= plan.count { dying[lastUse[v]].append(v) }
        func inScratch(_ v: Int, group: [Int]) -> Bool {
            group.count > 1 && !usedOutsideDefiner[v] && !isOutput.contains(v)
        }
        for (i, group) in plan.enumerated() {
            for s in group {
                let v = stepOutput[s]
                guard v >= 0, !inScratch(v, group: group) else { continue }
                let size = (values[v].bytes + 63) / 64 * 64
                if size == 0 { continue }
                if let reused = free[size]?.popLast() {
                    offset[v] = reused
                } else {
                    offset[v] = arenaSize
                    arenaSize += size
                }
            }
            for v in dying[i] where offset[v] >= 0 {
                free[(values[v].bytes + 63) / 64 * 64, default: []].append(offset[v])
            }
        }
        stats.arenaBytes = arenaSize
        if arenaSize > 0 {
            guard let p = BufferCache.allocate(bytes: arenaSize) else {
                throw AutogradError.outOfMemory("capture: cannot allocate the \(arenaSize)-byte arena of the replay")
            }
            arena = p
        }

        // 6. Pointers: arena offsets for computed values, the storage's own buffer for the rest.
        var retainedIDs: Set<ObjectIdentifier> = []
        func pointer(_ v: Int) -> UnsafeMutableRawPointer {
            let value = values[v]
            if case .computed = value.place, offset[v] >= 0, let arena { return arena + offset[v] }
            if case .computed = value.place { return Program.nowhere }
            if retainedIDs.insert(ObjectIdentifier(value.storage)).inserted { retained.append(value.storage) }
            return value.storage.raw ?? Program.nowhere
        }

        // 7. The instructions, groups with their scratch.
        var scratchNeeded = 0
        var groups: [(FusedGroup, [Int])] = []
        for group in plan {
            let head = steps[group[0]]
            if group.count > 1 || Program.isElementwise(head) {
                if case .elementwise = head.kernel {
                    let fused = FusedGroup(count: values[stepOutput[group[0]]].count, dtype: values[stepOutput[group[0]]].dtype)
                    var registers: [Int: Int] = [:]
                    var freeRegisters: [Int] = []
                    var lastInGroup: [Int: Int] = [:]
                    for (j, s) in group.enumerated() { for v in stepInputs[s] { lastInGroup[v] = j } }
                    for (j, s) in group.enumerated() {
                        guard case .elementwise(let loop) = steps[s].kernel else { continue }
                        var operands: [FusedGroup.Operand] = []
                        var scalars = 0
                        for (a, v) in stepInputs[s].enumerated() {
                            if let r = registers[v] {
                                operands.append(.register(r))
                            } else if values[v].count != fused.count {
                                operands.append(.fixed(pointer(v)))
                                scalars |= 1 << a
                            } else {
                                operands.append(.buffer(pointer(v)))
                            }
                        }
                        // Registers whose value is read for the last time here may be reused
                        // by this step's own output (each element is read before it is written).
                        for v in stepInputs[s] where registers[v] != nil && lastInGroup[v] == j {
                            freeRegisters.append(registers.removeValue(forKey: v)!)
                        }
                        let v = stepOutput[s]
                        let out: FusedGroup.Operand
                        if group.count > 1 && inScratch(v, group: group) {
                            let r = freeRegisters.popLast() ?? registers.count + freeRegisters.count
                            registers[v] = r
                            out = .register(r)
                            fused.registerCount = Swift.max(fused.registerCount, r + 1)
                        } else {
                            out = .buffer(pointer(v))
                        }
                        fused.append(loop, out: out, operands: operands, scalars: scalars)
                    }
                    scratchNeeded = Swift.max(scratchNeeded, fused.scratchBytes)
                    groups.append((fused, group))
                    instructions.append(fused)
                    if group.count > 1 {
                        stats.fusedGroups += 1
                        stats.fusedSteps += group.count
                    }
                    continue
                }
            }
            let s = group[0]
            let step = steps[s]
            switch step.kernel {
            case .buffers(let kernel):
                instructions.append(BuffersInstruction(kernel, args: stepInputs[s].map(pointer), out: pointer(stepOutput[s])))
            case .copy:
                let out = stepOutput[s]
                let bytes = values[out].bytes
                instructions.append(BuffersInstruction({ args, o in o.copyMemory(from: args[0], byteCount: bytes) },
                                                       args: stepInputs[s].map(pointer), out: pointer(out)))
            case .effect(_, let apply):
                instructions.append(EffectInstruction(apply, inputs: Program.borrowed(step.inputs, stepInputs[s], pointer)))
            default:
                stats.rerunSteps += 1
                rerunNames.append("\(step.name)")
                let out = stepOutput[s]
                instructions.append(RerunInstruction(step.rerun, inputs: Program.borrowed(step.inputs, stepInputs[s], pointer),
                                                     out: pointer(out), bytes: values[out].bytes, name: step.name))
            }
        }
        unretained = instructions.map { Unmanaged.passUnretained($0) }
        stats.instructions = instructions.count
        if scratchNeeded > 0 {
            guard let p = BufferCache.allocate(bytes: scratchNeeded) else {
                throw AutogradError.outOfMemory("capture: cannot allocate the \(scratchNeeded)-byte scratch of the replay")
            }
            scratch = p
        }
        for (fused, _) in groups { fused.bind(scratch: scratch) }
        stats.scratchBytes = scratchNeeded
        outputPointers = outputValues.map { values[$0].count == 0 ? nil : pointer($0) }
        for s in inputStorages where retainedIDs.insert(ObjectIdentifier(s)).inserted { retained.append(s) }

        // Inputs are read where the caller's tensors are (no copy), by rewriting the pointers
        // that name an input's buffer at each call whose tensor is elsewhere; except an input an
        // in-place write of the function writes (a copy_ into it), which is copied in as before.
        var written: Set<ObjectIdentifier> = []
        for step in steps { if case .effect(let writes, _) = step.kernel { for w in writes { written.insert(ObjectIdentifier(w)) } } }
        writtenStorages = written
        inputBindings = inputStorages.map { storage in
            let binding = InputBinding(placeholder: storage)
            guard let p = storage.raw, !written.contains(ObjectIdentifier(storage)) else { return binding }
            binding.readsInPlace = true
            for instruction in instructions { instruction.collectSlots(pointingAt: p, into: binding) }
            binding.outputs = outputPointers.indices.filter { outputPointers[$0] == p }
            return binding
        }
    }

    /// How an input's buffer is found at each call (see run).
    final class InputBinding {
        let placeholder: Storage
        /// Whether the input is read from the caller's tensor (else copied into the placeholder).
        var readsInPlace = false
        /// Where the instructions hold the input's address: pointer slots, borrowed storages,
        /// and outputs that are the input itself.
        var slots: [UnsafeMutablePointer<UnsafeMutableRawPointer>] = []
        var storages: [Storage] = []
        var outputs: [Int] = []
        /// The address they hold now.
        var bound: UnsafeMutableRawPointer?

        init(placeholder: Storage) {
            self.placeholder = placeholder
            bound = placeholder.raw
        }
    }

    deinit {
        if let arena { BufferCache.release(arena, bytes: stats.arenaBytes) }
        if let scratch { BufferCache.release(scratch, bytes: stats.scratchBytes) }
    }

    private static func isEffect(_ step: ForwardStep) -> Bool {
        if case .effect = step.kernel { return true }
        return false
    }

    private static func isElementwise(_ step: ForwardStep) -> Bool {
        if case .elementwise = step.kernel { return true }
        return false
    }

    /// Whether elementwise step s can join `group`: the same count and dtype, and every operand
    /// either of that count or a single element made before the group.
    private static func fits(_ s: Int, head h: Int, members: Set<Int>, _ values: [Value],
                             _ stepInputs: [[Int]], _ stepOutput: [Int]) -> Bool {
        let head = values[stepOutput[h]], out = values[stepOutput[s]]
        guard out.count == head.count, out.dtype == head.dtype, out.count > 0 else { return false }
        for v in stepInputs[s] {
            guard values[v].dtype == head.dtype else { return false }
            if values[v].count != head.count && (values[v].count != 1 || members.contains(v)) { return false }
        }
        return true
    }

    /// Points every place that names binding's input at `p`.
    private func rebind(_ binding: InputBinding, to p: UnsafeMutableRawPointer) {
        for slot in binding.slots { slot.pointee = p }
        for storage in binding.storages { storage.rebind(to: p) }
        for k in binding.outputs { outputPointers[k] = p }
        binding.bound = p
    }

    /// Tensors over the buffers of a step's inputs, made once (their storages borrow the buffers).
    private static func borrowed(_ inputs: [StepValue], _ ids: [Int], _ pointer: (Int) -> UnsafeMutableRawPointer) -> [Tensor] {
        zip(inputs, ids).map { input, v in
            Tensor(shape: input.shape, storage: Storage.borrowing(pointer(v), dtype: input.storage.dtype, count: input.storage.count))
        }
    }

    /// One run: points the instructions at the inputs' buffers (or copies an input in, see
    /// InputBinding), then runs every instruction. The caller keeps `inputs` alive meanwhile.
    func run(_ inputs: [Tensor]) throws {
        // An input the function writes in place is written back below: refused first when its
        // values are read-only memory, before anything runs.
        for (k, t) in inputs.enumerated() where t.count > 0 && writtenStorages.contains(ObjectIdentifier(inputBindings[k].placeholder)) {
            try t.storage.refuseReadOnly("call: input \(k) (the function writes it in place)")
        }
        for (k, t) in inputs.enumerated() where t.count > 0 {
            let binding = inputBindings[k]
            guard let source = t.storage.raw else { continue }
            if binding.readsInPlace && !writtenStorages.contains(ObjectIdentifier(t.storage)) {
                if source != binding.bound { rebind(binding, to: source) }
            } else {
                let placeholder = binding.placeholder.raw!
                if binding.readsInPlace && binding.bound != placeholder { rebind(binding, to: placeholder) }
                if source != placeholder { placeholder.copyMemory(from: UnsafeRawPointer(source), byteCount: t.count * t.dtype.size) }
            }
        }
        for instruction in unretained {
            try instruction._withUnsafeGuaranteedRef { try $0.run() }
        }
        // An input the function wrote in place (copy_ into it) is written back to the caller's
        // tensor, as the eager function writes it.
        for (k, t) in inputs.enumerated() where t.count > 0 {
            let placeholder = inputBindings[k].placeholder
            guard t.storage !== placeholder, writtenStorages.contains(ObjectIdentifier(placeholder)),
                  let src = placeholder.raw, let dst = t.storage.raw else { continue }
            dst.copyMemory(from: UnsafeRawPointer(src), byteCount: t.count * t.dtype.size)
            GraphLock.withLock { t.storage.bumpVersion() }
        }
    }
}

/// One instruction of a Program (a class, so that a run calls it through an unretained
/// reference: copying an enum's payload out of an array retains it).
class Instruction {
    func run() throws { preconditionFailure("Instruction is abstract") }

    /// Adds to `binding` every place where this instruction holds the address `p`.
    func collectSlots(pointingAt p: UnsafeMutableRawPointer, into binding: Program.InputBinding) {}

    /// The borrowed storages of `tensors` over `p` (rerun and in-place instructions).
    static func storages(of tensors: [Tensor], at p: UnsafeMutableRawPointer) -> [Storage] {
        tensors.compactMap { $0.storage.raw == p ? $0.storage : nil }
    }
}

/// A kernel over fixed buffers (StepKernel.buffers).
final class BuffersInstruction: Instruction {
    let kernel: (UnsafePointer<UnsafeMutableRawPointer>, UnsafeMutableRawPointer) throws -> Void
    let args: UnsafeMutablePointer<UnsafeMutableRawPointer>
    let argCount: Int
    let out: UnsafeMutableRawPointer

    init(_ kernel: @escaping (UnsafePointer<UnsafeMutableRawPointer>, UnsafeMutableRawPointer) throws -> Void,
         args: [UnsafeMutableRawPointer], out: UnsafeMutableRawPointer) {
        self.kernel = kernel
        self.args = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: Swift.max(1, args.count))
        self.args.initialize(from: args, count: args.count)
        argCount = args.count
        self.out = out
    }

    deinit { args.deallocate() }

    override func run() throws { try kernel(args, out) }

    override func collectSlots(pointingAt p: UnsafeMutableRawPointer, into binding: Program.InputBinding) {
        for k in 0..<argCount where args[k] == p { binding.slots.append(args + k) }
    }
}

/// An op rerun on tensors over fixed buffers, its result copied into its planned buffer.
final class RerunInstruction: Instruction {
    let rerun: ([Tensor]) throws -> Tensor
    let inputs: [Tensor]
    let out: UnsafeMutableRawPointer
    let bytes: Int
    let name: OpName

    init(_ rerun: @escaping ([Tensor]) throws -> Tensor, inputs: [Tensor], out: UnsafeMutableRawPointer, bytes: Int, name: OpName) {
        self.rerun = rerun
        self.inputs = inputs
        self.out = out
        self.bytes = bytes
        self.name = name
    }

    override func run() throws {
        let result = try Trace.suspended { try rerun(inputs) }
        guard result.count * result.dtype.size == bytes else {
            throw AutogradError.internal("replay: '\(name)' gave \(result.count) elements of \(result.dtype), \(bytes) bytes were planned")
        }
        if bytes > 0, let src = result.storage.raw, src != out { out.copyMemory(from: UnsafeRawPointer(src), byteCount: bytes) }
    }

    override func collectSlots(pointingAt p: UnsafeMutableRawPointer, into binding: Program.InputBinding) {
        binding.storages += Instruction.storages(of: inputs, at: p)
    }
}

/// An in-place write (an optimizer step, a copy into a parameter) on tensors over fixed buffers.
final class EffectInstruction: Instruction {
    let apply: ([Tensor]) throws -> Void
    let inputs: [Tensor]

    init(_ apply: @escaping ([Tensor]) throws -> Void, inputs: [Tensor]) {
        self.apply = apply
        self.inputs = inputs
    }

    override func run() throws { try Trace.suspended { try apply(inputs) } }

    override func collectSlots(pointingAt p: UnsafeMutableRawPointer, into binding: Program.InputBinding) {
        binding.storages += Instruction.storages(of: inputs, at: p)
    }
}

/// A run of elementwise steps over one count executed as blocked loops: for each block of
/// elements, every step's loop in order, so the values that live only inside the group stay in
/// a scratch of `registerCount` blocks (cache-resident) instead of going through memory.
final class FusedGroup: Instruction {
    enum Operand {
        /// A buffer of the group's count: advanced with the block.
        case buffer(UnsafeMutableRawPointer)
        /// A single element read by every element (a broadcast scalar).
        case fixed(UnsafeMutableRawPointer)
        /// Scratch block r.
        case register(Int)
    }

    static let blockSize = 512
    /// The most pointers a step uses: its output and four arguments (a binary derivative's).
    static let slots = 5
    let count: Int
    let dtype: DType
    var registerCount = 0
    /// Each step's loop as a plain value (a table op's kind and role, no reference to retain
    /// per call), and the closures of the others, by index.
    private var loops: [MicroOp] = []
    private var closures: [(UnsafeMutableRawPointer, UnsafePointer<UnsafeMutableRawPointer>, Int, Int) -> Void] = []

    private struct MicroOp {
        let kind: DecodedElementwiseKind
        let role: Int8
        /// Index into closures for a loop without a kind, else -1.
        let closure: Int
        let scalars: Int
        /// Where its pointers start in the table, and how many it has (output included).
        let first: Int
        let width: Int
    }
    private var operands: [Operand] = []
    /// Per step, its output's pointer and its arguments' (for the first block), packed: step j's
    /// start at loops[j].first (a compact table: a long scalar chain reads it once per call).
    private var pointers: UnsafeMutablePointer<UnsafeMutableRawPointer>?

    init(count: Int, dtype: DType) {
        self.count = count
        self.dtype = dtype
    }

    override func run() { runLoops() }

    override func collectSlots(pointingAt p: UnsafeMutableRawPointer, into binding: Program.InputBinding) {
        guard let pointers else { return }
        for i in 0..<operands.count where pointers[i] == p {
            switch operands[i] {
            case .buffer, .fixed: binding.slots.append(pointers + i)
            case .register: break
            }
        }
    }

    deinit { pointers?.deallocate() }

    var blockBytes: Int { Swift.min(count, FusedGroup.blockSize) * dtype.size }
    /// A register's size: a block, on a cache line of its own unless it is smaller than one.
    var registerStride: Int { blockBytes >= 64 ? (blockBytes + 63) / 64 * 64 : (blockBytes + 7) / 8 * 8 }
    var scratchBytes: Int { registerCount * registerStride }

    func append(_ loop: ElementLoop, out: Operand, operands: [Operand], scalars: Int) {
        let first = self.operands.count, width = 1 + Swift.min(operands.count, FusedGroup.slots - 1)
        switch loop {
        case .table(let kind, let role, _):
            loops.append(MicroOp(kind: kind.decoded, role: role, closure: -1, scalars: scalars, first: first, width: width))
        case .closure(let f):
            loops.append(MicroOp(kind: .none, role: -1, closure: closures.count, scalars: scalars, first: first, width: width))
            closures.append(f)
        }
        self.operands.append(out)
        self.operands.append(contentsOf: operands.prefix(FusedGroup.slots - 1))
    }

    /// Fixes every operand's pointer for the first block, registers inside `scratch`.
    func bind(scratch: UnsafeMutableRawPointer?) {
        let p = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: Swift.max(1, operands.count))
        let stride = registerStride
        for (i, operand) in operands.enumerated() {
            switch operand {
            case .buffer(let b), .fixed(let b): (p + i).initialize(to: b)
            case .register(let r): (p + i).initialize(to: scratch! + r * stride)
            }
        }
        pointers = p
    }

    @inline(__always)
    private func call(_ op: MicroOp, _ out: UnsafeMutableRawPointer, _ args: UnsafePointer<UnsafeMutableRawPointer>, _ n: Int) {
        if op.closure < 0 {
            ElementLoopRunner.run(op.kind, role: op.role, dtype: dtype, out, args, op.scalars, n)
        } else {
            closures[op.closure](out, args, op.scalars, n)
        }
    }

    func runLoops() {
        guard let pointers else { return }
        if count <= FusedGroup.blockSize {
            loops.withUnsafeBufferPointer { loops in
                for j in 0..<loops.count {
                    let base = pointers + loops[j].first
                    call(loops[j], base[0], UnsafePointer(base + 1), count)
                }
            }
            return
        }
        // Several blocks: buffer operands advance with the block, registers and scalars stay.
        // A group as large as the eager kernels split over threads is split the same way, each
        // chunk with a scratch of its own.
        if count >= Parallel.minimumParallelCount && Parallel.threadCount > 1 {
            let bytes = Swift.max(registerCount * registerStride, 1)
            Parallel.forChunks(count: count) { range in
                withUnsafeTemporaryAllocation(byteCount: bytes, alignment: 64) { local in
                    runBlocks(range, scratch: local.baseAddress!)
                }
            }
        } else {
            runBlocks(0..<count, scratch: nil)
        }
    }

    /// The blocks of `range`, registers in `scratch` (nil: the program's, bound in `pointers`).
    private func runBlocks(_ range: Range<Int>, scratch: UnsafeMutableRawPointer?) {
        guard let pointers else { return }
        let slots = FusedGroup.slots, size = dtype.size, stride = registerStride
        withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer.self, capacity: slots) { working in
            let working = working.baseAddress!
            var start = range.lowerBound
            while start < range.upperBound {
                let n = Swift.min(FusedGroup.blockSize, range.upperBound - start)
                for j in 0..<loops.count {
                    let first = loops[j].first
                    for k in 0..<loops[j].width {
                        let i = first + k
                        switch operands[i] {
                        case .buffer: working[k] = pointers[i] + start * size
                        case .fixed: working[k] = pointers[i]
                        case .register(let r): working[k] = scratch.map { $0 + r * stride } ?? pointers[i]
                        }
                    }
                    call(loops[j], working[0], UnsafePointer(working + 1), n)
                }
                start += n
            }
        }
    }
}
