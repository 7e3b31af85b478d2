/// conv1d, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d (PyTorch's semantics, NCHW).
///
/// Convolution is a composite: `unfold` (im2col, a linear primitive whose transpose `fold` is its
/// VJP and vice versa) copies every window into a row of a matrix, then one GEMM with the
/// weight (plus bias, in the same BLAS call when groups = 1) and one permute to NCHW. So its
/// VJP, JVP, higher orders and capture come from those ops. Max pooling is a primitive that
/// saves its input: its VJP scatters the gradient to the first maximum of each window, found
/// again from the saved input (so a replay never reads a stale index), through a pair of linear
/// primitives that are each other's transpose.
extension Tensor {
    /// PyTorch's conv2d: self (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) or nil ->
    /// (N, O, OH, OW), OH = floor((H + 2 ph - dh (kH - 1) - 1) / sh) + 1 (OW likewise).
    package func conv2d(weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                       dilation: (Int, Int) = (1, 1), groups: Int = 1) throws -> Tensor {
        try convolution("conv2d", weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }

    /// PyTorch's conv1d: self (N, C, L), weight (O, C/groups, k), bias (O) or nil -> (N, O, OL),
    /// OL = floor((L + 2 padding - dilation (k - 1) - 1) / stride) + 1. conv2d over (N, C, 1, L).
    package func conv1d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0,
                       dilation: Int = 1, groups: Int = 1) throws -> Tensor {
        try requireFloatingPoint("conv1d", "x")
        try weight.requireFloatingPoint("conv1d", "weight")
        guard rank == 3 else { throw AutogradError.shape("conv1d: the input must be 3-D (N, C, L), got shape \(shape)") }
        guard weight.rank == 3 else {
            throw AutogradError.shape("conv1d: the weight must be 3-D (O, C/groups, k), got shape \(weight.shape)")
        }
        guard stride > 0 else { throw AutogradError.argument("conv1d: stride must be positive, got \(stride)") }
        guard padding >= 0 else { throw AutogradError.argument("conv1d: padding must be non-negative, got \(padding)") }
        guard dilation > 0 else { throw AutogradError.argument("conv1d: dilation must be positive, got \(dilation)") }
        let x4 = try reshaped([shape[0], shape[1], 1, shape[2]])
        let w4 = try weight.reshaped([weight.shape[0], weight.shape[1], 1, weight.shape[2]])
        let y = try x4.convolution("conv1d", weight: w4, bias: bias, stride: (1, stride), padding: (0, padding),
                                   dilation: (1, dilation), groups: groups)
        return try y.reshaped([y.shape[0], y.shape[1], y.shape[3]])
    }

    private func convolution(_ op: String, weight: Tensor, bias: Tensor?, stride: (Int, Int), padding: (Int, Int),
                             dilation: (Int, Int), groups: Int) throws -> Tensor {
        try requireFloatingPoint(op, "x")
        try weight.requireFloatingPoint(op, "weight")
        try bias?.requireFloatingPoint(op, "bias")
        guard weight.dtype == dtype else { throw AutogradError.dtype("\(op): x is \(dtype), weight is \(weight.dtype)") }
        if let bias, bias.dtype != dtype { throw AutogradError.dtype("\(op): x is \(dtype), bias is \(bias.dtype)") }
        guard rank == 4 else { throw AutogradError.shape("\(op): the input must be 4-D (N, C, H, W), got shape \(shape)") }
        guard weight.rank == 4 else {
            throw AutogradError.shape("\(op): the weight must be 4-D (O, C/groups, kH, kW), got shape \(weight.shape)")
        }
        guard groups > 0 else { throw AutogradError.argument("\(op): groups must be positive, got \(groups)") }
        let outChannels = weight.shape[0]
        guard shape[1] % groups == 0 else {
            throw AutogradError.shape("\(op): \(shape[1]) input channels are not divisible by groups = \(groups)")
        }
        guard outChannels % groups == 0 else {
            throw AutogradError.shape("\(op): \(outChannels) output channels (weight's first extent) are not divisible by groups = \(groups)")
        }
        guard weight.shape[1] == shape[1] / groups else {
            throw AutogradError.shape("\(op): weight \(weight.shape) does not fit input \(shape) with groups = \(groups) (want weight[1] = C/groups = \(shape[1] / groups))")
        }
        if let bias, bias.shape != [outChannels] {
            throw AutogradError.shape("\(op): bias has shape \(bias.shape), want [\(outChannels)]")
        }
        let g = try WindowGeometry(op, input: shape, kernel: (weight.shape[2], weight.shape[3]), stride: stride,
                                   padding: padding, dilation: dilation, groups: groups)
        let cols = try unfolded(g)
        let (k, og) = (g.groupColumns, outChannels / groups)
        if groups == 1 {
            // (N*OH*OW, K) @ (O, K)ᵀ (+ bias, in the same call): rows ordered (n, i, j), so
            // the result is NHWC, permuted to NCHW.
            let c2 = try cols.reshaped([g.rows, k]), w2 = try weight.reshaped([outChannels, k])
            let y = try bias.map { try Tensor.affine(c2, w2, $0) } ?? Tensor.gemm(c2, transA: false, w2, transB: true)
            return try y.reshaped([g.n, g.positions, outChannels]).permuted([0, 2, 1]).reshaped([g.n, outChannels, g.oh, g.ow])
        }
        // One product per group: (G, rows, K) @ (G, O/G, K)ᵀ -> (G, N, OH*OW, O/G).
        let y = try Tensor.gemm(cols, transA: false, weight.reshaped([groups, og, k]), transB: true)
        let out = try y.reshaped([groups, g.n, g.positions, og]).permuted([1, 0, 3, 2]).reshaped([g.n, outChannels, g.oh, g.ow])
        guard let bias else { return out }
        return try out.adding(bias.reshaped([1, outChannels, 1, 1]))
    }

