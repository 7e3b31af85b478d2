// The tensor math of the Swift API: each method and operator runs the engine's op of the same
// name and stops the program with the library's message on misuse (see Autograd.swift).
// `@_disfavoredOverload` only matters inside this package, where the engine's throwing form of
// the same name is visible too (`package` access) and must win in the bodies below; a client
// of the package sees only these.

extension Tensor {
    @_disfavoredOverload
    public func adding(_ other: Tensor) -> Tensor { Tensor.checked { try self.adding(other) } }

    @_disfavoredOverload
    public func subtracting(_ other: Tensor) -> Tensor { Tensor.checked { try self.subtracting(other) } }

    @_disfavoredOverload
    public func multiplying(_ other: Tensor) -> Tensor { Tensor.checked { try self.multiplying(other) } }

    @_disfavoredOverload
    public func dividing(by other: Tensor) -> Tensor { Tensor.checked { try self.dividing(by: other) } }

    /// self ** exponent elementwise. d/da = b·a^(b-1), taken as 0 where b == 0; d/db = ln(a)·a^b,
    /// taken as 0 where a == 0 and b >= 0 (PyTorch's conventions). A derivative taken as 0 is
    /// selected (0 for any incoming gradient, inf and nan included) and is a constant: its own
    /// derivatives are 0 at every order (PyTorch gives nan for some of them, from 0·inf).
    @_disfavoredOverload
    public func pow(_ exponent: Tensor) -> Tensor { Tensor.checked { try self.pow(exponent) } }

    /// The larger of the two elementwise; ties split the gradient evenly; nan propagates.
    @_disfavoredOverload
    public func maximum(_ other: Tensor) -> Tensor { Tensor.checked { try self.maximum(other) } }

    /// The smaller of the two elementwise; ties split the gradient evenly; nan propagates.
    @_disfavoredOverload
    public func minimum(_ other: Tensor) -> Tensor { Tensor.checked { try self.minimum(other) } }

    /// The angle of the point (other, self) in [-π, π], elementwise, broadcasting: C's
    /// atan2(self, other), signed zeros included (atan2(0, -0) = π). d/dself = other/r²,
    /// d/dother = -self/r² with r² = self² + other², computed without forming r² (no overflow or
    /// underflow where the result is representable); at (0, 0) both are taken as 0 (as PyTorch),
    /// selected.
    @_disfavoredOverload
    public func atan2(_ other: Tensor) -> Tensor { Tensor.checked { try self.atan2(other) } }

    @_disfavoredOverload
    public static func + (a: Tensor, b: Tensor) -> Tensor { Tensor.checked { try a + b } }

    @_disfavoredOverload
    public static func - (a: Tensor, b: Tensor) -> Tensor { Tensor.checked { try a - b } }

    @_disfavoredOverload
    public static func * (a: Tensor, b: Tensor) -> Tensor { Tensor.checked { try a * b } }

    @_disfavoredOverload
    public static func / (a: Tensor, b: Tensor) -> Tensor { Tensor.checked { try a / b } }

    @_disfavoredOverload
    public static prefix func - (a: Tensor) -> Tensor { Tensor.checked { try -a } }

    @_disfavoredOverload
    public static func + (a: Tensor, s: Double) -> Tensor { Tensor.checked { try a + s } }

    @_disfavoredOverload
    public static func + (s: Double, a: Tensor) -> Tensor { Tensor.checked { try s + a } }

    @_disfavoredOverload
    public static func - (a: Tensor, s: Double) -> Tensor { Tensor.checked { try a - s } }

    @_disfavoredOverload
    public static func - (s: Double, a: Tensor) -> Tensor { Tensor.checked { try s - a } }

    @_disfavoredOverload
    public static func * (a: Tensor, s: Double) -> Tensor { Tensor.checked { try a * s } }

    @_disfavoredOverload
    public static func * (s: Double, a: Tensor) -> Tensor { Tensor.checked { try s * a } }

    @_disfavoredOverload
    public static func / (a: Tensor, s: Double) -> Tensor { Tensor.checked { try a / s } }

