/// Ops that make or read int64 indices and bool masks: argmax, argmin, topk, one_hot,
/// embedding, masked_fill, to_dtype, logical not/and/or, and cross_entropy with an int64 label
/// tensor. Results that are indices or masks carry no gradient; values picked by index do.
extension Tensor {
    /// The index of the largest element along `axis` (nil: of the flattened tensor, a 0-d
    /// result), as int64. nan counts as the largest (the first nan wins), and of equal maxima
    /// the first index wins, as torch.argmax.
    package func argmax(axis: Int? = nil, keepDims: Bool = false) throws -> Tensor {
        try argExtremum("argmax", axis: axis, keepDims: keepDims, largest: true)
    }

    /// The index of the smallest element along `axis`, as argmax (nan counts as the smallest).
    package func argmin(axis: Int? = nil, keepDims: Bool = false) throws -> Tensor {
        try argExtremum("argmin", axis: axis, keepDims: keepDims, largest: false)
    }

    private func argExtremum(_ name: StaticString, axis: Int?, keepDims: Bool, largest: Bool) throws -> Tensor {
        try requireFloatingPoint("\(name)")
        let flat = axis == nil
        let x = flat ? try reshaped([count]) : self
        let a = flat ? 0 : try Tensor.normalizeAxis(axis!, rank: Swift.max(rank, 1), "\(name)")
        let xs = x.rank == 0 ? try x.reshaped([1]) : x
        let n = xs.shape[a]
        guard n > 0 else { throw AutogradError.shape("\(name): cannot take the \(largest ? "largest" : "smallest") of an axis of extent 0 (shape \(shape))") }
        let outer = xs.shape[..<a].reduce(1, *), inner = xs.shape[(a + 1)...].reduce(1, *)
        var kept = xs.shape
        kept[a] = 1
        let out = try Tensor(uninitialized: kept, dtype: .int64)
        let o = out.integers()
        let v = xs.values
        for p in 0..<outer {
            for q in 0..<inner {
                var best = 0, bestValue = v[p * n * inner + q]
                if !bestValue.isNaN {
                    for j in 1..<n {
                        let y = v[(p * n + j) * inner + q]
                        if y.isNaN { best = j; break }
                        if largest ? y > bestValue : y < bestValue { best = j; bestValue = y }
                    }
                }
                o[p * inner + q] = Int64(best)
            }
        }
        let resultShape: [Int]
        if flat { resultShape = keepDims ? [Int](repeating: 1, count: rank) : [] }
        else if rank == 0 { resultShape = [] }
        else { resultShape = keepDims ? kept : kept.enumerated().filter { $0.offset != a }.map(\.element) }
        let result = Tensor(shape: resultShape, storage: out.storage)
        if Trace.isRecording { Trace.note(result, name, [self]) { ins in try ins[0].argExtremum(name, axis: axis, keepDims: keepDims, largest: largest) } }
        return result
    }