    /// PyTorch's max_pool2d: self (N, C, H, W) -> (N, C, OH, OW), the maximum of each kH x kW
    /// window; stride nil means the kernel size; padding (at most half the kernel) counts as
    /// -inf. The gradient goes to one position per window: its first maximum in scan order.
    package func maxPool2d(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws -> Tensor {
        try requireFloatingPoint("max_pool2d", "x")
        let g = try Tensor.poolGeometry("max_pool2d", shape, kernel: kernel, stride: stride, padding: padding)
        return try maxPooled(g)
    }

    /// PyTorch's avg_pool2d: the mean of each window (padding counts as zeros); with
    /// countIncludePad false the padded positions are left out of each window's divisor.
    package func avgPool2d(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0),
                          countIncludePad: Bool = true) throws -> Tensor {
        try requireFloatingPoint("avg_pool2d", "x")
        let g = try Tensor.poolGeometry("avg_pool2d", shape, kernel: kernel, stride: stride, padding: padding)
        return try averagePooled(g, countIncludePad: countIncludePad)
    }

    /// avg_pool2d over checked geometry: each (image, channel) plane unfolded as one channel,
    /// then a mean (or sum / count of input positions) along each window's taps.
    private func averagePooled(_ g: WindowGeometry, countIncludePad: Bool) throws -> Tensor {
        var planes = g
        (planes.n, planes.c) = (g.n * g.c, 1)
        let cols = try reshaped(planes.inputShape).unfolded(planes)  // (1, N*C*OH*OW, kH*kW)
        let pooled: Tensor
        if countIncludePad {
            pooled = try cols.mean(axes: [2])
        } else {
            func inside(_ i: Int, _ s: Int, _ p: Int, _ k: Int, _ extent: Int) -> Int {
                Swift.min(extent, i * s - p + k) - Swift.max(0, i * s - p)
            }
            var counts = [Double]()
            counts.reserveCapacity(g.positions)
            for i in 0..<g.oh {
                for j in 0..<g.ow { counts.append(Double(inside(i, g.sh, g.ph, g.kh, g.h) * inside(j, g.sw, g.pw, g.kw, g.w))) }
            }
            let divisor = try Tensor(counts, shape: [g.positions], dtype: dtype)
            pooled = try cols.sum(axes: [2]).reshaped([g.n * g.c, g.positions]).dividing(by: divisor)
        }
        return try pooled.reshaped([g.n, g.c, g.oh, g.ow])
    }

