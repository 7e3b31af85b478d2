/// Comparisons (no gradient: 0/1 in the operands' dtype for float operands, bool for int64 and
/// bool ones), where(cond, a, b) (gradient to both branches), and `masked`, the one way rules
/// apply a mask to a gradient.
extension Tensor {
    package func eq(_ other: Tensor) throws -> Tensor { try compared(other, "eq", { $0 == $1 ? 1 : 0 }, { $0 == $1 ? 1 : 0 }) }
    package func ne(_ other: Tensor) throws -> Tensor { try compared(other, "ne", { $0 != $1 ? 1 : 0 }, { $0 != $1 ? 1 : 0 }) }
    package func lt(_ other: Tensor) throws -> Tensor { try compared(other, "lt", { $0 < $1 ? 1 : 0 }, { $0 < $1 ? 1 : 0 }) }
    package func le(_ other: Tensor) throws -> Tensor { try compared(other, "le", { $0 <= $1 ? 1 : 0 }, { $0 <= $1 ? 1 : 0 }) }
    package func gt(_ other: Tensor) throws -> Tensor { try compared(other, "gt", { $0 > $1 ? 1 : 0 }, { $0 > $1 ? 1 : 0 }) }
    package func ge(_ other: Tensor) throws -> Tensor { try compared(other, "ge", { $0 >= $1 ? 1 : 0 }, { $0 >= $1 ? 1 : 0 }) }

    /// A comparison's 0/1 result (no gradient), noted for replay as an elementwise loop.
    private func compared(_ other: Tensor, _ name: StaticString, _ f32: @escaping (Float, Float) -> Float,
                          _ f64: @escaping (Double, Double) -> Double) throws -> Tensor {
        if !dtype.isFloatingPoint || !other.dtype.isFloatingPoint {
            // f64 gives the relation (its value is 0 or 1); int64 values are compared exactly.
            let out = try Tensor.comparedExactly(self, other, name) { f64($0, $1) != 0 }
            if Trace.isRecording { Trace.note(out, name, [self, other]) { ins in try Tensor.comparedExactly(ins[0], ins[1], name) { f64($0, $1) != 0 } } }
            return out
        }
        let out = try Tensor.zipped(self, other, name, f32, f64)
        if Trace.isRecording {
            let kernel = ElementLoops.scalarBits(self, other, count: out.count).map { _ in StepKernel.elementwise(ElementLoops.zip(dtype: out.dtype, f32, f64)) }
            Trace.note(out, name, [self, other], kernel: kernel ?? .rerunOnly) { ins in try Tensor.zipped(ins[0], ins[1], name, f32, f64) }
        }
        return out
    }

    /// A comparison of int64 or bool operands (of one dtype, broadcast together) as a bool
    /// tensor; `holds` gets the pair as doubles only when both convert exactly, else the
    /// int64s' order decides through their difference's sign.
    static func comparedExactly(_ a: Tensor, _ b: Tensor, _ name: StaticString, _ holds: (Double, Double) -> Bool) throws -> Tensor {
        guard a.dtype == b.dtype else {
            throw AutogradError.dtype("\(name): operands have different dtypes (\(a.dtype) and \(b.dtype))")
        }
        let shape: [Int]
        do { shape = try Shape.broadcast(a.shape, b.shape) } catch let e as AutogradError {
            throw AutogradError.shape("\(name): \(e.message)")
        }
        let (ea, eb) = try (a.expanded(to: shape), b.expanded(to: shape))
        let out = try Tensor(uninitialized: shape, dtype: .bool)
        let o = out.flags()
        if a.dtype == .bool {
            let x = ea.flags(), y = eb.flags()
            // Non-zero is true (bool values over a caller's memory may hold other bytes than 1).
            for i in 0..<o.count { o[i] = holds(x[i] == 0 ? 0 : 1, y[i] == 0 ? 0 : 1) ? 1 : 0 }
        } else {
            let x = ea.integers(), y = eb.integers()
            // The relation from the order of the two int64s (exact at any size): -1, 0 or 1.
            for i in 0..<o.count {
                let order: Double = x[i] < y[i] ? -1 : (x[i] == y[i] ? 0 : 1)
                o[i] = holds(order, 0) ? 1 : 0
            }
        }
        return out
    }

