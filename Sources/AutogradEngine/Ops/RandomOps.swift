/// Random creators and ops that draw from a Generator: uniform, normal, randint, randperm,
/// bernoulli masks, dropout and multinomial. In a capture, each replay draws anew from the
/// generator (as a fresh eager step would); a recompute keeps the values drawn when the graph
/// was built (it draws nothing).
extension Tensor {
    /// Uniform values in [low, high) drawn from `generator`.
    package static func uniform(_ shape: [Int], low: Double = 0, high: Double = 1, generator: Generator, dtype: DType = .float64) throws -> Tensor {
        guard low.isFinite && high.isFinite && low <= high else {
            throw AutogradError.argument("uniform: need finite low <= high, got \(low), \(high)")
        }
        guard dtype.isFloatingPoint else { throw AutogradError.dtype("uniform: random values are float32 or float64, not \(dtype) (randint draws int64)") }
        let n = try Shape.count(shape)
        return try generator.draw { rng in try generate(shape, dtype: dtype) { _ in low + (high - low) * rng.nextUnit() } }
            .noted(n, "uniform") { try uniform(shape, low: low, high: high, generator: generator, dtype: dtype) }
    }

    /// Normal values with `mean` and standard deviation `std` drawn from `generator`.
    package static func normal(_ shape: [Int], mean: Double = 0, std: Double = 1, generator: Generator, dtype: DType = .float64) throws -> Tensor {
        guard mean.isFinite && std.isFinite && std >= 0 else {
            throw AutogradError.argument("normal: need a finite mean and a finite std >= 0, got \(mean), \(std)")
        }
        guard dtype.isFloatingPoint else { throw AutogradError.dtype("normal: random values are float32 or float64, not \(dtype)") }
        let n = try Shape.count(shape)
        return try generator.draw { rng in try generate(shape, dtype: dtype) { _ in mean + std * rng.nextNormal() } }
            .noted(n, "normal") { try normal(shape, mean: mean, std: std, generator: generator, dtype: dtype) }
    }

    /// int64 values uniform in low..<high drawn from `generator`.
    package static func randint(_ shape: [Int], low: Int, high: Int, generator: Generator) throws -> Tensor {
        guard low < high else { throw AutogradError.argument("randint: need low < high, got \(low) and \(high)") }
        let out = try Tensor(uninitialized: shape, dtype: .int64)
        let span = UInt64(bitPattern: Int64(high) &- Int64(low))  // high - low, as unsigned: never overflows
        let o = out.integers()
        generator.draw { rng in for i in 0..<o.count { o[i] = Int64(low) &+ Int64(bitPattern: rng.below(span)) } }
        return out.noted(out.count, "randint") { try randint(shape, low: low, high: high, generator: generator) }
    }

    /// A random permutation of 0..<n as int64 (Fisher-Yates), drawn from `generator`.
    package static func randperm(_ n: Int, generator: Generator) throws -> Tensor {
        guard n >= 0 else { throw AutogradError.argument("randperm: n must be >= 0, got \(n)") }
        let out = try Tensor(uninitialized: [n], dtype: .int64)
        let o = out.integers()
        for i in 0..<n { o[i] = Int64(i) }
        generator.draw { rng in
            var i = n - 1
            while i > 0 {
                let j = Int(rng.below(UInt64(i + 1)))
                o.swapAt(i, j)
                i -= 1
            }
        }
        return out.noted(n, "randperm") { try randperm(n, generator: generator) }
    }

    /// Notes a freshly drawn tensor as a step that draws again on replay, and refuses a
    /// recomputable graph (it could not redraw the same values).
    fileprivate func noted(_ n: Int, _ name: StaticString, _ redraw: @escaping () throws -> Tensor) -> Tensor {
        if let recorder = Trace.recorder {
            recorder.constants.remove(ObjectIdentifier(storage))
            Trace.note(self, name, []) { _ in try redraw() }
        }
        return self
    }

    /// Inverted dropout: with `training` and p > 0, each element is zeroed with probability p
    /// (drawn from `generator`) and the others scaled by 1/(1-p), so the expectation is kept;
    /// otherwise the input itself. The gradient is masked and scaled the same way.
    package func dropout(p: Double, training: Bool = true, generator: Generator) throws -> Tensor {
        try requireFloatingPoint("dropout")
        guard p >= 0 && p <= 1 else { throw AutogradError.argument("dropout: p must be in [0, 1], got \(p)") }
        guard training && p > 0 else { return self }
        let mask = try Tensor.dropoutMask(shape, p: p, generator: generator, dtype: dtype)
        if Trace.isRecording {
            let (shape, dtype) = (shape, dtype)
            Trace.note(mask, "dropout_mask", [self]) { _ in try Tensor.dropoutMask(shape, p: p, generator: generator, dtype: dtype) }
        }
        return try multiplying(mask)
    }

    /// 0 with probability p, 1/(1-p) otherwise (0 everywhere for p = 1), in `dtype`.
    static func dropoutMask(_ shape: [Int], p: Double, generator: Generator, dtype: DType) throws -> Tensor {
        let keep = p < 1 ? 1 / (1 - p) : 0
        return try generator.draw { rng in try generate(shape, dtype: dtype) { _ in rng.nextUnit() < p ? 0 : keep } }
    }

    /// `samples` category indices (int64) drawn from the weights in each row of this (C) or
    /// (N, C) tensor (non-negative, finite, not all 0; they need not sum to 1), with or without
    /// replacement (without: samples <= the categories of non-zero weight), as torch.multinomial.
    package func multinomial(samples: Int, replacement: Bool = false, generator: Generator) throws -> Tensor {
        try requireFloatingPoint("multinomial")
        guard rank == 1 || rank == 2 else { throw AutogradError.shape("multinomial: weights must be (C) or (N, C), got \(shape)") }
        guard samples >= 0 else { throw AutogradError.argument("multinomial: the number of samples must be >= 0, got \(samples)") }
        let rows = rank == 2 ? shape[0] : 1, c = shape[rank - 1]
        guard c > 0 else { throw AutogradError.shape("multinomial: there are no categories (shape \(shape))") }
        let w = values
        for r in 0..<rows {
            let row = w[(r * c)..<(r * c + c)]
            if let bad = row.first(where: { !$0.isFinite || $0 < 0 }) {
                throw AutogradError.argument("multinomial: weights must be finite and >= 0, row \(r) holds \(bad)")
            }
            let positive = row.filter { $0 > 0 }.count
            guard positive > 0 else { throw AutogradError.argument("multinomial: row \(r) has no positive weight") }
            if !replacement && samples > positive {
                throw AutogradError.argument("multinomial: \(samples) samples without replacement, but row \(r) has only \(positive) categories of positive weight")
            }
        }
        let out = try Tensor(uninitialized: rank == 2 ? [rows, samples] : [samples], dtype: .int64)
        let o = out.integers()
        generator.draw { rng in
            for r in 0..<rows {
                var weights = Array(w[(r * c)..<(r * c + c)])
                for s in 0..<samples {
                    // The first category whose running total passes u * total (in float64).
                    let total = weights.reduce(0, +)
                    let u = rng.nextUnit() * total
                    var acc = 0.0, pick = -1
                    for j in 0..<c where weights[j] > 0 {
                        acc += weights[j]
                        pick = j
                        if u < acc { break }
                    }
                    o[r * samples + s] = Int64(pick)
                    if !replacement { weights[pick] = 0 }
                }
            }
        }
        if Trace.isRecording { Trace.note(out, "multinomial", [self]) { ins in try ins[0].multinomial(samples: samples, replacement: replacement, generator: generator) } }
        return out
    }
}