    @_disfavoredOverload
    public static func / (s: Double, a: Tensor) -> Tensor { Tensor.checked { try s / a } }

    @_disfavoredOverload
    public static func ** (a: Tensor, b: Tensor) -> Tensor { Tensor.checked { try a ** b } }

    @_disfavoredOverload
    public static func ** (a: Tensor, s: Double) -> Tensor { Tensor.checked { try a ** s } }

    @_disfavoredOverload
    public static func ** (s: Double, a: Tensor) -> Tensor { Tensor.checked { try s ** a } }

    @_disfavoredOverload
    public func exp() -> Tensor { Tensor.checked { try self.exp() } }

    @_disfavoredOverload
    public func log() -> Tensor { Tensor.checked { try self.log() } }

    /// log(1 + x), accurate near 0 (where log(1 + x) loses x to rounding); -inf at -1, nan below.
    @_disfavoredOverload
    public func log1p() -> Tensor { Tensor.checked { try self.log1p() } }

    /// e^x - 1, accurate near 0 (where e^x - 1 cancels).
    @_disfavoredOverload
    public func expm1() -> Tensor { Tensor.checked { try self.expm1() } }

    /// The error function, 2/√π ∫₀ˣ e^(-t²) dt.
    @_disfavoredOverload
    public func erf() -> Tensor { Tensor.checked { try self.erf() } }

    /// max(x, 0), nan for nan; the derivative at exactly 0 is taken as 0, and is 1 at nan (as in
    /// PyTorch). Where x <= 0 the gradient is selected: 0 even for an infinite or nan one.
    @_disfavoredOverload
    public func relu() -> Tensor { Tensor.checked { try self.relu() } }

    @_disfavoredOverload
    public func sqrt() -> Tensor { Tensor.checked { try self.sqrt() } }

    /// |x|; the derivative at 0 is taken as 0, selected: 0 for any incoming gradient (PyTorch
    /// multiplies by sgn(0) = 0, which makes an infinite gradient nan).
    @_disfavoredOverload
    public func abs() -> Tensor { Tensor.checked { try self.abs() } }

    @_disfavoredOverload
    public func sin() -> Tensor { Tensor.checked { try self.sin() } }

    @_disfavoredOverload
    public func cos() -> Tensor { Tensor.checked { try self.cos() } }

    @_disfavoredOverload
    public func tanh() -> Tensor { Tensor.checked { try self.tanh() } }

    /// 1 / (1 + e^-x), in a form that stays finite for any input.
    @_disfavoredOverload
    public func sigmoid() -> Tensor { Tensor.checked { try self.sigmoid() } }

    /// x for x > 0, negativeSlope * x otherwise; the derivative at 0 is negativeSlope. The
    /// gradient is multiplied by the slope, not selected (as PyTorch): with a slope of 0 an
    /// infinite gradient gives nan for x <= 0.
    @_disfavoredOverload
    public func leakyRelu(negativeSlope: Double = 0.01) -> Tensor { Tensor.checked { try self.leakyRelu(negativeSlope: negativeSlope) } }

    /// x limited to [min, max] (a nil bound: no limit on that side), as torch.clamp: nan stays
    /// nan, and where min > max every element is max. The gradient passes where
    /// min <= x <= max (bounds included) and is 0 elsewhere and at nan, selected: 0 even for an
    /// infinite or nan incoming gradient. A nan bound is an argument error (torch.clamp would
    /// make every element nan).
    @_disfavoredOverload
    public func clamp(min: Double? = nil, max: Double? = nil) -> Tensor { Tensor.checked { try self.clamp(min: min, max: max) } }

    /// log(1 + e^x) as max(x, 0) + log1p(e^-|x|), finite for any input; d softplus = sigmoid.
    @_disfavoredOverload
    public func softplus() -> Tensor { Tensor.checked { try self.softplus() } }

    /// The exact GELU, x·Φ(x) with Φ the standard normal CDF; d gelu = Φ(x) + x·φ(x).
    @_disfavoredOverload
    public func gelu() -> Tensor { Tensor.checked { try self.gelu() } }