    /// cond ? a : b elementwise, the three broadcast together; cond is true where non-zero and
    /// may be of any dtype (a bool mask, or 0/1 floats from a comparison). a and b are float32
    /// or float64. The gradient goes to a where cond holds, to b elsewhere.
    package static func `where`(_ cond: Tensor, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        guard a.dtype == b.dtype else {
            throw AutogradError.dtype("where: a and b have different dtypes (\(a.dtype) and \(b.dtype))")
        }
        try a.requireFloatingPoint("where", "a")
        let shape: [Int]
        do { shape = try Shape.broadcast(Shape.broadcast(cond.shape, a.shape), b.shape) } catch let e as AutogradError {
            throw AutogradError.shape("where: \(e.message)")
        }
        // The mask in a's dtype, broadcast to the result: 1 where cond holds (noted for replay
        // as one step: the rule reads it).
        let mask = try Trace.suspended { try whereMask(cond, dtype: a.dtype, shape: shape) }
        if Trace.isRecording {
            let dtype = a.dtype
            Trace.note(mask, "where_mask", [cond]) { ins in try whereMask(ins[0], dtype: dtype, shape: shape) }
        }
        let ea = try Trace.suspended { try a.expanded(to: shape) }, eb = try Trace.suspended { try b.expanded(to: shape) }
        let out = try Tensor(uninitialized: shape, dtype: a.dtype)
        switch a.dtype {
        case .float32: select(mask.buffer(Float.self), ea.buffer(Float.self), eb.buffer(Float.self), out.buffer(Float.self))
        case .float64: select(mask.buffer(Double.self), ea.buffer(Double.self), eb.buffer(Double.self), out.buffer(Double.self))
        case .int64, .bool: break  // unreachable: a is floating point (checked above)
        }
        if shouldRecord(a, b) {
            out.record("where", inputs: [a, b], saved: [mask]) { g, node in
                let m = node.saved(0)
                return InputGradients(node.needsGrad(0) ? try masked(g, by: m) : nil,
                                      node.needsGrad(1) ? try masked(g, by: withNoGrad { try m.constant(1).subtracting(m) }) : nil)
            }
        }
        if Trace.isRecording { Trace.note(out, "where", [cond, a, b]) { ins in try Tensor.where(ins[0], ins[1], ins[2]) } }
        try out.deriveTangent(from: a, b) { ta, tb in try Tensor.where(mask, ta ?? a.constant(0), tb ?? b.constant(0)) }
        return out
    }

    /// where's mask: 1 in `dtype` where cond is non-zero, 0 elsewhere, broadcast to `shape`.
    private static func whereMask(_ cond: Tensor, dtype: DType, shape: [Int]) throws -> Tensor {
        let m = cond.dtype.isFloatingPoint ? try cond.mapped({ $0 != 0 ? 1 : 0 }, { $0 != 0 ? 1 : 0 }).converted(to: dtype)
            : try cond.converted(to: .bool).converted(to: dtype)
        return try m.expanded(to: shape)
    }

    private static func select<T: TensorElement>(_ m: UnsafeMutableBufferPointer<T>, _ a: UnsafeMutableBufferPointer<T>,
                                                 _ b: UnsafeMutableBufferPointer<T>, _ out: UnsafeMutableBufferPointer<T>) {
        for i in 0..<out.count { out[i] = m[i] != 0 ? a[i] : b[i] }
    }
}

extension Tensor {
    /// g·factor where factor is non-zero and exactly 0 where it is 0, with factor a constant (no
    /// gradient) that broadcasts with g: how the rules that mask (relu, abs, maximum, minimum,
    /// where, max, min) apply their masks (pow selects with where directly). Selecting rather than multiplying keeps an
    /// infinite or nan g out of the elements the mask excludes (inf·0 would be nan there), as
    /// PyTorch's masked rules do. Recorded (create_graph) it is where(factor, g·factor, 0), so
    /// differentiable in g and selecting again at every order (and when g carries a tangent:
    /// forward over reverse); otherwise one loop, the cost of the multiply it replaces.
    static func masked(_ g: Tensor, by factor: Tensor) throws -> Tensor {
        guard shouldRecord(g) || g.tangentBox != nil else {
            let f32: (Float, Float) -> Float = { $1 != 0 ? $0 * $1 : 0 }, f64: (Double, Double) -> Double = { $1 != 0 ? $0 * $1 : 0 }
            let out = try zipped(g, factor, "masked", f32, f64)
            if Trace.isRecording {
                let kernel = ElementLoops.scalarBits(g, factor, count: out.count).map { _ in StepKernel.elementwise(ElementLoops.zip(dtype: out.dtype, f32, f64)) }
                Trace.note(out, "masked", [g, factor], kernel: kernel ?? .rerunOnly) { ins in try zipped(ins[0], ins[1], "masked", f32, f64) }
            }
            return out
        }
        return try Tensor.where(factor, g.multiplying(factor), g.constant(0))
    }
}
