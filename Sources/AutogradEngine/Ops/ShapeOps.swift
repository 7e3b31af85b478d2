/// reshape, expand, permute: forward and derivative rules side by side.
extension Tensor {
    /// The same elements with another shape of equal element count; shares storage.
    package func reshaped(_ newShape: [Int]) throws -> Tensor {
        let n = try Shape.count(newShape)
        guard n == count else {
            throw AutogradError.shape("reshape: shape \(newShape) (\(n) elements) does not match \(shape) (\(count) elements)")
        }
        // Always a new tensor object (sharing storage), never `self`: a result is never the
        // same object as its input, even when the op changes nothing.
        let out = Tensor(shape: newShape, storage: storage)
        if Tensor.shouldRecord(self) {
            let inputShape = shape
            out.record("reshape", self) { g, _ in InputGradients(try g.reshaped(inputShape)) }
        }
        if Trace.isRecording { Trace.note(out, "reshape", [self], kernel: .view) { ins in try ins[0].reshaped(newShape) } }
        try out.deriveTangent(from: self) { t in try t.reshaped(newShape) }
        return out
    }

    /// This tensor broadcast to `target` (NumPy rules), copied out contiguously.
    package func expanded(to target: [Int]) throws -> Tensor {
        let full = try Shape.broadcast(shape, target)
        guard full == target else {
            throw AutogradError.shape("expand: shape \(shape) cannot be expanded to \(target)")
        }
        if target == shape { return try reshaped(shape) }
        let out = try Tensor(uninitialized: target, dtype: dtype)
        let strides = Shape.broadcastStrides(shape, to: target)
        switch dtype {
        case .float32: Elementwise.gather(buffer(Float.self), strides: strides, into: out.buffer(Float.self), shape: target)
        case .float64: Elementwise.gather(buffer(Double.self), strides: strides, into: out.buffer(Double.self), shape: target)
        case .int64: Elementwise.gather(elements(Int64.self), strides: strides, into: out.elements(Int64.self), shape: target)
        case .bool: Elementwise.gather(elements(UInt8.self), strides: strides, into: out.elements(UInt8.self), shape: target)
        }
        if Tensor.shouldRecord(self) {
            // Backward sums the gradient back to this tensor's shape (Tensor.reduced(toShape:)).
            out.record("expand", self) { g, _ in InputGradients(g) }
        }
        if Trace.isRecording {
            let inputShape = shape
            Trace.note(out, "expand", [self], kernel: Tensor.gatherKernel(dtype, from: inputShape, strides: strides, to: target)) { ins in try ins[0].expanded(to: target) }
        }
        try out.deriveTangent(from: self) { t in try t.expanded(to: target) }
        return out
    }

    /// The axes reordered: result axis i is this tensor's axis perm[i].
    package func permuted(_ perm: [Int]) throws -> Tensor {
        guard perm.count == rank, Set(perm) == Set(0..<rank) else {
            throw AutogradError.argument("permute: \(perm) is not a permutation of the \(rank) axes")
        }
        if perm == Array(0..<rank) { return try reshaped(shape) }
        let own = Shape.strides(shape)
        let newShape = perm.map { shape[$0] }
        let strides = perm.map { own[$0] }
        let out = try Tensor(uninitialized: newShape, dtype: dtype)
        switch dtype {
        case .float32: Elementwise.gather(buffer(Float.self), strides: strides, into: out.buffer(Float.self), shape: newShape)
        case .float64: Elementwise.gather(buffer(Double.self), strides: strides, into: out.buffer(Double.self), shape: newShape)
        case .int64: Elementwise.gather(elements(Int64.self), strides: strides, into: out.elements(Int64.self), shape: newShape)
        case .bool: Elementwise.gather(elements(UInt8.self), strides: strides, into: out.elements(UInt8.self), shape: newShape)
        }
        if Tensor.shouldRecord(self) {
            var inverse = [Int](repeating: 0, count: perm.count)
            for (i, p) in perm.enumerated() { inverse[p] = i }
            out.record("permute", self) { g, _ in InputGradients(try g.permuted(inverse)) }
        }
        if Trace.isRecording {
            let inputShape = shape
            Trace.note(out, "permute", [self], kernel: Tensor.gatherKernel(dtype, from: inputShape, strides: strides, to: newShape)) { ins in try ins[0].permuted(perm) }
        }
        try out.deriveTangent(from: self) { t in try t.permuted(perm) }
        return out
    }

    /// Axes `a` and `b` swapped (negative axes count from the end).
    package func transposed(_ a: Int = -2, _ b: Int = -1) throws -> Tensor {
        let ra = a < 0 ? a + rank : a, rb = b < 0 ? b + rank : b
        guard ra >= 0 && ra < rank && rb >= 0 && rb < rank else {
            throw AutogradError.argument("transpose: axes \(a), \(b) out of range for rank \(rank)")
        }
        var perm = Array(0..<rank)
        perm.swapAt(ra, rb)
        return try permuted(perm)
    }
}

/// squeeze and unsqueeze: reshapes that name the axes they drop or add.
extension Tensor {
    /// Without the given extent-1 axes (empty: every extent-1 axis).
    package func squeezed(_ axes: [Int] = []) throws -> Tensor {
        let drop: [Int]
        if axes.isEmpty {
            drop = shape.indices.filter { shape[$0] == 1 }
        } else {
            drop = try Shape.normalizeAxes(axes, rank: rank)
            for a in drop where shape[a] != 1 {
                throw AutogradError.shape("squeeze: axis \(a) has extent \(shape[a]), not 1")
            }
        }
        return try reshaped(shape.indices.filter { !drop.contains($0) }.map { shape[$0] })
    }

    /// With a new extent-1 axis at position `axis` of the result (negative counts from the end).
    package func unsqueezed(_ axis: Int) throws -> Tensor {
        guard rank < Shape.maxRank else {
            throw AutogradError.argument("unsqueeze: the result would exceed the maximum rank \(Shape.maxRank)")
        }
        guard axis >= -(rank + 1) && axis <= rank else {
            throw AutogradError.argument("unsqueeze: axis \(axis) is outside -\(rank + 1)...\(rank) for a tensor of rank \(rank)")
        }
        let a = axis < 0 ? axis + rank + 1 : axis
        var newShape = shape
        newShape.insert(1, at: a)
        return try reshaped(newShape)
    }
}