    /// The k largest (or smallest) elements along `axis` and their int64 indices, largest first
    /// (smallest first), ties in index order; nan counts as the largest. The values are picked
    /// with gather, so the gradient flows to the positions picked.
    package func topk(_ k: Int, axis: Int = -1, largest: Bool = true) throws -> (values: Tensor, indices: Tensor) {
        try requireFloatingPoint("topk")
        guard rank > 0 else { throw AutogradError.shape("topk: the input is 0-d; it needs an axis") }
        let a = try Tensor.normalizeAxis(axis, rank: rank, "topk")
        let n = shape[a]
        guard k >= 0 && k <= n else { throw AutogradError.argument("topk: k = \(k) is outside 0...\(n) (the extent of axis \(a))") }
        let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
        var outShape = shape
        outShape[a] = k
        let total = try Shape.count(outShape)
        var index = [Int](repeating: 0, count: total)
        let v = values
        // No element: nothing to order (and outer or n may be huge beside an extent 0).
        var lane = [Int](repeating: 0, count: count == 0 ? 0 : n)
        for p in 0..<(count == 0 ? 0 : outer) {
            for q in 0..<inner {
                for j in 0..<n { lane[j] = j }
                // "Before" in the result order: by value (nan counts as the largest: first for
                // the largest, last for the smallest), then by index.
                func before(_ i: Int, _ j: Int) -> Bool {
                    let x = v[(p * n + i) * inner + q], y = v[(p * n + j) * inner + q]
                    if x.isNaN || y.isNaN {
                        if x.isNaN && y.isNaN { return i < j }
                        return largest ? x.isNaN : y.isNaN
                    }
                    if x != y { return largest ? x > y : x < y }
                    return i < j
                }
                lane.sort(by: before)
                for j in 0..<k { index[(p * k + j) * inner + q] = lane[j] }
            }
        }
        let indices = try Tensor(uninitialized: outShape, dtype: .int64)
        let ip = indices.integers()
        for i in 0..<total { ip[i] = Int64(index[i]) }
        if Trace.isRecording { Trace.note(indices, "topk_indices", [self]) { ins in try ins[0].topk(k, axis: axis, largest: largest).indices } }
        if Trace.recorder != nil && Tensor.shouldRecord(self) {
            // gather's backward holds these positions as numbers: a replay with new values
            // would send gradients to the old positions.
            Trace.refuse("topk's values have a gradient to positions found at capture time; a replay could not move it")
        }
        let picked = try gathering(axis: a, index: index, indexShape: outShape)
        return (picked, indices)
    }

    /// This int64 tensor as one-hot rows: shape + [classes], 1 at each index, 0 elsewhere, in
    /// `dtype`. classes = -1 takes the largest index + 1 (as torch.nn.functional.one_hot).
    package func oneHot(classes: Int = -1, dtype target: DType = .float32) throws -> Tensor {
        guard dtype == .int64 else { throw AutogradError.dtype("one_hot: indices must be int64, got \(dtype)") }
        guard classes >= -1 else { throw AutogradError.argument("one_hot: the number of classes must be -1 or at least 0, got \(classes)") }
        guard target != .bool else { throw AutogradError.dtype("one_hot: the result is float32, float64 or int64, not bool") }
        guard rank < Shape.maxRank else { throw AutogradError.shape("one_hot: a rank-\(rank) index tensor gives a result above the maximum rank \(Shape.maxRank)") }
        let idx = integers()
        var c = classes
        if c == -1 {
            guard count > 0 else { throw AutogradError.argument("one_hot: classes = -1 needs at least one index to infer the number of classes from") }
            let (top, overflow) = Int(idx.max()!).addingReportingOverflow(1)
            guard !overflow else { throw AutogradError.argument("one_hot: the largest index \(idx.max()!) leaves no room for a number of classes") }
            c = top
        }
        for (i, j) in idx.enumerated() where j < 0 || j >= c {
            throw AutogradError.argument("one_hot: index \(j) (element \(i)) is out of range for \(c) classes")
        }
        let out = try Tensor.zeros(shape + [c], dtype: target)
        if let raw = out.storage.raw {
            for (i, j) in idx.enumerated() {
                let at = i * c + Int(j)
                switch target {
                case .float32: raw.assumingMemoryBound(to: Float.self)[at] = 1
                case .float64: raw.assumingMemoryBound(to: Double.self)[at] = 1
                case .int64: raw.assumingMemoryBound(to: Int64.self)[at] = 1
                case .bool: break  // refused above
                }
            }
        }
        if Trace.isRecording { Trace.note(out, "one_hot", [self]) { ins in try ins[0].oneHot(classes: classes, dtype: target) } }
        return out
    }

    /// The checked positions of an int64 index tensor into an axis of extent `n` (0 <= i < n).
    func indexPositions(extent n: Int, _ op: String) throws -> [Int] {
        guard dtype == .int64 else { throw AutogradError.dtype("\(op): indices must be int64, got \(dtype)") }
        return try integers().enumerated().map { k, i in
            guard i >= 0 && i < n else { throw AutogradError.argument("\(op): index \(i) (element \(k)) is out of range for \(n) rows") }
            return Int(i)
        }
    }