    /// PyTorch's adaptive_avg_pool2d: self (N, C, H, W) -> (N, C, OH, OW), output (i, j) the mean
    /// of rows floor(i H / OH) ..< ceil((i + 1) H / OH) and the columns alike.
    package func adaptiveAvgPool2d(outputSize: (Int, Int)) throws -> Tensor {
        let op = "adaptive_avg_pool2d"
        try requireFloatingPoint(op, "x")
        guard rank == 4 else { throw AutogradError.shape("\(op): the input must be 4-D (N, C, H, W), got shape \(shape)") }
        let (oh, ow) = outputSize
        guard oh >= 0 && ow >= 0 else {
            throw AutogradError.argument("\(op): output size must be non-negative, got (\(oh), \(ow))")
        }
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        guard h > 0 && w > 0 else {
            throw AutogradError.shape("\(op): the input's spatial extents must be positive, got shape \(shape)")
        }
        if try Shape.count([n, c, oh, ow]) == 0 {
            // Nothing to average: the empty result from its shape alone (no averaging matrix of
            // the output's extents, which may be huge beside an extent 0), zero gradient.
            let out = try Tensor(uninitialized: [n, c, oh, ow], dtype: dtype)
            if Tensor.shouldRecord(self) {
                let (inputShape, dt) = (shape, dtype)
                out.record("adaptive_avg_pool2d", self) { _, _ in InputGradients(try Tensor.zeros(inputShape, dtype: dt)) }
            }
            if Trace.isRecording { Trace.note(out, "adaptive_avg_pool2d", [self]) { ins in try ins[0].adaptiveAvgPool2d(outputSize: outputSize) } }
            try out.deriveTangent(from: self) { t in try Tensor.zeros(t.shape.prefix(2) + [oh, ow], dtype: t.dtype) }
            return out
        }
        if oh == 1 && ow == 1 { return try mean(axes: [2, 3], keepDims: true) }
        if oh > 0 && ow > 0 && h % oh == 0 && w % ow == 0 {
            // Equal windows that tile the input: avg_pool2d with kernel = stride = H/OH x W/OW.
            let g = try WindowGeometry(op, input: shape, kernel: (h / oh, w / ow), stride: (h / oh, w / ow),
                                       padding: (0, 0), dilation: (1, 1), groups: 1)
            return try averagePooled(g, countIncludePad: true)
        }
        /// (out, extent) averaging matrix: row i holds 1/len over its window. Its size is
        /// checked first: an output extent far beyond the input's is an error, not a trap.
        func averaging(_ out: Int, _ extent: Int) throws -> [Double] {
            let (size, overflow) = out.multipliedReportingOverflow(by: extent)
            guard !overflow && size <= 1 << 28 else {
                throw AutogradError.shape("\(op): an output extent of \(out) over an input extent of \(extent) needs a \(out) x \(extent) averaging matrix, more than the 2^28 entries allowed")
            }
            var m = [Double](repeating: 0, count: size)
            for i in 0..<out {
                let lo = i * extent / out, hi = ((i + 1) * extent + out - 1) / out
                for r in lo..<hi { m[i * extent + r] = 1 / Double(hi - lo) }
            }
            return m
        }
        let ph = try averaging(oh, h), pw = try averaging(ow, w)
        let (hw, ohw) = try (Shape.count([h, w]), Shape.count([oh, ow]))
        let (work, overflow) = hw.multipliedReportingOverflow(by: ohw)
        if !overflow && work <= 1 << 16 {
            // Small planes: one product with the Kronecker product P_h ⊗ P_w (OH*OW, H*W).
            var p = [Double](repeating: 0, count: ohw * hw)
            for i in 0..<oh { for j in 0..<ow { for r in 0..<h where ph[i * h + r] != 0 { for q in 0..<w where pw[j * w + q] != 0 {
                p[(i * ow + j) * hw + r * w + q] = ph[i * h + r] * pw[j * w + q]
            } } } }
            let y = try Tensor.gemm(reshaped([n * c, hw]), transA: false, Tensor(p, shape: [ohw, hw], dtype: dtype), transB: true)
            return try y.reshaped([n, c, oh, ow])
        }
        // Large planes: columns then rows, (N*C*H, W) @ P_wᵀ, transposed, (N*C*OW, H) @ P_hᵀ.
        let byColumns = try Tensor.gemm(reshaped([n * c * h, w]), transA: false, Tensor(pw, shape: [ow, w], dtype: dtype), transB: true)
        let turned = try byColumns.reshaped([n * c, h, ow]).permuted([0, 2, 1]).reshaped([n * c * ow, h])
        let byRows = try Tensor.gemm(turned, transA: false, Tensor(ph, shape: [oh, h], dtype: dtype), transB: true)
        return try byRows.reshaped([n * c, ow, oh]).permuted([0, 2, 1]).reshaped([n, c, oh, ow])
    }