    @_disfavoredOverload
    public func negated() -> Tensor { Tensor.checked { try self.negated() } }

    @_disfavoredOverload
    public func eq(_ other: Tensor) -> Tensor { Tensor.checked { try self.eq(other) } }

    @_disfavoredOverload
    public func ne(_ other: Tensor) -> Tensor { Tensor.checked { try self.ne(other) } }

    @_disfavoredOverload
    public func lt(_ other: Tensor) -> Tensor { Tensor.checked { try self.lt(other) } }

    @_disfavoredOverload
    public func le(_ other: Tensor) -> Tensor { Tensor.checked { try self.le(other) } }

    @_disfavoredOverload
    public func gt(_ other: Tensor) -> Tensor { Tensor.checked { try self.gt(other) } }

    @_disfavoredOverload
    public func ge(_ other: Tensor) -> Tensor { Tensor.checked { try self.ge(other) } }

    /// cond ? a : b elementwise, the three broadcast together; cond is true where non-zero and
    /// may be of any dtype (a bool mask, or 0/1 floats from a comparison). a and b are float32
    /// or float64. The gradient goes to a where cond holds, to b elsewhere.
    @_disfavoredOverload
    public static func `where`(_ cond: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor { Tensor.checked { try Tensor.`where`(cond, a, b) } }

    /// The same elements with another shape of equal element count; shares storage.
    @_disfavoredOverload
    public func reshaped(_ newShape: [Int]) -> Tensor { Tensor.checked { try self.reshaped(newShape) } }

    /// This tensor broadcast to `target` (NumPy rules), copied out contiguously.
    @_disfavoredOverload
    public func expanded(to target: [Int]) -> Tensor { Tensor.checked { try self.expanded(to: target) } }

    /// The axes reordered: result axis i is this tensor's axis perm[i].
    @_disfavoredOverload
    public func permuted(_ perm: [Int]) -> Tensor { Tensor.checked { try self.permuted(perm) } }

    /// Axes `a` and `b` swapped (negative axes count from the end).
    @_disfavoredOverload
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor { Tensor.checked { try self.transposed(a, b) } }

    /// Without the given extent-1 axes (empty: every extent-1 axis).
    @_disfavoredOverload
    public func squeezed(_ axes: [Int] = []) -> Tensor { Tensor.checked { try self.squeezed(axes) } }

    /// With a new extent-1 axis at position `axis` of the result (negative counts from the end).
    @_disfavoredOverload
    public func unsqueezed(_ axis: Int) -> Tensor { Tensor.checked { try self.unsqueezed(axis) } }

    /// NumPy's matmul: 1-D·1-D inner product, 2-D products, and stacks of matrices whose batch
    /// axes broadcast; a 1-D left operand is a row, a 1-D right operand a column.
    @_disfavoredOverload
    public func matmul(_ other: Tensor) -> Tensor { Tensor.checked { try self.matmul(other) } }

    /// The inner product of two 1-D tensors of equal length (a 0-d tensor).
    @_disfavoredOverload
    public func dot(_ other: Tensor) -> Tensor { Tensor.checked { try self.dot(other) } }

    /// The outer product of two 1-D tensors: (m) x (n) -> (m, n).
    @_disfavoredOverload
    public func outer(_ other: Tensor) -> Tensor { Tensor.checked { try self.outer(other) } }

    /// PyTorch's linear: self (..., in) @ weightᵀ + bias, weight (out, in), bias (out) or nil.
    @_disfavoredOverload
    public func linear(weight: Tensor, bias: Tensor? = nil) -> Tensor { Tensor.checked { try self.linear(weight: weight, bias: bias) } }

    /// e^x / sum(e^x) along `axis`, as e^z / sum(e^z) with z = x - max(x) computed once in x's
    /// dtype (no overflow, and no precision lost to a large common offset). A row holding +inf
    /// or nan, or only -inf, is all nan (as torch.softmax).
    @_disfavoredOverload
    public func softmax(axis: Int) -> Tensor { Tensor.checked { try self.softmax(axis: axis) } }

    /// log(softmax(x)) along `axis`, as z - log(sum(e^z)) with z = x - max(x) (see softmax).
    @_disfavoredOverload
    public func logSoftmax(axis: Int) -> Tensor { Tensor.checked { try self.logSoftmax(axis: axis) } }

    /// The batch mean of -log_softmax(logits)[i, labels[i]] for logits (N, C).
    @_disfavoredOverload
    public func crossEntropy(labels: [Int]) -> Tensor { Tensor.checked { try self.crossEntropy(labels: labels) } }

    /// mean((self - target)^2) over every element.
    @_disfavoredOverload
    public func mseLoss(_ target: Tensor) -> Tensor { Tensor.checked { try self.mseLoss(target) } }

    /// Sums over `axes` (empty: every axis; negative axes count from the end).
    @_disfavoredOverload
    public func sum(axes: [Int] = [], keepDims: Bool = false) -> Tensor { Tensor.checked { try self.sum(axes: axes, keepDims: keepDims) } }

    /// The mean over `axes` (empty: every axis): the sum times 1/count.
    @_disfavoredOverload
    public func mean(axes: [Int] = [], keepDims: Bool = false) -> Tensor { Tensor.checked { try self.mean(axes: axes, keepDims: keepDims) } }

    /// The largest element over `axes`; the gradient is split evenly among ties.
    @_disfavoredOverload
    public func max(axes: [Int] = [], keepDims: Bool = false) -> Tensor { Tensor.checked { try self.max(axes: axes, keepDims: keepDims) } }

    /// The smallest element over `axes`; the gradient is split evenly among ties.
    @_disfavoredOverload
    public func min(axes: [Int] = [], keepDims: Bool = false) -> Tensor { Tensor.checked { try self.min(axes: axes, keepDims: keepDims) } }

    /// The variance over `axes`, dividing by count - correction (1: sample variance), or by 0
    /// when correction >= count, as torch.var does: then a positive sum of squares gives inf and
    /// a zero one (all elements equal, or none) nan.
    @_disfavoredOverload
    public func variance(axes: [Int] = [], correction: Int = 1, keepDims: Bool = false) -> Tensor { Tensor.checked { try self.variance(axes: axes, correction: correction, keepDims: keepDims) } }

    /// log(sum(exp(x))) over `axes`, as log(sum(exp(x - m))) + m with m the maximum (no
    /// overflow; x - m exact, see shiftedByMax). Over an axis of extent 0 it is -inf.
    @_disfavoredOverload
    public func logSumExp(axes: [Int] = [], keepDims: Bool = false) -> Tensor { Tensor.checked { try self.logSumExp(axes: axes, keepDims: keepDims) } }

    /// The cumulative sum along `axis` (negative counts from the end): element i of the result
    /// is the sum of elements 0...i along the axis (torch.cumsum). A 0-d tensor takes axis 0 or
    /// -1 and is its own cumulative sum. float32 is summed in double, each element rounded once
    /// (PyTorch's CPU order and accumulator); float64 in a compensated running sum.
    @_disfavoredOverload
    public func cumsum(axis: Int) -> Tensor { Tensor.checked { try self.cumsum(axis: axis) } }

    /// The entries `indices` along `axis` (negative indices count from the end).
    @_disfavoredOverload
    public func indexSelect(axis: Int, _ indices: [Int]) -> Tensor { Tensor.checked { try self.indexSelect(axis: axis, indices) } }

    /// Python's a[start:stop:step] along `axis` (step > 0, bounds clamped).
    @_disfavoredOverload
    public func slice(axis: Int, start: Int, stop: Int, step: Int = 1) -> Tensor { Tensor.checked { try self.slice(axis: axis, start: start, stop: stop, step: step) } }

    /// The tensors joined along an existing axis.
    @_disfavoredOverload
    public static func concat(_ tensors: [Tensor], axis: Int) -> Tensor { Tensor.checked { try Tensor.concat(tensors, axis: axis) } }

    /// The tensors, all of one shape, stacked along a new axis.
    @_disfavoredOverload
    public static func stack(_ tensors: [Tensor], axis: Int) -> Tensor { Tensor.checked { try Tensor.stack(tensors, axis: axis) } }

    /// torch.gather: out[p] = self[p with its `axis` coordinate replaced by index[p]].
    @_disfavoredOverload
    public func gather(axis: Int, index: [Int], indexShape: [Int]) -> Tensor { Tensor.checked { try self.gather(axis: axis, index: index, indexShape: indexShape) } }

    /// The index of the largest element along `axis` (nil: of the flattened tensor, a 0-d
    /// result), as int64. nan counts as the largest (the first nan wins), and of equal maxima
    /// the first index wins, as torch.argmax.
    @_disfavoredOverload
    public func argmax(axis: Int? = nil, keepDims: Bool = false) -> Tensor { Tensor.checked { try self.argmax(axis: axis, keepDims: keepDims) } }

    /// The index of the smallest element along `axis`, as argmax (nan counts as the smallest).
    @_disfavoredOverload
    public func argmin(axis: Int? = nil, keepDims: Bool = false) -> Tensor { Tensor.checked { try self.argmin(axis: axis, keepDims: keepDims) } }

    /// The k largest (or smallest) elements along `axis` and their int64 indices, largest first
    /// (smallest first), ties in index order; nan counts as the largest. The values are picked
    /// with gather, so the gradient flows to the positions picked.
    @_disfavoredOverload
    public func topk(_ k: Int, axis: Int = -1, largest: Bool = true) -> (values: Tensor, indices: Tensor) { Tensor.checked { try self.topk(k, axis: axis, largest: largest) } }

    /// This int64 tensor as one-hot rows: shape + [classes], 1 at each index, 0 elsewhere, in
    /// `dtype`. classes = -1 takes the largest index + 1 (as torch.nn.functional.one_hot).
    @_disfavoredOverload
    public func oneHot(classes: Int = -1, dtype target: DType = .float32) -> Tensor { Tensor.checked { try self.oneHot(classes: classes, dtype: target) } }

    /// Rows of `weight` (V, D) picked by an int64 tensor of indices in 0..<V: a tensor of
    /// shape indices.shape + [D]. The gradient adds into the rows picked (a row picked many
    /// times sums its gradients in float64, see Indexing.add). The rule reads the indices
    /// tensor itself (saved), so a replayed capture uses the indices it is given.
    @_disfavoredOverload
    public static func embedding(_ indices: Tensor, weight: Tensor) -> Tensor { Tensor.checked { try Tensor.embedding(indices, weight: weight) } }

    /// This tensor with `value` where mask (bool, or non-zero of any dtype) holds; mask
    /// broadcasts to this tensor's shape. The gradient flows to the elements not filled.
    @_disfavoredOverload
    public func maskedFill(_ mask: Tensor, _ value: Double) -> Tensor { Tensor.checked { try self.maskedFill(mask, value) } }

    /// This tensor's values in `target` dtype. Between float32 and float64 it is differentiable
    /// (the gradient is converted back); to int64 it truncates toward zero and refuses nan,
    /// inf and values out of range; to bool it is "non-zero". Records nothing for those.
    @_disfavoredOverload
    public func to(_ target: DType) -> Tensor { Tensor.checked { try self.to(target) } }

    /// Elementwise not of a mask (any dtype: non-zero is true), as bool.
    @_disfavoredOverload
    public func logicalNot() -> Tensor { Tensor.checked { try self.logicalNot() } }

    /// Elementwise and of two masks (any dtypes: non-zero is true), broadcast, as bool.
    @_disfavoredOverload
    public func logicalAnd(_ other: Tensor) -> Tensor { Tensor.checked { try self.logicalAnd(other) } }

    /// Elementwise or of two masks (any dtypes: non-zero is true), broadcast, as bool.
    @_disfavoredOverload
    public func logicalOr(_ other: Tensor) -> Tensor { Tensor.checked { try self.logicalOr(other) } }

    /// The batch mean of -log_softmax(logits)[i, labels[i]] for logits (N, C) and an int64
    /// tensor of N labels in 0..<C. The labels are read through a one-hot mask (a step of its
    /// own in a capture), so a replay uses the labels it is given; the picked values are
    /// selected, never multiplied by the mask (a -inf log-probability elsewhere stays out).
    @_disfavoredOverload
    public func crossEntropy(labels: Tensor) -> Tensor { Tensor.checked { try self.crossEntropy(labels: labels) } }

    /// PyTorch's conv2d: self (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) or nil ->
    /// (N, O, OH, OW), OH = floor((H + 2 ph - dh (kH - 1) - 1) / sh) + 1 (OW likewise).
    @_disfavoredOverload
    public func conv2d(weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1) -> Tensor { Tensor.checked { try self.conv2d(weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups) } }

    /// PyTorch's conv1d: self (N, C, L), weight (O, C/groups, k), bias (O) or nil -> (N, O, OL),
    /// OL = floor((L + 2 padding - dilation (k - 1) - 1) / stride) + 1. conv2d over (N, C, 1, L).
    @_disfavoredOverload
    public func conv1d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) -> Tensor { Tensor.checked { try self.conv1d(weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups) } }