    /// Rows of `weight` (V, D) picked by an int64 tensor of indices in 0..<V: a tensor of
    /// shape indices.shape + [D]. The gradient adds into the rows picked (a row picked many
    /// times sums its gradients in float64, see Indexing.add). The rule reads the indices
    /// tensor itself (saved), so a replayed capture uses the indices it is given.
    package static func embedding(_ indices: Tensor, weight: Tensor) throws -> Tensor {
        try weight.requireFloatingPoint("embedding", "weight")
        guard weight.rank == 2 else { throw AutogradError.shape("embedding: weight must be (rows, width), got \(weight.shape)") }
        guard indices.rank < Shape.maxRank else {
            throw AutogradError.shape("embedding: a rank-\(indices.rank) index tensor gives a result above the maximum rank \(Shape.maxRank)")
        }
        let (rows, width) = (weight.shape[0], weight.shape[1])
        let idx = try indices.indexPositions(extent: rows, "embedding")
        let out = try Tensor(uninitialized: indices.shape + [width], dtype: weight.dtype)
        switch weight.dtype {
        case .float32: Indexing.select(weight.buffer(Float.self), outer: 1, extent: rows, inner: width, indices: idx, into: out.buffer(Float.self))
        case .float64: Indexing.select(weight.buffer(Double.self), outer: 1, extent: rows, inner: width, indices: idx, into: out.buffer(Double.self))
        case .int64, .bool: break  // unreachable: weight is floating point (checked above)
        }
        if shouldRecord(weight) {
            out.record("embedding", inputs: [weight], saved: [indices]) { g, node in
                InputGradients(try embeddingAdding(g, indices: node.saved(0), rows: rows))
            }
        }
        if Trace.isRecording { Trace.note(out, "embedding", [indices, weight]) { ins in try embedding(ins[0], weight: ins[1]) } }
        try out.deriveTangent(from: weight) { t in try embedding(indices, weight: t) }
        return out
    }

    /// The transpose of embedding: zeros of (rows, D) with each row of g (indices.shape + [D])
    /// added at its index. embedding's VJP, and embedding is its VJP.
    static func embeddingAdding(_ g: Tensor, indices: Tensor, rows: Int) throws -> Tensor {
        try g.requireFloatingPoint("embedding_backward")
        let width = g.shape.last ?? 1
        let idx = try indices.indexPositions(extent: rows, "embedding_backward")
        let flat = try g.reshaped([idx.count, width])
        let out = try Trace.suspended { try flat.indexAdding(axis: 0, idx, extent: rows) }
        if shouldRecord(g) {
            out.record("embedding_backward", inputs: [g], saved: [indices]) { gg, node in
                InputGradients(try embedding(node.saved(0), weight: gg))
            }
        }
        if Trace.isRecording { Trace.note(out, "embedding_backward", [g, indices]) { ins in try embeddingAdding(ins[0], indices: ins[1], rows: rows) } }
        try out.deriveTangent(from: g) { t in try embeddingAdding(t, indices: indices, rows: rows) }
        return out
    }

    /// This tensor with `value` where mask (bool, or non-zero of any dtype) holds; mask
    /// broadcasts to this tensor's shape. The gradient flows to the elements not filled.
    package func maskedFill(_ mask: Tensor, _ value: Double) throws -> Tensor {
        try requireFloatingPoint("masked_fill")
        let fits = (try? Shape.broadcast(mask.shape, shape)) == shape
        guard fits else { throw AutogradError.shape("masked_fill: mask of shape \(mask.shape) does not broadcast to the input's \(shape)") }
        return try Tensor.where(mask, constant(value), self)
    }

