#if canImport(Glibc)
import Glibc
#endif

/// Learning-rate schedules: pure functions of the step number (0 for the first step), to set
/// on an optimizer before each step (Optimizer.learningRate, ag_optimizer_set_lr).
public enum LearningRateSchedule {
    /// The same rate at every step.
    case constant(Double)
    /// base · gamma^(step / stepSize) (integer division), as torch.optim.lr_scheduler.StepLR.
    case stepDecay(base: Double, stepSize: Int, gamma: Double)
    /// Linear warm-up then cosine decay, as the common GPT recipe: base · (step + 1) / warmup
    /// for step < warmup; min + (base - min) · (1 + cos(π · (step - warmup) / (total - warmup))) / 2
    /// up to total; min from step total on.
    case warmupCosine(base: Double, minimum: Double, warmupSteps: Int, totalSteps: Int)

    /// The rate at `step` (>= 0). Errors (AutogradError.argument): a negative step, a rate that
    /// is not finite or is negative, stepSize < 1, gamma not finite or negative, warmupSteps < 0,
    /// totalSteps < warmupSteps, minimum above base.
    public func rate(at step: Int) throws -> Double {
        guard step >= 0 else { throw AutogradError.argument("learning-rate schedule: step must be >= 0, got \(step)") }
        switch self {
        case .constant(let r):
            try Self.checkRate(r, "the rate")
            return r
        case let .stepDecay(base, stepSize, gamma):
            try Self.checkRate(base, "base_lr")
            guard stepSize >= 1 else { throw AutogradError.argument("step schedule: step_size must be >= 1, got \(stepSize)") }
            guard gamma.isFinite && gamma >= 0 else { throw AutogradError.argument("step schedule: gamma must be finite and >= 0, got \(gamma)") }
            return base * pow(gamma, Double(step / stepSize))
        case let .warmupCosine(base, minimum, warmup, total):
            try Self.checkRate(base, "base_lr")
            try Self.checkRate(minimum, "min_lr")
            guard minimum <= base else {
                throw AutogradError.argument("warm-up cosine schedule: min_lr (\(minimum)) is above base_lr (\(base))")
            }
            guard warmup >= 0 else { throw AutogradError.argument("warm-up cosine schedule: warmup_steps must be >= 0, got \(warmup)") }
            guard total >= warmup else {
                throw AutogradError.argument("warm-up cosine schedule: total_steps (\(total)) is below warmup_steps (\(warmup))")
            }
            if step < warmup { return base * (Double(step) + 1) / Double(warmup) }
            if step >= total { return minimum }
            let progress = Double(step - warmup) / Double(total - warmup)
            return minimum + (base - minimum) * 0.5 * (1 + cos(Double.pi * progress))
        }
    }

    /// Sets `optimizer`'s learning rate to the rate at `step`; returns it.
    @discardableResult
    public func apply(to optimizer: Optimizer, step: Int) throws -> Double {
        let r = try rate(at: step)
        optimizer.learningRate = r
        return r
    }

    private static func checkRate(_ r: Double, _ what: String) throws {
        guard r.isFinite && r >= 0 else {
            throw AutogradError.argument("learning-rate schedule: \(what) must be finite and >= 0, got \(r)")
        }
    }
}