    /// PyTorch's max_pool2d: self (N, C, H, W) -> (N, C, OH, OW), the maximum of each kH x kW
    /// window; stride nil means the kernel size; padding (at most half the kernel) counts as
    /// -inf. The gradient goes to one position per window: its first maximum in scan order.
    @_disfavoredOverload
    public func maxPool2d(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) -> Tensor { Tensor.checked { try self.maxPool2d(kernel: kernel, stride: stride, padding: padding) } }

    /// PyTorch's avg_pool2d: the mean of each window (padding counts as zeros); with
    /// countIncludePad false the padded positions are left out of each window's divisor.
    @_disfavoredOverload
    public func avgPool2d(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0), countIncludePad: Bool = true) -> Tensor { Tensor.checked { try self.avgPool2d(kernel: kernel, stride: stride, padding: padding, countIncludePad: countIncludePad) } }

    /// PyTorch's adaptive_avg_pool2d: self (N, C, H, W) -> (N, C, OH, OW), output (i, j) the mean
    /// of rows floor(i H / OH) ..< ceil((i + 1) H / OH) and the columns alike.
    @_disfavoredOverload
    public func adaptiveAvgPool2d(outputSize: (Int, Int)) -> Tensor { Tensor.checked { try self.adaptiveAvgPool2d(outputSize: outputSize) } }

    /// torch.nn.functional.layer_norm: (x - mean) / sqrt(var + eps) over the last
    /// `normalizedAxes` axes (var biased), times `weight` plus `bias` (each of the shape of
    /// those axes, or nil).
    @_disfavoredOverload
    public func layerNorm(normalizedAxes k: Int, weight: Tensor? = nil, bias: Tensor? = nil, eps: Double = 1e-5) -> Tensor { Tensor.checked { try self.layerNorm(normalizedAxes: k, weight: weight, bias: bias, eps: eps) } }

    /// torch.nn.functional.batch_norm for x (N, C, *): each channel normalised by its mean and
    /// biased variance over the batch and spatial axes (training) or by the running statistics
    /// (eval), times `weight` plus `bias` (each (C) or nil). In training, given running_mean and
    /// running_var (both or neither, (C), not requiring grad), they are updated in place:
    /// r = (1 - momentum) r + momentum s, with the batch mean and the unbiased batch variance (a
    /// version bump, as an optimizer step). N·spatial == 1 in training is an error (torch's);
    /// N·spatial == 0 gives an empty result and leaves the running statistics unchanged.
    @_disfavoredOverload
    public func batchNorm(runningMean: Tensor?, runningVar: Tensor?, weight: Tensor? = nil, bias: Tensor? = nil, training: Bool, momentum: Double = 0.1, eps: Double = 1e-5) -> Tensor { Tensor.checked { try self.batchNorm(runningMean: runningMean, runningVar: runningVar, weight: weight, bias: bias, training: training, momentum: momentum, eps: eps) } }

    /// torch.nn.functional.group_norm for x (N, C, *): the C channels split into `groups`
    /// groups of C/groups consecutive channels, each group of each sample normalised over its
    /// channels and spatial positions (biased variance), times `weight` plus `bias` ((C) or nil).
    @_disfavoredOverload
    public func groupNorm(groups: Int, weight: Tensor? = nil, bias: Tensor? = nil, eps: Double = 1e-5) -> Tensor { Tensor.checked { try self.groupNorm(groups: groups, weight: weight, bias: bias, eps: eps) } }

    /// softmax(q kᵀ · scale + mask) v for q (..., L, E), k (..., S, E), v (..., S, Ev), the
    /// batch axes broadcasting (torch.nn.functional.scaled_dot_product_attention). `mask` is
    /// additive, float, of q's dtype, broadcasting to (..., L, S); `isCausal` masks the upper
    /// triangle (key j > query i) with -inf, aligned top-left as torch (not with a mask). `scale`
    /// 0 means 1/sqrt(E). A fully masked row (every score -inf) gives zeros and zero gradients,
    /// as torch 2.5+ (its "safe softmax"; a plain softmax would give nan).
    ///
    /// A composition rather than one fused op: q·scale, one batched GEMM against kᵀ (no copy of
    /// kᵀ when q and k share their batch axes), the mask added, a softmax over the keys (one
    /// primitive with row kernels, which gives the fully masked rows their zeros) and a GEMM
    /// with v. Measured (release build, float32, batch 32, 4 heads, L = S = E = 16, forward +
    /// backward of sum(sdpa), best of 300, in C through ag_scaled_dot_product_attention, on the
    /// 2-core build machine, issue 18): 381 us at 1 thread (367 us causal); with the softmax
    /// written out of eight differentiable ops it was 417 us (520 us causal). The two GEMMs
    /// alone (transpose, matmul, matmul, their backward) take 181 us, a floor for a fused op;
    /// PyTorch 2.13 eager F.scaled_dot_product_attention takes 428 us (436 us causal) at 1
    /// thread on the same machine.
    @_disfavoredOverload
    public static func scaledDotProductAttention(query q: Tensor, key k: Tensor, value v: Tensor, mask: Tensor? = nil, isCausal: Bool = false, scale: Double = 0) -> Tensor { Tensor.checked { try Tensor.scaledDotProductAttention(query: q, key: k, value: v, mask: mask, isCausal: isCausal, scale: scale) } }

    /// Uniform values in [low, high) drawn from `generator`.
    @_disfavoredOverload
    public static func uniform(_ shape: [Int], low: Double = 0, high: Double = 1, generator: Generator, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.uniform(shape, low: low, high: high, generator: generator, dtype: dtype) } }

    /// Normal values with `mean` and standard deviation `std` drawn from `generator`.
    @_disfavoredOverload
    public static func normal(_ shape: [Int], mean: Double = 0, std: Double = 1, generator: Generator, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.normal(shape, mean: mean, std: std, generator: generator, dtype: dtype) } }

    /// int64 values uniform in low..<high drawn from `generator`.
    @_disfavoredOverload
    public static func randint(_ shape: [Int], low: Int, high: Int, generator: Generator) -> Tensor { Tensor.checked { try Tensor.randint(shape, low: low, high: high, generator: generator) } }

    /// A random permutation of 0..<n as int64 (Fisher-Yates), drawn from `generator`.
    @_disfavoredOverload
    public static func randperm(_ n: Int, generator: Generator) -> Tensor { Tensor.checked { try Tensor.randperm(n, generator: generator) } }

    /// Inverted dropout: with `training` and p > 0, each element is zeroed with probability p
    /// (drawn from `generator`) and the others scaled by 1/(1-p), so the expectation is kept;
    /// otherwise the input itself. The gradient is masked and scaled the same way.
    @_disfavoredOverload
    public func dropout(p: Double, training: Bool = true, generator: Generator) -> Tensor { Tensor.checked { try self.dropout(p: p, training: training, generator: generator) } }

    /// `samples` category indices (int64) drawn from the weights in each row of this (C) or
    /// (N, C) tensor (non-negative, finite, not all 0; they need not sum to 1), with or without
    /// replacement (without: samples <= the categories of non-zero weight), as torch.multinomial.
    @_disfavoredOverload
    public func multinomial(samples: Int, replacement: Bool = false, generator: Generator) -> Tensor { Tensor.checked { try self.multinomial(samples: samples, replacement: replacement, generator: generator) } }

    /// start, start + step, ... up to but excluding stop (numpy.arange).
    @_disfavoredOverload
    public static func arange(start: Double = 0, stop: Double, step: Double = 1, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.arange(start: start, stop: stop, step: step, dtype: dtype) } }

    /// An (n, m) matrix with ones on the main diagonal.
    @_disfavoredOverload
    public static func eye(_ n: Int, _ m: Int? = nil, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.eye(n, m, dtype: dtype) } }

    /// Uniform values in [low, high) from a generator seeded with `seed` (the same everywhere).
    @_disfavoredOverload
    public static func uniform(_ shape: [Int], low: Double = 0, high: Double = 1, seed: UInt64, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.uniform(shape, low: low, high: high, seed: seed, dtype: dtype) } }

    /// Normal values with `mean` and standard deviation `std` (Box-Muller over SplitMix64).
    @_disfavoredOverload
    public static func normal(_ shape: [Int], mean: Double = 0, std: Double = 1, seed: UInt64, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.normal(shape, mean: mean, std: std, seed: seed, dtype: dtype) } }

    /// A leaf tensor of `shape` with every element equal to `value` (for int64, a whole number
    /// within int64's range; for bool, non-zero is true).
    @_disfavoredOverload
    public static func full(_ shape: [Int], _ value: Double, dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.full(shape, value, dtype: dtype) } }

    @_disfavoredOverload
    public static func zeros(_ shape: [Int], dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.zeros(shape, dtype: dtype) } }

    @_disfavoredOverload
    public static func ones(_ shape: [Int], dtype: DType = .float64) -> Tensor { Tensor.checked { try Tensor.ones(shape, dtype: dtype) } }

    /// This tensor's values in `target` dtype (self when it already is); records nothing.
    @_disfavoredOverload
    public func converted(to target: DType) -> Tensor { Tensor.checked { try self.converted(to: target) } }

    /// The single element of a one-element tensor.
    @_disfavoredOverload
    public func item() -> Double { Tensor.checked { try self.item() } }
}

