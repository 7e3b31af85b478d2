/// slice, index_select, concat, stack, gather and their scatter-add backwards, side by side.
extension Tensor {
    /// (outer, extent, inner) around `axis`.
    private func split(at axis: Int) -> (Int, Int, Int) {
        (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
    }

    static func normalizeAxis(_ axis: Int, rank: Int, _ op: String) throws -> Int {
        let r = axis < 0 ? axis + rank : axis
        guard r >= 0 && r < rank else {
            throw AutogradError.argument("\(op): axis \(axis) is out of range for a tensor of rank \(rank)")
        }
        return r
    }

    /// The entries `indices` along `axis` (negative indices count from the end).
    package func indexSelect(axis: Int, _ indices: [Int]) throws -> Tensor {
        let axis = try Tensor.normalizeAxis(axis, rank: rank, "index_select")
        let n = shape[axis]
        let idx = try indices.map { i -> Int in
            let r = i < 0 ? i + n : i
            guard r >= 0 && r < n else { throw AutogradError.argument("index_select: index \(i) is out of range for extent \(n) of axis \(axis)") }
            return r
        }
        return try selecting(axis: axis, idx, "index_select")
    }

    /// Python's a[start:stop:step] along `axis` (step > 0, bounds clamped).
    package func slice(axis: Int, start: Int, stop: Int, step: Int = 1) throws -> Tensor {
        let axis = try Tensor.normalizeAxis(axis, rank: rank, "slice")
        guard step > 0 else { throw AutogradError.argument("slice: step must be positive, got \(step)") }
        let n = shape[axis]
        func clamp(_ i: Int) -> Int { i < 0 ? Swift.max(0, i + n) : Swift.min(i, n) }
        let lo = clamp(start), hi = clamp(stop)
        let m = lo < hi ? (hi - lo - 1) / step + 1 : 0
        if count == 0 {
            // Nothing to copy: build the (empty) result from its shape alone, without listing
            // indices, which an axis of extent 2^40 beside an extent 0 would make huge.
            var newShape = shape
            newShape[axis] = m
            let out = try Tensor(uninitialized: newShape, dtype: dtype)
            if Tensor.shouldRecord(self) {
                let inputShape = shape, dt = dtype
                out.record("slice", self) { _, _ in InputGradients(try Tensor.zeros(inputShape, dtype: dt)) }
            }
            if Trace.isRecording { Trace.note(out, "slice", [self]) { ins in try ins[0].slice(axis: axis, start: start, stop: stop, step: step) } }
            try out.deriveTangent(from: self) { t in try t.slice(axis: axis, start: start, stop: stop, step: step) }
            return out
        }
        return try selecting(axis: axis, Array(stride(from: lo, to: hi, by: step)), "slice")
    }

    /// The differentiable primitive: entries `idx` (checked) along `axis`.
    func selecting(axis: Int, _ idx: [Int], _ name: StaticString) throws -> Tensor {
        var newShape = shape
        newShape[axis] = idx.count
        let (outer, extent, inner) = split(at: axis)
        let out = try Tensor(uninitialized: newShape, dtype: dtype)
        switch dtype {
        case .float32: Indexing.select(buffer(Float.self), outer: outer, extent: extent, inner: inner, indices: idx, into: out.buffer(Float.self))
        case .float64: Indexing.select(buffer(Double.self), outer: outer, extent: extent, inner: inner, indices: idx, into: out.buffer(Double.self))
        case .int64: Indexing.select(elements(Int64.self), outer: outer, extent: extent, inner: inner, indices: idx, into: out.elements(Int64.self))
        case .bool: Indexing.select(elements(UInt8.self), outer: outer, extent: extent, inner: inner, indices: idx, into: out.elements(UInt8.self))
        }
        if Tensor.shouldRecord(self) {
            out.record(name, self) { g, _ in InputGradients(try g.indexAdding(axis: axis, idx, extent: extent)) }
        }
        if Trace.isRecording { Trace.note(out, name, [self]) { ins in try ins[0].selecting(axis: axis, idx, name) } }
        try out.deriveTangent(from: self) { t in try t.selecting(axis: axis, idx, name) }
        return out
    }

    /// Zeros of extent `extent` along `axis` with this tensor's entries added at `idx`: the
    /// backward of selecting (and selecting is its backward).
    func indexAdding(axis: Int, _ idx: [Int], extent: Int) throws -> Tensor {
        try requireFloatingPoint("index_add")
        var newShape = shape
        newShape[axis] = extent
        let (outer, _, inner) = split(at: axis)
        let out = try Tensor(uninitialized: newShape, dtype: dtype)
        // Repeated indices sum several terms into one entry: those sums go through a float64
        // scratch (Indexing.Accumulator); distinct indices (slices) need none.
        // (Found by the index list's own size, never the axis' extent, which may be 2^40 beside
        // an extent 0.)
        let repeats = out.count > 0 && Set(idx).count != idx.count
        let scratch = repeats ? try Tensor(uninitialized: newShape, dtype: .float64) : nil
        switch dtype {
        case .float32:
            Indexing.add(buffer(Float.self), outer: outer, extent: extent, inner: inner, indices: idx,
                         into: out.buffer(Float.self), scratch: scratch?.buffer(Double.self))
        case .float64:
            Indexing.add(buffer(Double.self), outer: outer, extent: extent, inner: inner, indices: idx,
                         into: out.buffer(Double.self), scratch: scratch?.buffer(Double.self))
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
        if Tensor.shouldRecord(self) {
            out.record("index_add", self) { g, _ in InputGradients(try g.selecting(axis: axis, idx, "index_select")) }
        }
        if Trace.isRecording { Trace.note(out, "index_add", [self]) { ins in try ins[0].indexAdding(axis: axis, idx, extent: extent) } }
        try out.deriveTangent(from: self) { t in try t.indexAdding(axis: axis, idx, extent: extent) }
        return out
    }

    /// The tensors joined along an existing axis.
    package static func concat(_ tensors: [Tensor], axis: Int) throws -> Tensor {
        guard let first = tensors.first else { throw AutogradError.argument("concat: no tensors given") }
        guard first.rank > 0 else { throw AutogradError.shape("concat: cannot concatenate 0-d tensors (use stack)") }
        let axis = try normalizeAxis(axis, rank: first.rank, "concat")
        var total = 0
        for (k, t) in tensors.enumerated() {
            guard t.dtype == first.dtype else {
                throw AutogradError.dtype("concat: tensor \(k) is \(t.dtype), tensor 0 is \(first.dtype)")
            }
            guard t.rank == first.rank && (0..<t.rank).allSatisfy({ $0 == axis || t.shape[$0] == first.shape[$0] }) else {
                throw AutogradError.shape("concat: tensor \(k) has shape \(t.shape), which does not fit \(first.shape) along axis \(axis)")
            }
            let (sum, overflow) = total.addingReportingOverflow(t.shape[axis])
            guard !overflow else { throw AutogradError.shape("concat: the extents along axis \(axis) add up past int64") }
            total = sum
        }
        var shape = first.shape
        shape[axis] = total
        _ = try Shape.count(shape)
        let out = try Tensor(uninitialized: shape, dtype: first.dtype)
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
        var offset = 0
        for t in tensors {
            let m = t.shape[axis]
            if m > 0 && outer > 0 && inner > 0, let src = t.storage.raw, let dst = out.storage.raw {
                let size = first.dtype.size
                for o in 0..<outer {
                    (dst + ((o * total + offset) * inner) * size).copyMemory(from: src + (o * m * inner) * size, byteCount: m * inner * size)
                }
            }
            offset += m
        }
        if shouldRecord(tensors) {
            let extents = tensors.map { $0.shape[axis] }
            out.record("concat", inputs: tensors) { g, node in
                if g.count == 0 {
                    // No element: each input's part is empty too, taken by its shape, without
                    // listing the indices of an axis that may be 2^40 long beside an extent 0.
                    return InputGradients(try extents.indices.map { k in
                        guard node.needsGrad(k) else { return nil }
                        var part = g.shape
                        part[axis] = extents[k]
                        return try Tensor(uninitialized: part, dtype: g.dtype)
                    })
                }
                var start = 0
                return InputGradients(try extents.enumerated().map { k, m in
                    defer { start += m }
                    return node.needsGrad(k) ? try g.selecting(axis: axis, Array(start..<start + m), "slice") : nil
                })
            }
        }
        if Trace.isRecording { Trace.note(out, "concat", tensors) { ins in try concat(ins, axis: axis) } }
        // Linear: the tangents joined the same way (zeros for an input without one).
        try out.deriveTangent(from: tensors) { ts in
            try concat(zip(tensors, ts).map { x, t in try t ?? Tensor.zeros(x.shape, dtype: x.dtype) }, axis: axis)
        }
        return out
    }

    /// The tensors, all of one shape, stacked along a new axis.
    package static func stack(_ tensors: [Tensor], axis: Int) throws -> Tensor {
        guard let first = tensors.first else { throw AutogradError.argument("stack: no tensors given") }
        for (k, t) in tensors.enumerated() where t.shape != first.shape {
            throw AutogradError.shape("stack: tensor \(k) has shape \(t.shape), tensor 0 has \(first.shape)")
        }
        let axis = try normalizeAxis(axis, rank: first.rank + 1, "stack")
        return try concat(tensors.map { try $0.unsqueezed(axis) }, axis: axis)
    }

    /// torch.gather: out[p] = self[p with its `axis` coordinate replaced by index[p]].
    package func gather(axis: Int, index: [Int], indexShape: [Int]) throws -> Tensor {
        let axis = try Tensor.normalizeAxis(axis, rank: rank, "gather")
        guard indexShape.count == rank else {
            throw AutogradError.shape("gather: the index has rank \(indexShape.count), the input rank \(rank)")
        }
        guard index.count == (try Shape.count(indexShape)) else {
            throw AutogradError.shape("gather: \(index.count) indices do not fill index shape \(indexShape)")
        }
        for d in 0..<rank where d != axis && indexShape[d] > shape[d] {
            throw AutogradError.shape("gather: index extent \(indexShape[d]) exceeds the input's \(shape[d]) on axis \(d)")
        }
        let n = shape[axis]
        for i in index where i < 0 || i >= n {
            throw AutogradError.argument("gather: index \(i) is out of range for extent \(n) of axis \(axis)")
        }
        return try gathering(axis: axis, index: index, indexShape: indexShape)
    }

    func gathering(axis: Int, index: [Int], indexShape: [Int]) throws -> Tensor {
        let out = try Tensor(uninitialized: indexShape, dtype: dtype)
        switch dtype {
        case .float32:
            let x = buffer(Float.self), o = out.buffer(Float.self)
            Indexing.forEachGather(indexShape: indexShape, index: index, shape: shape, axis: axis) { p, off in o[p] = x[off] }
        case .float64:
            let x = buffer(Double.self), o = out.buffer(Double.self)
            Indexing.forEachGather(indexShape: indexShape, index: index, shape: shape, axis: axis) { p, off in o[p] = x[off] }
        case .int64:
            let x = elements(Int64.self), o = out.elements(Int64.self)
            Indexing.forEachGather(indexShape: indexShape, index: index, shape: shape, axis: axis) { p, off in o[p] = x[off] }
        case .bool:
            let x = elements(UInt8.self), o = out.elements(UInt8.self)
            Indexing.forEachGather(indexShape: indexShape, index: index, shape: shape, axis: axis) { p, off in o[p] = x[off] }
        }
        if Tensor.shouldRecord(self) {
            let inputShape = shape
            out.record("gather", self) { g, _ in
                [try g.scatterAdding(axis: axis, index: index, into: inputShape)]
            }
        }
        if Trace.isRecording {
            let (inputShape, dtype) = (shape, dtype)
            Trace.note(out, "gather", [self], kernel: .buffers { args, o in
                switch dtype {
                case .float32:
                    let x = args[0].assumingMemoryBound(to: Float.self), y = o.assumingMemoryBound(to: Float.self)
                    Indexing.forEachGather(indexShape: indexShape, index: index, shape: inputShape, axis: axis) { p, off in y[p] = x[off] }
                case .float64, .int64:  // 8-byte values, moved as they are
                    let x = args[0].assumingMemoryBound(to: UInt64.self), y = o.assumingMemoryBound(to: UInt64.self)
                    Indexing.forEachGather(indexShape: indexShape, index: index, shape: inputShape, axis: axis) { p, off in y[p] = x[off] }
                case .bool:
                    let x = args[0].assumingMemoryBound(to: UInt8.self), y = o.assumingMemoryBound(to: UInt8.self)
                    Indexing.forEachGather(indexShape: indexShape, index: index, shape: inputShape, axis: axis) { p, off in y[p] = x[off] }
                }
            }) { ins in try ins[0].gathering(axis: axis, index: index, indexShape: indexShape) }
        }
        try out.deriveTangent(from: self) { t in try t.gathering(axis: axis, index: index, indexShape: indexShape) }
        return out
    }

    /// scatter_add's loop: out (of `target` shape) = zeros with g's elements (of `indexShape`)
    /// added at the gathered positions, summed through `scratch` (target's count of doubles).
    static func scatterAdd(_ dtype: DType, _ g: UnsafeMutableRawPointer?, _ indexShape: [Int], index: [Int], axis: Int,
                           into out: UnsafeMutableRawPointer?, _ target: [Int], scratch: UnsafeMutableRawPointer?) {
        let n = target.reduce(1, *), m = indexShape.reduce(1, *)
        guard n > 0, let out, let scratch else { return }
        let s = UnsafeMutableBufferPointer(start: scratch.assumingMemoryBound(to: Double.self), count: n)
        switch dtype {
        case .float32:
            let acc = Indexing.Accumulator(UnsafeMutableBufferPointer(start: out.assumingMemoryBound(to: Float.self), count: n), s)
            if m > 0, let g { let gp = g.assumingMemoryBound(to: Float.self)
                Indexing.forEachGather(indexShape: indexShape, index: index, shape: target, axis: axis) { p, off in acc.add(gp[p], at: off) } }
            acc.finish()
        case .float64:
            let acc = Indexing.Accumulator(UnsafeMutableBufferPointer(start: out.assumingMemoryBound(to: Double.self), count: n), s)
            if m > 0, let g { let gp = g.assumingMemoryBound(to: Double.self)
                Indexing.forEachGather(indexShape: indexShape, index: index, shape: target, axis: axis) { p, off in acc.add(gp[p], at: off) } }
            acc.finish()
        case .int64, .bool: break  // unreachable: only floating-point operands get here (requireFloatingPoint)
        }
    }

    /// Zeros of `target` shape with this tensor's elements added at the gathered positions:
    /// the backward of gather (and gather is its backward).
    func scatterAdding(axis: Int, index: [Int], into target: [Int]) throws -> Tensor {
        let out = try Tensor.zeros(target, dtype: dtype)
        let indexShape = shape
        // Positions gathered several times sum several terms: through a float64 scratch, as
        // Indexing.add.
        let scratch = try Tensor(uninitialized: target, dtype: .float64)
        Tensor.scatterAdd(dtype, storage.raw, indexShape, index: index, axis: axis, into: out.storage.raw, target, scratch: scratch.storage.raw)
        if Trace.isRecording {
            let (dtype, count) = (dtype, out.count)
            Trace.note(out, "scatter_add", [self], kernel: .buffers { args, o in
                // The scratch of one call (a replay allocates it per call, as the eager op does).
                let scratch = try Tensor(uninitialized: [count], dtype: .float64)
                Tensor.scatterAdd(dtype, args[0], indexShape, index: index, axis: axis, into: o, target, scratch: scratch.storage.raw)
            }) { ins in try ins[0].scatterAdding(axis: axis, index: index, into: target) }
        }
        if Tensor.shouldRecord(self) {
            out.record("scatter_add", self) { g, _ in InputGradients(try g.gathering(axis: axis, index: index, indexShape: indexShape)) }
        }
        try out.deriveTangent(from: self) { t in try t.scatterAdding(axis: axis, index: index, into: target) }
        return out
    }
}