    /// A pool's geometry: stride nil = the kernel; padding at most half the kernel (PyTorch's
    /// rule, which also keeps an input position in every window).
    static func poolGeometry(_ op: String, _ shape: [Int], kernel: (Int, Int), stride: (Int, Int)?,
                             padding: (Int, Int)) throws -> WindowGeometry {
        guard kernel.0 > 0 && kernel.1 > 0 else {
            throw AutogradError.argument("\(op): kernel size must be positive, got (\(kernel.0), \(kernel.1))")
        }
        guard padding.0 >= 0 && padding.1 >= 0 else {
            throw AutogradError.argument("\(op): padding must be non-negative, got (\(padding.0), \(padding.1))")
        }
        guard padding.0 <= kernel.0 / 2 && padding.1 <= kernel.1 / 2 else {
            throw AutogradError.argument("\(op): padding must be at most half the kernel size, got padding (\(padding.0), \(padding.1)) for kernel (\(kernel.0), \(kernel.1))")
        }
        return try WindowGeometry(op, input: shape, kernel: kernel, stride: stride ?? kernel, padding: padding,
                                  dilation: (1, 1), groups: 1)
    }
}

// MARK: - The primitives: unfold/fold and max pooling's select/scatter pair

extension Tensor {
    /// im2col: this (N, C, H, W) tensor's windows as rows of (G, N*OH*OW, C/G*kH*kW) (see
    /// Unfold.unfold). Linear: its VJP is fold, its JVP unfold of the tangent.
    func unfolded(_ g: WindowGeometry) throws -> Tensor {
        guard shape == g.inputShape else { throw AutogradError.internal("unfold: input \(shape) for geometry \(g.inputShape)") }
        let out = try Tensor(uninitialized: g.columnShape, dtype: dtype)
        Tensor.runUnfold(dtype, storage.raw, out.storage.raw, g)
        if Tensor.shouldRecord(self) {
            out.record("unfold", self) { grad, _ in InputGradients(try grad.folded(g)) }
        }
        if Trace.isRecording {
            let dtype = dtype
            Trace.note(out, "unfold", [self], kernel: .buffers { args, o in Tensor.runUnfold(dtype, args[0], o, g) }) { ins in
                try ins[0].unfolded(g)
            }
        }
        try out.deriveTangent(from: self) { t in try t.unfolded(g) }
        return out
    }

    /// col2im: the transpose of unfold, (G, N*OH*OW, C/G*kH*kW) -> (N, C, H, W), overlaps summed.
    func folded(_ g: WindowGeometry) throws -> Tensor {
        guard shape == g.columnShape else { throw AutogradError.internal("fold: input \(shape) for geometry \(g.columnShape)") }
        let out = try Tensor(uninitialized: g.inputShape, dtype: dtype)
        Tensor.runFold(dtype, storage.raw, out.storage.raw, g)
        if Tensor.shouldRecord(self) {
            out.record("fold", self) { grad, _ in InputGradients(try grad.unfolded(g)) }
        }
        if Trace.isRecording {
            let dtype = dtype
            Trace.note(out, "fold", [self], kernel: .buffers { args, o in Tensor.runFold(dtype, args[0], o, g) }) { ins in
                try ins[0].folded(g)
            }
        }
        try out.deriveTangent(from: self) { t in try t.folded(g) }
        return out
    }

    private static func runUnfold(_ dtype: DType, _ x: UnsafeMutableRawPointer?, _ out: UnsafeMutableRawPointer?, _ g: WindowGeometry) {
        guard g.rows > 0 && g.groupColumns > 0, let x, let out else { return }
        if dtype == .float32 {
            Unfold.unfold(UnsafePointer(x.assumingMemoryBound(to: Float.self)), into: out.assumingMemoryBound(to: Float.self), g)
        } else {
            Unfold.unfold(UnsafePointer(x.assumingMemoryBound(to: Double.self)), into: out.assumingMemoryBound(to: Double.self), g)
        }
    }