// Free functions for the elementwise math, so a model reads like its formula:
// `relu(x.matmul(w) + b).sum()`.

/// max(x, 0) elementwise.
public func relu(_ x: Tensor) -> Tensor { Tensor.checked { try x.relu() } }
/// 1 / (1 + e^-x) elementwise.
public func sigmoid(_ x: Tensor) -> Tensor { Tensor.checked { try x.sigmoid() } }
/// tanh(x) elementwise.
public func tanh(_ x: Tensor) -> Tensor { Tensor.checked { try x.tanh() } }
/// e^x elementwise.
public func exp(_ x: Tensor) -> Tensor { Tensor.checked { try x.exp() } }
/// The natural logarithm elementwise.
public func log(_ x: Tensor) -> Tensor { Tensor.checked { try x.log() } }
/// √x elementwise.
public func sqrt(_ x: Tensor) -> Tensor { Tensor.checked { try x.sqrt() } }
/// sin(x) elementwise.
public func sin(_ x: Tensor) -> Tensor { Tensor.checked { try x.sin() } }
/// cos(x) elementwise.
public func cos(_ x: Tensor) -> Tensor { Tensor.checked { try x.cos() } }
/// The matrix product a @ b (batched and broadcast as `Tensor.matmul`).
public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor { Tensor.checked { try a.matmul(b) } }
/// The softmax along `axis`.
public func softmax(_ x: Tensor, axis: Int) -> Tensor { Tensor.checked { try x.softmax(axis: axis) } }