    /// This tensor's values in `target` dtype. Between float32 and float64 it is differentiable
    /// (the gradient is converted back); to int64 it truncates toward zero and refuses nan,
    /// inf and values out of range; to bool it is "non-zero". Records nothing for those.
    package func to(_ target: DType) throws -> Tensor {
        if target == dtype { return try reshaped(shape) }
        let out = try converted(to: target)
        if dtype.isFloatingPoint && target.isFloatingPoint {
            let source = dtype
            if Tensor.shouldRecord(self) { out.record("to_dtype", self) { g, _ in InputGradients(try g.to(source)) } }
            try out.deriveTangent(from: self) { t in try t.to(target) }
        }
        return out
    }

    /// Elementwise not of a mask (any dtype: non-zero is true), as bool.
    package func logicalNot() throws -> Tensor {
        let b = try converted(to: .bool)
        let out = try Tensor(uninitialized: shape, dtype: .bool)
        let (x, o) = (b.flags(), out.flags())
        // Any non-zero byte is true: bool values over a caller's memory may hold other bytes than 1.
        for i in 0..<o.count { o[i] = x[i] == 0 ? 1 : 0 }
        if Trace.isRecording { Trace.note(out, "logical_not", [self]) { ins in try ins[0].logicalNot() } }
        return out
    }

    /// Elementwise and of two masks (any dtypes: non-zero is true), broadcast, as bool.
    package func logicalAnd(_ other: Tensor) throws -> Tensor { try logical(other, "logical_and") { $0 & $1 } }

    /// Elementwise or of two masks (any dtypes: non-zero is true), broadcast, as bool.
    package func logicalOr(_ other: Tensor) throws -> Tensor { try logical(other, "logical_or") { $0 | $1 } }

    private func logical(_ other: Tensor, _ name: StaticString, _ f: @escaping (UInt8, UInt8) -> UInt8) throws -> Tensor {
        let shape: [Int]
        do { shape = try Shape.broadcast(self.shape, other.shape) } catch let e as AutogradError {
            throw AutogradError.shape("\(name): \(e.message)")
        }
        let (a, b) = try (converted(to: .bool).expanded(to: shape), other.converted(to: .bool).expanded(to: shape))
        let out = try Tensor(uninitialized: shape, dtype: .bool)
        let (x, y, o) = (a.flags(), b.flags(), out.flags())
        // Bytes read as 0 or 1 (non-zero is true): bool values over a caller's memory may hold others.
        for i in 0..<o.count { o[i] = f(x[i] == 0 ? 0 : 1, y[i] == 0 ? 0 : 1) }
        if Trace.isRecording { Trace.note(out, name, [self, other]) { ins in try ins[0].logical(ins[1], name, f) } }
        return out
    }

    /// The batch mean of -log_softmax(logits)[i, labels[i]] for logits (N, C) and an int64
    /// tensor of N labels in 0..<C. The labels are read through a one-hot mask (a step of its
    /// own in a capture), so a replay uses the labels it is given; the picked values are
    /// selected, never multiplied by the mask (a -inf log-probability elsewhere stays out).
    package func crossEntropy(labels: Tensor) throws -> Tensor {
        try requireFloatingPoint("cross_entropy", "logits")
        guard labels.dtype == .int64 else { throw AutogradError.dtype("cross_entropy: labels must be int64, got \(labels.dtype)") }
        guard rank == 2 else { throw AutogradError.shape("cross_entropy: logits must be (N, C), got \(shape)") }
        guard labels.rank == 1 && labels.shape[0] == shape[0] else {
            throw AutogradError.shape("cross_entropy: labels of shape \(labels.shape) for \(shape[0]) rows of logits (want (\(shape[0])))")
        }
        for (i, l) in labels.integers().enumerated() where l < 0 || l >= shape[1] {
            throw AutogradError.argument("cross_entropy: label \(l) (element \(i)) is out of range for \(shape[1]) classes")
        }
        let mask = try labels.oneHot(classes: shape[1], dtype: .int64)
        let logp = try logSoftmax(axis: 1)
        let picked = try Tensor.where(mask, logp, logp.constant(0)).sum(axes: [1])
        return try picked.mean().negated()
    }
}