    private static func runFold(_ dtype: DType, _ cols: UnsafeMutableRawPointer?, _ out: UnsafeMutableRawPointer?, _ g: WindowGeometry) {
        // Columns are never empty while the input is not (OH, OW >= 1 and C > 0 there).
        guard g.n > 0 && g.c > 0, let cols, let out else { return }
        if dtype == .float32 {
            Unfold.fold(UnsafePointer(cols.assumingMemoryBound(to: Float.self)), into: out.assumingMemoryBound(to: Float.self), g)
        } else {
            Unfold.fold(UnsafePointer(cols.assumingMemoryBound(to: Double.self)), into: out.assumingMemoryBound(to: Double.self), g)
        }
    }

    /// max_pool2d's primitive: the first maximum of each window. When a gradient or a tangent
    /// will be needed it also keeps where each maximum was (an int64 tensor of offsets within
    /// the plane, as PyTorch's indices), which the rule reads: the backward scatters by them
    /// instead of searching the windows again. In a capture the indices are a step of their
    /// own (found again from the input on each replay), so a replay never reads stale ones.
    func maxPooled(_ g: WindowGeometry) throws -> Tensor {
        let outShape = [g.n, g.c, g.oh, g.ow]
        let out = try Tensor(uninitialized: outShape, dtype: dtype)
        let record = Tensor.shouldRecord(self)
        let indices = record || tangentBox != nil ? try Tensor(uninitialized: outShape, dtype: .int64) : nil
        Tensor.runMaxPool(dtype, storage.raw, out.storage.raw, indices?.storage.raw, g)
        if Trace.isRecording {
            // Noted before the node exists: a capture's steps (a recomputable graph gets the
            // node's own forward further down). With indices, a replay finds them once and
            // reads the maxima through them (a gather), rather than scanning the windows twice.
            let dtype = dtype
            if let indices {
                Trace.note(indices, "max_pool2d_indices", [self], kernel: .buffers { args, o in Tensor.runMaxPoolIndices(dtype, args[0], o, g) }) { ins in
                    let i = try Tensor(uninitialized: outShape, dtype: .int64)
                    Tensor.runMaxPoolIndices(ins[0].dtype, ins[0].storage.raw, i.storage.raw, g)
                    return i
                }
                Trace.note(out, "max_pool2d", [self, indices], kernel: .buffers { args, o in Tensor.runPoolSelect(dtype, args[0], args[1], o, g) }) { ins in
                    let y = try Tensor(uninitialized: outShape, dtype: ins[0].dtype)
                    Tensor.runPoolSelect(ins[0].dtype, ins[0].storage.raw, ins[1].storage.raw, y.storage.raw, g)
                    return y
                }
            } else {
                Trace.note(out, "max_pool2d", [self], kernel: .buffers { args, o in Tensor.runMaxPool(dtype, args[0], o, nil, g) }) { ins in
                    try ins[0].maxPooled(g)
                }
            }
        }
        if record, let indices {
            out.record("max_pool2d", inputs: [self], saved: [indices]) { grad, node in
                InputGradients(try grad.poolScattered(indices: node.saved(0), g))
            }
            if Trace.isRecording {
                // A recompute reruns this forward: it renews the saved indices in place too, so
                // the rule reads the maxima of the new values.
                Trace.noteNode(out, "max_pool2d", [self]) { ins in
                    let y = try Tensor(uninitialized: outShape, dtype: ins[0].dtype)
                    Tensor.runMaxPool(ins[0].dtype, ins[0].storage.raw, y.storage.raw, indices.storage.raw, g)
                    return y
                }
            }
        }
        if let indices { try out.deriveTangent(from: self) { t in try t.poolSelected(indices: indices, g) } }
        return out
    }

    /// This tensor (the input's shape) read at `indices` (max pooling's, (N, C, OH, OW)) in
    /// each plane: max pooling's derivative applied to this tensor. Linear in self.
    func poolSelected(indices: Tensor, _ g: WindowGeometry) throws -> Tensor {
        let out = try Tensor(uninitialized: [g.n, g.c, g.oh, g.ow], dtype: dtype)
        Tensor.runPoolSelect(dtype, storage.raw, indices.storage.raw, out.storage.raw, g)
        if Tensor.shouldRecord(self) {
            out.record("max_pool2d_select", inputs: [self], saved: [indices]) { grad, node in
                InputGradients(try grad.poolScattered(indices: node.saved(0), g))
            }
        }
        if Trace.isRecording {
            let dtype = dtype
            Trace.note(out, "max_pool2d_select", [self, indices], kernel: .buffers { args, o in Tensor.runPoolSelect(dtype, args[0], args[1], o, g) }) { ins in
                try ins[0].poolSelected(indices: ins[1], g)
            }
        }
        try out.deriveTangent(from: self) { t in try t.poolSelected(indices: indices, g) }
        return out
    }

    /// This (N, C, OH, OW) tensor added, from zeros of the input's shape, at `indices` in each
    /// plane: the transpose of poolSelected (max pooling's VJP).
    func poolScattered(indices: Tensor, _ g: WindowGeometry) throws -> Tensor {
        let out = try Tensor(uninitialized: g.inputShape, dtype: dtype)
        Tensor.runPoolScatter(dtype, storage.raw, indices.storage.raw, out.storage.raw, g)
        if Tensor.shouldRecord(self) {
            out.record("max_pool2d_backward", inputs: [self], saved: [indices]) { grad, node in
                InputGradients(try grad.poolSelected(indices: node.saved(0), g))
            }
        }
        if Trace.isRecording {
            let dtype = dtype
            Trace.note(out, "max_pool2d_backward", [self, indices], kernel: .buffers { args, o in Tensor.runPoolScatter(dtype, args[0], args[1], o, g) }) { ins in
                try ins[0].poolScattered(indices: ins[1], g)
            }
        }
        try out.deriveTangent(from: self) { t in try t.poolScattered(indices: indices, g) }
        return out
    }

    private static func runMaxPool(_ dtype: DType, _ x: UnsafeMutableRawPointer?, _ out: UnsafeMutableRawPointer?,
                                   _ indices: UnsafeMutableRawPointer?, _ g: WindowGeometry) {
        guard g.n > 0 && g.c > 0, let x, let out else { return }
        let ip = indices?.assumingMemoryBound(to: Int64.self)
        if dtype == .float32 {
            Unfold.maxPool(UnsafePointer(x.assumingMemoryBound(to: Float.self)), into: out.assumingMemoryBound(to: Float.self), indices: ip, g)
        } else {
            Unfold.maxPool(UnsafePointer(x.assumingMemoryBound(to: Double.self)), into: out.assumingMemoryBound(to: Double.self), indices: ip, g)
        }
    }

    private static func runMaxPoolIndices(_ dtype: DType, _ x: UnsafeMutableRawPointer?, _ indices: UnsafeMutableRawPointer?, _ g: WindowGeometry) {
        guard g.n > 0 && g.c > 0, let x, let indices else { return }
        let ip = indices.assumingMemoryBound(to: Int64.self)
        if dtype == .float32 {
            Unfold.maxPoolIndices(UnsafePointer(x.assumingMemoryBound(to: Float.self)), into: ip, g)
        } else {
            Unfold.maxPoolIndices(UnsafePointer(x.assumingMemoryBound(to: Double.self)), into: ip, g)
        }
    }

    private static func runPoolSelect(_ dtype: DType, _ v: UnsafeMutableRawPointer?, _ indices: UnsafeMutableRawPointer?,
                                      _ out: UnsafeMutableRawPointer?, _ g: WindowGeometry) {
        guard g.n > 0 && g.c > 0, let v, let indices, let out else { return }
        let ip = UnsafePointer(indices.assumingMemoryBound(to: Int64.self))
        if dtype == .float32 {
            Unfold.poolSelect(UnsafePointer(v.assumingMemoryBound(to: Float.self)), indices: ip, into: out.assumingMemoryBound(to: Float.self), g)
        } else {
            Unfold.poolSelect(UnsafePointer(v.assumingMemoryBound(to: Double.self)), indices: ip, into: out.assumingMemoryBound(to: Double.self), g)
        }
    }

    private static func runPoolScatter(_ dtype: DType, _ gOut: UnsafeMutableRawPointer?, _ indices: UnsafeMutableRawPointer?,
                                       _ out: UnsafeMutableRawPointer?, _ g: WindowGeometry) {
        guard g.n > 0 && g.c > 0, let gOut, let indices, let out else { return }
        let ip = UnsafePointer(indices.assumingMemoryBound(to: Int64.self))
        if dtype == .float32 {
            Unfold.poolScatter(UnsafePointer(gOut.assumingMemoryBound(to: Float.self)), indices: ip, into: out.assumingMemoryBound(to: Float.self), g)
        } else {
            Unfold.poolScatter(UnsafePointer(gOut.assumingMemoryBound(to: Double.self)), indices: ip, into: out.assumingMemoryBound(to: Double.self), g)
        }
    }
}
