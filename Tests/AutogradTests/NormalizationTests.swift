import Foundation
import XCTest
@testable import AutogradEngine

/// layer_norm, batch_norm, group_norm, scaled_dot_product_attention, clip_grad_norm and the
/// learning-rate schedules (issue 18): values and gradients against PyTorch 2.13 float64
/// (numbers printed with repr from the torch calls named at each case), gradchecks over the
/// options, forward mode against central differences, second order (gradcheck of a
/// create_graph gradient), empty inputs, and every error.
final class NormalizationTests: XCTestCase {
    var rng = TestRNG(1818)

    // MARK: - Helpers

    private func t(_ v: [Double], _ shape: [Int], grad: Bool = false) throws -> Tensor {
        let x = try Tensor(v, shape: shape)
        try x.setRequiresGrad(grad)
        return x
    }

    /// The gradients of ⟨f(inputs), seed⟩ with respect to every input.
    private func gradients(_ inputs: [Tensor], seed: [Double], _ f: ([Tensor]) throws -> Tensor) throws -> (Tensor, [Tensor?]) {
        let y = try f(inputs)
        let gs = try Tensor.gradients(of: [y], withRespectTo: inputs, seeds: [Tensor(seed, shape: y.shape)], allowUnused: true)
        return (y, gs)
    }

    /// Forward mode (Transforms.jvp) against central differences of f along random tangents.
    private func assertJVP(_ inputs: [Tensor], _ label: String, file: StaticString = #filePath, line: UInt = #line,
                           _ f: @escaping ([Tensor]) throws -> Tensor) {
        do {
            let tangents = inputs.map { rng.tensor($0.shape, requiresGrad: false) }
            let primals = inputs.map { $0.detach() }
            let (_, ts) = try Transforms.jvp({ [try f($0)] }, primals: primals, tangents: tangents)
            let h = 1e-6
            let shifted = { (sign: Double) throws -> [Double] in
                try withNoGrad {
                    let xs = try zip(primals, tangents).map { p, t in try p + t * (sign * h) }
                    return try f(xs).values
                }
            }
            let up = try shifted(1), down = try shifted(-1)
            let analytic = ts[0].values
            XCTAssertEqual(analytic.count, up.count, "\(label): tangent size", file: file, line: line)
            for i in 0..<min(analytic.count, up.count) {
                let numeric = (up[i] - down[i]) / (2 * h)
                XCTAssertEqual(analytic[i], numeric, accuracy: 1e-6 + 1e-5 * abs(numeric), "\(label): jvp element \(i)", file: file, line: line)
            }
        } catch {
            XCTFail("\(label): threw \(error)", file: file, line: line)
        }
    }

    /// Second order: gradcheck of x -> d⟨f(x), w⟩/dx taken with create_graph (all inputs,
    /// flattened and joined).
    private func assertSecondOrder(_ inputs: [Tensor], _ label: String, file: StaticString = #filePath, line: UInt = #line,
                                   _ f: @escaping ([Tensor]) throws -> Tensor) {
        assertGradCheck(inputs, "\(label) (second order)", file: file, line: line) { inputs in
            // The finite-difference passes run f under no_grad on plain tensors: the inner
            // gradient needs grad mode and leaves that require grad.
            try GradMode.with(enabled: true) {
                let xs = try inputs.map { x -> Tensor in
                    if x.requiresGrad { return x }
                    let leaf = x.detach()
                    try leaf.setRequiresGrad(true)
                    return leaf
                }
                let y = try f(xs)
                let w = try Tensor((0..<y.count).map { 0.3 + Double($0 % 5) * 0.2 }, shape: y.shape)
                let gs = try Tensor.gradients(of: [y.multiplying(w).sum()], withRespectTo: xs, createGraph: true, allowUnused: true)
                return try Tensor.concat(zip(gs, xs).map { g, x in try (g ?? Tensor.zeros(x.shape)).reshaped([x.count]) }, axis: 0)
            }
        }
    }

    private func assertThrows(_ label: String, _ expected: (AutogradError) -> Bool, file: StaticString = #filePath, line: UInt = #line,
                              _ body: () throws -> Any) {
        do {
            _ = try body()
            XCTFail("\(label): did not throw", file: file, line: line)
        } catch let e as AutogradError {
            XCTAssertTrue(expected(e), "\(label): threw \(e)", file: file, line: line)
        } catch {
            XCTFail("\(label): threw \(error)", file: file, line: line)
        }
    }

    private func isArgument(_ e: AutogradError) -> Bool { if case .argument = e { return true }; return false }
    private func isShape(_ e: AutogradError) -> Bool { if case .shape = e { return true }; return false }
    private func isDType(_ e: AutogradError) -> Bool { if case .dtype = e { return true }; return false }
    private func isState(_ e: AutogradError) -> Bool { if case .state = e { return true }; return false }

    private let x12 = [0.5, -1.2, 2.0, 0.3, 0.9, -0.4, 1.5, 0.25, -0.75, 2.5, -2.0, 0.1]
    private let seed12 = [0.3, -0.7, 1.1, 0.2, 0.5, -0.9, 1.3, 0.4, -0.2, 0.8, -1.0, 0.6]

    // MARK: - layer_norm

    func testLayerNormAgainstPyTorch() throws {
        // torch.nn.functional.layer_norm(x (2,2,3), (2,3), w, b, 1e-5).backward(seed)
        let x = try t(x12, [2, 2, 3], grad: true)
        let w = try t([1.0, 0.5, -1.5, 2.0, 0.25, 1.25], [2, 3], grad: true)
        let b = try t([0.1, -0.2, 0.3, 0.0, 0.5, -0.5], [2, 3], grad: true)
        let (y, g) = try gradients([x, w, b], seed: seed12) { try $0[0].layerNorm(normalizedAxes: 2, weight: $0[1], bias: $0[2], eps: 1e-5) }
        assertValues(y, [0.24981210364100315, -0.9740292021451828, -2.1718997100765516, -0.09987473576066873, 0.6373277616709195, -1.4363256477562696, 0.9474435342644447, -0.20572596982611113, 1.3478524781783334, 3.0691198267955566, 0.1106340518244443, -0.6431492456527779], "ln y")
        assertValues(g[0]!, [0.7134232765788696, -0.28648288207198647, -0.9246749152778394, 0.7720367916093609, 0.6211649304580544, -0.8954672012964592, 0.09253484605663975, -0.30441735979405377, 0.05139492707605836, 0.011569110839861008, 0.032356729748698354, 0.11656174607279646], tol: 1e-11, "ln dx")
        assertValues(g[1]!, [1.1466202256360791, 1.0790601071423669, 1.9524401178132493, 1.2176604571421559, 1.8321193160440619, 0.6054428284711807], "ln dw")
        assertValues(g[2]!, [1.6, -0.29999999999999993, 0.9000000000000001, 1.0, -0.5, -0.30000000000000004], "ln db")
        // float32: the same values to float32 accuracy.
        let y32 = try Tensor(x12, shape: [2, 2, 3], dtype: .float32).layerNorm(normalizedAxes: 2, weight: w.detach().converted(to: .float32),
                                                                              bias: b.detach().converted(to: .float32), eps: 1e-5)
        XCTAssertEqual(y32.dtype, .float32)
        assertValues(y32, y.values, tol: 1e-6, "ln float32")
    }

    func testLayerNormGradientsForwardModeAndSecondOrder() {
        for k in [1, 2, 3] {
            for (affine, eps) in [(false, 1e-5), (true, 0.0), (true, 0.5)] {
                let x = rng.tensor([2, 3, 4])
                let normShape = Array([2, 3, 4].suffix(k))
                let w = rng.tensor(normShape), b = rng.tensor(normShape)
                let inputs = affine ? [x, w, b] : [x]
                let f: ([Tensor]) throws -> Tensor = { xs in
                    try xs[0].layerNorm(normalizedAxes: k, weight: affine ? xs[1] : nil, bias: affine ? xs[2] : nil, eps: eps)
                }
                assertGradCheck(inputs, "layer_norm k \(k) affine \(affine) eps \(eps)", f)
                assertJVP(inputs, "layer_norm k \(k) affine \(affine)", f)
            }
        }
        let x = rng.tensor([2, 4]), w = rng.tensor([4]), b = rng.tensor([4])
        assertSecondOrder([x, w, b], "layer_norm") { try $0[0].layerNorm(normalizedAxes: 1, weight: $0[1], bias: $0[2]) }
        // Only a weight, or only a bias.
        assertGradCheck([x, w], "layer_norm weight only") { try $0[0].layerNorm(normalizedAxes: 1, weight: $0[1]) }
        assertGradCheck([x, b], "layer_norm bias only") { try $0[0].layerNorm(normalizedAxes: 1, bias: $0[1]) }
    }

    /// layer_norm's core is one primitive with row kernels (forward, and a first-order backward
    /// kernel); its rule is stated over differentiable ops. The kernels against the composite
    /// form (mean, variance, sqrt, divide) and against the rule, in float64 (1e-12 against the rule, 1e-9 against the composite, whose float64 sums round differently) and in
    /// float32 to float32 accuracy; a row far from 0 (1e4 + small noise) included.
    func testLayerNormKernelsAgreeWithTheCompositeAndTheRule() throws {
        let cases: [([Int], Int)] = [([5, 3, 8], 1), ([5, 3, 8], 2), ([4, 7], 1), ([3, 1], 1)]
        for (shape, k) in cases {
            // Rows near 1e4 in [4, 7]: the statistics must not lose the small part.
            var x = rng.tensor(shape, requiresGrad: false)
            if shape == [4, 7] {
                var near = [Double](repeating: 1e4, count: 28)
                for i in 0..<28 {
                    let column = Double(i % 7), row = Double(i / 7)
                    near[i] += column * 1e-3 + row
                }
                x = try Tensor(near, shape: shape)
            }
            let g = rng.tensor(shape, requiresGrad: false)
            let axes = Array((shape.count - k)..<shape.count)
            let label = "shape \(shape) k \(k)"
            let kernel = try Tensor.standardizedOverLastAxes(x, k, eps: 1e-5)
            let composite = try Tensor.standardized(x, axes: axes, eps: 1e-5)
            assertValues(kernel, composite.values, tol: 1e-9, "forward \(label)")
            // The backward kernel (nothing recorded) against the rule (x requiring grad, so the
            // differentiable form runs) and against the composite's own gradient.
            let fused = try withNoGrad { try Tensor.standardizedBackward(g, x, k, eps: 1e-5) }
            let xg = x.detach()
            try xg.setRequiresGrad(true)
            let rule = try Tensor.standardizedBackward(g, xg, k, eps: 1e-5)
            XCTAssertNotNil(rule.gradFn, "the rule is recorded \(label)")
            assertValues(fused, rule.values, tol: 1e-12, "backward kernel vs rule \(label)")
            let xc = x.detach()
            try xc.setRequiresGrad(true)
            try Tensor.standardized(xc, axes: axes, eps: 1e-5).backward(seed: g)
            // (Near 1e4 the composite's x - mean loses about 1e-8 relative; elsewhere ~1e-15.)
            let near = shape == [4, 7]
            assertValues(fused, xc.grad!.values, tol: near ? 1e-7 : 1e-9, "backward kernel vs composite \(label)")
            // float32: the kernels against the float64 values (not near 1e4, where float32's
            // ulp, 1e-3, is the rows' whole spread).
            if near { continue }
            let x32 = try x.converted(to: DType.float32), g32 = try g.converted(to: DType.float32)
            let y32 = try Tensor.standardizedOverLastAxes(x32, k, eps: 1e-5)
            let d32 = try withNoGrad { try Tensor.standardizedBackward(g32, x32, k, eps: 1e-5) }
            for (a, b) in zip(y32.values, kernel.values) { XCTAssertEqual(a, b, accuracy: 2e-6 * Swift.max(1, abs(b)), "float32 forward \(label)") }
            for (a, b) in zip(d32.values, fused.values) { XCTAssertEqual(a, b, accuracy: 2e-5 * Swift.max(1, abs(b)), "float32 backward \(label)") }
        }
    }

    /// Attention's safe softmax is one primitive with row kernels; its rule is stated over
    /// differentiable ops. The kernels against the composite form (max, sub, exp, sum, div and
    /// the selects for fully masked rows) and against the rule, with a fully masked row and
    /// partly masked ones (-inf scores), in float64 (1e-13) and float32 (float32 accuracy).
    func testSafeSoftmaxKernelsAgreeWithTheCompositeAndTheRule() throws {
        let shape = [3, 4, 6]
        var values = rng.tensor(shape, requiresGrad: false).values
        for j in 0..<6 { values[j] = -.infinity }             // row 0: every score masked
        for i in 1..<12 { for j in (i % 6)..<6 where j > i % 6 { values[i * 6 + j] = -.infinity } }  // causal-like rows
        let x = try Tensor(values, shape: shape)
        let g = rng.tensor(shape, requiresGrad: false)
        let kernel = try Tensor.safeSoftmaxOverLastAxis(x)
        let composite = try Tensor.safeSoftmaxComposite(x)
        assertValues(kernel, composite.values, tol: 1e-13, "forward")
        XCTAssertEqual(Array(kernel.values[0..<6]), [Double](repeating: 0, count: 6), "a fully masked row gives zeros")
        // The backward kernel (nothing recorded) against the rule (recorded) and the composite's.
        let fused = try withNoGrad { try Tensor.safeSoftmaxBackward(g, x: x, y: kernel) }
        let xg = x.detach()
        try xg.setRequiresGrad(true)
        let rule = try Tensor.safeSoftmaxBackward(g, x: xg, y: kernel)
        XCTAssertNotNil(rule.gradFn, "the rule is recorded")
        assertValues(fused, rule.values, tol: 1e-13, "backward kernel vs rule")
        let xc = x.detach()
        try xc.setRequiresGrad(true)
        try Tensor.safeSoftmaxComposite(xc).backward(seed: g)
        assertValues(fused, xc.grad!.values, tol: 1e-12, "backward kernel vs composite")
        XCTAssertFalse(fused.values.contains { !$0.isFinite }, "no nan or inf in the gradient")
        // float32 against float64.
        let x32 = try x.converted(to: DType.float32), g32 = try g.converted(to: DType.float32)
        let y32 = try Tensor.safeSoftmaxOverLastAxis(x32)
        let d32 = try withNoGrad { try Tensor.safeSoftmaxBackward(g32, x: x32, y: y32) }
        for (a, b) in zip(y32.values, kernel.values) { XCTAssertEqual(a, b, accuracy: 1e-6, "float32 forward") }
        for (a, b) in zip(d32.values, fused.values) { XCTAssertEqual(a, b, accuracy: 1e-5 * Swift.max(1, abs(b)), "float32 backward") }
    }

    // MARK: - batch_norm

    func testBatchNormTrainingAgainstPyTorchAndRunningStatistics() throws {
        // torch.nn.functional.batch_norm(x (3,2,2), rm, rv, w, b, training=True, momentum=0.2, eps=1e-3)
        let x = try t(x12, [3, 2, 2], grad: true)
        let w = try t([1.5, -0.5], [2], grad: true), b = try t([0.2, 0.1], [2], grad: true)
        let rm = try t([0.1, -0.3], [2]), rv = try t([1.2, 0.8], [2])
        let (y, g) = try gradients([x, w, b], seed: seed12) {
            try $0[0].batchNorm(runningMean: rm, runningVar: rv, weight: $0[1], bias: $0[2], training: true, momentum: 0.2, eps: 1e-3)
        }
        assertValues(y, [0.4947043549078257, -1.578388348581707, -0.5473066767931971, 0.12300074486067197, 0.9824908733759511, -0.6028153116454563, -0.35015743513029446, 0.14271566902696226, -1.029628515305066, 2.9336369472484525, 1.0298872565100243, 0.20186044152583305], "bn y")
        assertValues(g[0]!, [0.2765815426588579, -0.029054634988204105, 0.1020015782482664, 0.07903815387623297, 0.30545595047568497, -0.7029855970567379, -0.08798519470079415, -0.01093425041731805, 0.3387823052525625, -0.18877956634216334, 0.041011782961261706, -0.12313206996764894], tol: 1e-11, "bn dx")
        assertValues(g[1]!, [3.253265085672136, 4.28865317030701], "bn dw")
        assertValues(g[2]!, [-0.19999999999999996, 2.6], "bn db")
        // The running statistics, updated in place with the unbiased variance.
        assertValues(rm, [0.13166666666666668, -0.16833333333333333], "running mean")
        assertValues(rv, [1.3228833333333332, 1.0256833333333335], "running var")

        // Eval with the updated statistics: F.batch_norm(x, rm, rv, w, None, training=False, eps=1e-3)
        let (ye, ge) = try gradients([x, w], seed: seed12) {
            try $0[0].batchNorm(runningMean: rm, runningVar: rv, weight: $0[1], bias: nil, training: false, eps: 1e-3)
        }
        assertValues(ye, [0.4801837124672518, -1.7360488066123718, -1.0699852590182872, -0.23110365702085986, 1.0016501875448103, -0.6931158564572548, -0.8232553760778674, -0.20643066872681787, -1.1493990221501185, 3.087516087855044, 0.9038538045050711, -0.13241170384469195], "bn eval y")
        assertValues(ge[0]!, [0.3910998563081688, -0.9125663313857272, -0.5428057424689235, -0.09869195317616791, 0.6518330938469481, -1.1732995689245065, -0.6414976956450914, -0.19738390635233583, -0.26073323753877925, 1.042932950155117, 0.49345976588083956, -0.29607585952850374], "bn eval dx")
        assertValues(ge[1]!, [3.455874211777886, 6.718619199056259], "bn eval dw")
    }

    func testBatchNormUpdateBumpsTheVersionOfTheRunningStatistics() throws {
        let rm = try t([0.0, 0.0], [2]), rv = try t([1.0, 1.0], [2])
        let leaf = try t([2.0, 3.0], [2], grad: true)
        let saved = try leaf.multiplying(rm)  // saves rm for its gradient
        _ = try rng.tensor([4, 2]).batchNorm(runningMean: rm, runningVar: rv, training: true)
        assertThrows("backward through stale running mean", isState) { try saved.sum().backward() }
        // Without running statistics nothing is written.
        _ = try rng.tensor([4, 2]).batchNorm(runningMean: nil, runningVar: nil, training: true)
    }

    func testBatchNormGradientsForwardModeAndSecondOrder() {
        for shape in [[4, 3], [3, 2, 4], [2, 3, 2, 2]] {
            let c = shape[1]
            let x = rng.tensor(shape), w = rng.tensor([c]), b = rng.tensor([c])
            let rm = rng.tensor([c], requiresGrad: false), rv = rng.tensor([c], 0.5, 2, requiresGrad: false)
            let train: ([Tensor]) throws -> Tensor = { try $0[0].batchNorm(runningMean: nil, runningVar: nil, weight: $0[1], bias: $0[2], training: true, eps: 1e-4) }
            assertGradCheck([x, w, b], "batch_norm train \(shape)", train)
            assertJVP([x, w, b], "batch_norm train \(shape)", train)
            // Eval: gradients to x, weight, bias and the running statistics when they require grad.
            let rmg = rng.tensor([c]), rvg = rng.tensor([c], 0.5, 2)
            let eval: ([Tensor]) throws -> Tensor = { try $0[0].batchNorm(runningMean: $0[3], runningVar: $0[4], weight: $0[1], bias: $0[2], training: false) }
            assertGradCheck([x, w, b, rmg, rvg], "batch_norm eval \(shape)", eval)
            assertJVP([x, w, b, rmg, rvg], "batch_norm eval \(shape)", eval)
            _ = (rm, rv)
        }
        let x = rng.tensor([3, 2, 2])
        assertSecondOrder([x], "batch_norm train") { try $0[0].batchNorm(runningMean: nil, runningVar: nil, training: true) }
    }

    // MARK: - group_norm

    func testGroupNormAgainstPyTorch() throws {
        // torch.nn.functional.group_norm(x (2,4,2), 2, w, b, 1e-5).backward(seed)
        let xv = x12 + [0.7, -0.3, 1.1, 0.05], sv = seed12 + [0.25, -0.35, 0.45, 0.9]
        let x = try t(xv, [2, 4, 2], grad: true)
        let w = try t([1.0, -0.5, 2.0, 0.75], [4], grad: true), b = try t([0.1, 0.2, -0.3, 0.4], [4], grad: true)
        let (y, g) = try gradients([x, w, b], seed: sv) { try $0[0].groupNorm(groups: 2, weight: $0[1], bias: $0[2], eps: 1e-5) }
        assertValues(y, [0.18821587502648196, -1.3114540004237114, -0.5057270002118557, 0.24410793751324103, 0.6505828409768346, -3.0109214353783798, 1.3901904593508694, 0.06993651354971023, -0.33327452602311114, 1.6430654172402028, 0.796702636716039, 0.15819280889250684, 0.844952238031245, -2.8188949236687395, 1.378934163516715, -0.06370565640265431], "gn y")
        assertValues(g[0]!, [0.491408800372687, -0.3090565068204729, -0.3305085871215213, 0.14815629356930735, 0.5599288289736468, -0.7596952695872212, -0.686139951944504, 0.8859063925580783, -0.19717827068331284, 0.2008118043181641, 0.30930822591405344, -0.3129417595489047, 0.23158262373821092, -0.9674626674365622, -0.4658101604879998, 1.201690204186351], tol: 1e-11, "gn dx")
        assertValues(g[1]!, [2.3355898018013272, 2.778530128221856, 2.041485997560415, 1.571209980528196], "gn dw")
        assertValues(g[2]!, [0.20000000000000012, 0.9, -0.5, 3.0500000000000003], "gn db")
    }

    func testGroupNormGradientsForwardModeAndSecondOrder() {
        for (shape, groups) in [([2, 4], 2), ([2, 6, 3], 1), ([2, 6, 3], 3), ([2, 6, 3], 6), ([1, 4, 2, 2], 2)] {
            let c = shape[1]
            let x = rng.tensor(shape), w = rng.tensor([c]), b = rng.tensor([c])
            let f: ([Tensor]) throws -> Tensor = { try $0[0].groupNorm(groups: groups, weight: $0[1], bias: $0[2], eps: 1e-4) }
            assertGradCheck([x, w, b], "group_norm \(shape) groups \(groups)", f)
            assertJVP([x, w, b], "group_norm \(shape) groups \(groups)", f)
        }
        assertSecondOrder([rng.tensor([2, 4, 2])], "group_norm") { try $0[0].groupNorm(groups: 2) }
    }

    // MARK: - scaled_dot_product_attention

    private let k16 = [0.7, -0.3, 1.1, 0.05, -0.6, 0.8, 0.2, -1.4, 0.3, 0.6, -0.9, 1.2, 0.4, -0.2, 1.0, 0.0]
    private let v16 = [1.0, 0.5, -1.5, 2.0, 0.25, 1.25, 0.1, -0.2, 0.3, 0.0, 0.5, -0.5, -1.0, 0.4, 0.6, 0.9]

    func testAttentionAgainstPyTorch() throws {
        let q = try t(x12, [2, 3, 2], grad: true), k = try t(k16, [2, 4, 2], grad: true), v = try t(v16, [2, 4, 2], grad: true)
        // F.scaled_dot_product_attention(q, k, v).backward(seed)
        var (y, g) = try gradients([q, k, v], seed: seed12) { try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2]) }
        assertValues(y, [-0.002057490776172538, 0.49490629380614115, -0.5032781905113509, 1.2804240859865943, -0.16460862163552326, 0.8727163738850947, 0.14982700109487138, 0.46350542674883577, 0.4246523922987198, -0.3495940770874909, 0.3227718459504546, -0.2793192245119446], "sdpa y")
        assertValues(g[0]!, [-0.15347766539114352, -0.2981854486627277, -0.2045740883627786, -0.12332890298740387, -0.25917383414775197, -0.392692710326381, 0.14124750247352894, 0.055236789501946326, 0.10906105060793395, -0.07602424314118994, 0.21247360043955782, -0.20532633829826002], tol: 1e-11, "sdpa dq")
        assertValues(g[1]!, [0.7997816488427417, -0.042986510490569875, -1.1990517365374498, 0.30753795045803145, 0.04985965211471448, 0.03602549318412986, 0.34941043557999363, -0.30057693315159145, -0.05502259599236891, 0.079859124547618, 0.37891024631303477, -0.20349305572239287, -0.6442365261255585, 0.002539260845068211, 0.32034887580489274, 0.12109467032970665], tol: 1e-11, "sdpa dk")
        assertValues(g[2]!, [0.5298432722616222, -0.36643576690813945, 0.8265175038503348, -0.33473358421063526, 0.12694329007984223, -0.1123278640444621, 0.4166959338082008, -0.5865027848367632, 0.15610594499958205, 0.28772370121416163, -0.7838869552820004, 1.09428207189111, 0.1903025843844945, 0.18183678787465213, 0.5374784258979237, 0.23615743902007652], tol: 1e-11, "sdpa dv")

        // F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.8): L = 3 < S = 4, top-left.
        (y, g) = try gradients([q, k, v], seed: seed12) { try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], isCausal: true, scale: 0.8) }
        assertValues(y, [1.0, 0.5, -0.6837180885932591, 1.5102308531559554, -0.2915825878418308, 1.308473802530803, 0.3, 0.0, 0.47442768673618374, -0.43606921684045935, 0.343789069399262, -0.36384219651065636], "causal y")
        assertValues(g[0]!, [0.0, 0.0, -0.17240330844601215, -0.15085289489026055, -0.22721002260274326, -0.13411616309251925, 0.0, 0.0, 0.04710308536138128, -0.023551542680690637, 0.19537015505719504, -0.1941898964175334], tol: 1e-11, "causal dq")
        assertValues(g[1]!, [1.2626472626640342, -0.04875561663614587, -1.2886688698221984, 0.06032077537310777, 0.026021607158164494, -0.011565158736961997, 0.0, 0.0, -0.07626465443370693, 0.1004726891403532, 0.33361083813753595, -0.11333999832554466, -0.257346183703829, 0.012867309185191451, 0.0, 0.0], tol: 1e-11, "causal dk")
        assertValues(g[2]!, [0.8617358986539447, -0.9993267908304226, 0.9823903516365481, -0.30010045969246457, 0.05587374970950717, -0.10057274947711291, 0.0, 0.0, 1.1627665153443394, 0.5692859558903718, -0.9735140511294267, 1.1771625655806808, -0.08925246421491273, 0.053551478528947635, 0.0, 0.0], tol: 1e-11, "causal dv")
    }

    func testAttentionMaskWithAFullyMaskedRowGivesZerosAsPyTorch() throws {
        let q = try t(x12, [2, 3, 2], grad: true), k = try t(k16, [2, 4, 2], grad: true), v = try t(v16, [2, 4, 2], grad: true)
        let inf = Double.infinity
        // Row 1 of the (3, 4) mask is all -inf: F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        let m = try t([0.0, -1.0, -inf, 0.5, -inf, -inf, -inf, -inf, 0.2, 0.0, 0.0, -0.3], [3, 4], grad: true)
        let (y, g) = try gradients([q, k, v, m], seed: seed12) { try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], mask: $0[3]) }
        assertValues(y, [0.18205533538626334, 0.08844967745747548, 0.0, 0.0, -0.10953921691182023, 0.9288886284184572, 0.5263711838340264, 0.6493251166157957, 0.0, 0.0, 0.3189427698855726, -0.28519683578135707], "masked y")
        assertValues(g[0]!, [-0.07960348486811394, -0.13009140763894786, 0.0, 0.0, -0.234386886063813, -0.3332422609099564, 0.08280030426465507, -0.0669175261382497, 0.0, 0.0, 0.2067626247358084, -0.19997582872929384], tol: 1e-11, "masked dq")
        assertValues(g[1]!, [0.20910002772359687, -0.08681867832439398, -0.40052194699514154, 0.2610955151894434, -0.006462248177925447, 0.0028721103013001994, 0.19788416744947013, -0.17714894716634963, -0.17995162856568292, -0.02110059766222826, 0.2978054489531784, -0.01796467956484534, -0.25089903323404417, 0.012544951661702209, 0.13304521284654885, 0.026520325565371396], tol: 1e-11, "masked dk")
        assertValues(g[2]!, [0.23937216478972292, -0.46400750806830077, 0.18910012895572953, -0.35081460502051154, 0.0464816678559036, -0.08366700214062649, 0.3250460383986439, -0.7015108847705611, 0.15464854313366888, 0.18616592886783623, -0.6765926556639856, 0.43791045991276795, -0.10254691654522734, 0.0615281499271364, 0.9244910290755441, 0.3143954612922594], tol: 1e-11, "masked dv")
        assertValues(g[3]!, [-0.13981398777375742, -0.13354954363038232, 0.0, 0.2733635314041398, 0.0, 0.0, 0.0, 0.0, 0.36249982559744254, -0.7832113786546808, 0.16725796444111604, 0.25345358861612216], tol: 1e-11, "masked dmask")
        XCTAssertFalse(g.contains { $0!.values.contains { $0.isNaN } }, "no nan gradient")
    }

    func testAttentionGradientsForwardModeAndSecondOrder() {
        // (q shape, k shape, v shape, mask shape or nil, causal, scale)
        let cases: [([Int], [Int], [Int], [Int]?, Bool, Double)] = [
            ([3, 2], [4, 2], [4, 3], nil, false, 0),
            ([2, 3, 2], [2, 4, 2], [2, 4, 1], nil, true, 0),          // L < S, causal
            ([2, 4, 2], [2, 3, 2], [2, 3, 2], nil, true, 0.7),        // L > S, causal
            ([2, 2, 3, 2], [2, 2, 3, 2], [2, 2, 3, 2], [3, 3], false, 0),
            ([2, 1, 3, 2], [1, 2, 4, 2], [2, 4, 2], [2, 1, 1, 4], false, -0.5),  // broadcast batch axes and mask
        ]
        for (qs, ks, vs, ms, causal, scale) in cases {
            var inputs = [rng.tensor(qs), rng.tensor(ks), rng.tensor(vs)]
            if let ms { inputs.append(rng.tensor(ms)) }
            let f: ([Tensor]) throws -> Tensor = { xs in
                try Tensor.scaledDotProductAttention(query: xs[0], key: xs[1], value: xs[2], mask: xs.count > 3 ? xs[3] : nil, isCausal: causal, scale: scale)
            }
            let label = "sdpa q \(qs) k \(ks) v \(vs) mask \(ms ?? []) causal \(causal) scale \(scale)"
            assertGradCheck(inputs, label, f)
            assertJVP(inputs, label, f)
        }
        assertSecondOrder([rng.tensor([2, 3, 2]), rng.tensor([2, 3, 2]), rng.tensor([2, 3, 2])], "sdpa causal") {
            try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], isCausal: true)
        }
    }

    func testAttentionInACaptureReplaysAsEager() throws {
        let q = rng.tensor([2, 3, 4], requiresGrad: false), k = rng.tensor([2, 5, 4], requiresGrad: false), v = rng.tensor([2, 5, 3], requiresGrad: false)
        let fn = try CapturedFunction.capture([q, k, v]) { xs in
            [try Tensor.scaledDotProductAttention(query: xs[0], key: xs[1], value: xs[2])]
        }
        let q2 = rng.tensor([2, 3, 4], requiresGrad: false)
        let replayed = try fn([q2, k, v])[0]
        let eager = try Tensor.scaledDotProductAttention(query: q2, key: k, value: v)
        XCTAssertEqual(replayed.values, eager.values)
    }

    /// A training step with batch_norm (running statistics updated in place), attention,
    /// clip_grad_norm and an SGD step, captured and replayed, against the same steps run eagerly.
    func testCapturedTrainingStepWithBatchNormAndClippingMatchesEager() throws {
        let xs = [rng.tensor([4, 3, 2], requiresGrad: false), rng.tensor([4, 3, 2], requiresGrad: false)]
        let w0 = rng.tensor([3]).values, a0 = rng.tensor([2, 2]).values
        func model() throws -> (params: [Tensor], stats: [Tensor], step: (Tensor) throws -> Tensor) {
            let w = try t(w0, [3], grad: true), a = try t(a0, [2, 2], grad: true)
            let rm = try Tensor.zeros([3]), rv = try Tensor.ones([3])
            let opt = try SGD(parameters: [w, a], learningRate: 0.5)
            return ([w, a], [rm, rv], { x in
                let h = try x.batchNorm(runningMean: rm, runningVar: rv, weight: w, training: true, momentum: 0.3)
                let y = try Tensor.scaledDotProductAttention(query: h.matmul(a), key: h, value: h, isCausal: true)
                let loss = try y.multiplying(y).sum()
                opt.zeroGrad()
                try loss.backward()
                try GradientClipping.clipGradNorm([w, a], maxNorm: 0.1)
                try opt.step()
                return loss
            })
        }
        let eager = try model()
        for x in xs { _ = try eager.step(x) }
        let captured = try model()
        let fn = try CapturedFunction.capture([xs[0]]) { [try captured.step($0[0]).detach()] }
        _ = try fn([xs[1]])
        for (e, c) in zip(eager.params + eager.stats, captured.params + captured.stats) {
            assertValues(c, e.values, tol: 1e-15, "replayed step")
        }
    }

    // MARK: - Empty inputs

    func testEmptyInputsGiveEmptyResultsAndGradients() throws {
        func check(_ inputs: [Tensor], _ expected: [Int], _ label: String, _ f: ([Tensor]) throws -> Tensor) throws {
            let y = try f(inputs)
            XCTAssertEqual(y.shape, expected, label)
            let gs = try Tensor.gradients(of: [y.sum()], withRespectTo: inputs, allowUnused: true)
            for (g, x) in zip(gs, inputs) where g != nil {
                XCTAssertEqual(g!.shape, x.shape, "\(label): gradient shape")
                XCTAssertTrue(g!.values.allSatisfy { $0 == 0 }, "\(label): zero gradient")
            }
        }
        let w3 = rng.tensor([3]), b3 = rng.tensor([3])
        try check([rng.tensor([0, 3]), w3, b3], [0, 3], "layer_norm N = 0") { try $0[0].layerNorm(normalizedAxes: 1, weight: $0[1], bias: $0[2]) }
        try check([rng.tensor([2, 0])], [2, 0], "layer_norm D = 0") { try $0[0].layerNorm(normalizedAxes: 1) }
        let rm = try t([0.5, 0.5, 0.5], [3]), rv = try t([2.0, 2.0, 2.0], [3])
        try check([rng.tensor([0, 3, 2]), w3, b3], [0, 3, 2], "batch_norm N = 0") {
            try $0[0].batchNorm(runningMean: rm, runningVar: rv, weight: $0[1], bias: $0[2], training: true)
        }
        assertValues(rm, [0.5, 0.5, 0.5], "running mean unchanged")
        assertValues(rv, [2.0, 2.0, 2.0], "running var unchanged")
        try check([rng.tensor([0, 3])], [0, 3], "batch_norm eval N = 0") { try $0[0].batchNorm(runningMean: rm, runningVar: rv, training: false) }
        try check([rng.tensor([0, 4, 2]), rng.tensor([4])], [0, 4, 2], "group_norm N = 0") { try $0[0].groupNorm(groups: 2, weight: $0[1]) }
        try check([rng.tensor([2, 4, 0])], [2, 4, 0], "group_norm spatial 0") { try $0[0].groupNorm(groups: 2) }
        try check([rng.tensor([0, 3, 2]), rng.tensor([0, 4, 2]), rng.tensor([0, 4, 5])], [0, 3, 5], "sdpa batch 0") {
            try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2])
        }
        try check([rng.tensor([2, 0, 2]), rng.tensor([2, 4, 2]), rng.tensor([2, 4, 5])], [2, 0, 5], "sdpa L = 0") {
            try Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], isCausal: true)
        }
        // A batch of 0 with long sequences: no (L, S) causal mask is made.
        let huge = try Tensor.scaledDotProductAttention(query: Tensor.zeros([0, 1 << 20, 1]), key: Tensor.zeros([0, 1 << 20, 1]),
                                                        value: Tensor.zeros([0, 1 << 20, 1]), isCausal: true)
        XCTAssertEqual(huge.shape, [0, 1 << 20, 1])
        // S = 0: no keys, zeros (as torch); E = 0: scores 0, the mean of v's rows (as torch).
        let noKeys = try Tensor.scaledDotProductAttention(query: rng.tensor([2, 3, 2]), key: rng.tensor([2, 0, 2]), value: rng.tensor([2, 0, 4]))
        XCTAssertEqual(noKeys.shape, [2, 3, 4])
        XCTAssertTrue(noKeys.values.allSatisfy { $0 == 0 })
        let v = try t([1, 2, 3, 5], [2, 2])
        let noFeatures = try Tensor.scaledDotProductAttention(query: Tensor.zeros([3, 0]), key: Tensor.zeros([2, 0]), value: v)
        assertValues(noFeatures, [2, 3.5, 2, 3.5, 2, 3.5], "E = 0")
    }

    // MARK: - Errors

    func testErrors() throws {
        let x = rng.tensor([2, 3, 4]), x32 = try Tensor.zeros([2, 3, 4], dtype: .float32)
        // layer_norm
        assertThrows("ln k 0", isArgument) { try x.layerNorm(normalizedAxes: 0) }
        assertThrows("ln k > rank", isArgument) { try x.layerNorm(normalizedAxes: 4) }
        assertThrows("ln weight shape", isShape) { try x.layerNorm(normalizedAxes: 1, weight: Tensor.ones([3])) }
        assertThrows("ln bias shape", isShape) { try x.layerNorm(normalizedAxes: 2, bias: Tensor.ones([4])) }
        assertThrows("ln weight dtype", isDType) { try x.layerNorm(normalizedAxes: 1, weight: Tensor.ones([4], dtype: .float32)) }
        assertThrows("ln eps nan", isArgument) { try x.layerNorm(normalizedAxes: 1, eps: .nan) }
        assertThrows("ln eps negative", isArgument) { try x.layerNorm(normalizedAxes: 1, eps: -1e-5) }
        assertThrows("ln eps inf", isArgument) { try x.layerNorm(normalizedAxes: 1, eps: .infinity) }
        // batch_norm
        let c3 = try Tensor.ones([3]), c4 = try Tensor.ones([4])
        assertThrows("bn rank 1", isShape) { try Tensor.ones([3]).batchNorm(runningMean: nil, runningVar: nil, training: true) }
        assertThrows("bn weight shape", isShape) { try x.batchNorm(runningMean: nil, runningVar: nil, weight: c4, training: true) }
        assertThrows("bn running shape", isShape) { try x.batchNorm(runningMean: c4, runningVar: c4, training: false) }
        assertThrows("bn running dtype", isDType) { try x32.batchNorm(runningMean: c3, runningVar: c3, training: false) }
        assertThrows("bn one running tensor", isArgument) { try x.batchNorm(runningMean: c3, runningVar: nil, training: true) }
        assertThrows("bn eval without running", isArgument) { try x.batchNorm(runningMean: nil, runningVar: nil, training: false) }
        assertThrows("bn one value per channel", isArgument) { try Tensor.ones([1, 3]).batchNorm(runningMean: nil, runningVar: nil, training: true) }
        assertThrows("bn one value per channel, spatial", isArgument) { try Tensor.ones([1, 3, 1, 1]).batchNorm(runningMean: nil, runningVar: nil, training: true) }
        assertThrows("bn momentum nan", isArgument) { try x.batchNorm(runningMean: nil, runningVar: nil, training: true, momentum: .nan) }
        assertThrows("bn eps", isArgument) { try x.batchNorm(runningMean: nil, runningVar: nil, training: true, eps: -1) }
        assertThrows("bn shared running", isArgument) { try x.batchNorm(runningMean: c3, runningVar: c3, training: true) }
        let needsGrad = try t([0, 0, 0], [3], grad: true)
        assertThrows("bn running requires grad", isState) { try x.batchNorm(runningMean: needsGrad, runningVar: Tensor.ones([3]), training: true) }
        let nonLeaf = try needsGrad.multiplying(needsGrad)
        assertThrows("bn running non-leaf", isState) { try x.batchNorm(runningMean: nonLeaf, runningVar: Tensor.ones([3]), training: true) }
        // group_norm
        assertThrows("gn groups 0", isArgument) { try x.groupNorm(groups: 0) }
        assertThrows("gn groups not dividing", isArgument) { try x.groupNorm(groups: 2) }
        assertThrows("gn groups negative", isArgument) { try x.groupNorm(groups: -3) }
        assertThrows("gn rank 1", isShape) { try Tensor.ones([4]).groupNorm(groups: 2) }
        assertThrows("gn weight shape", isShape) { try x.groupNorm(groups: 3, weight: c4) }
        assertThrows("gn dtype", isDType) { try x32.groupNorm(groups: 3, bias: c3) }
        assertThrows("gn eps", isArgument) { try x.groupNorm(groups: 3, eps: .nan) }
        // scaled_dot_product_attention
        let q = rng.tensor([2, 3, 4]), k = rng.tensor([2, 5, 4]), v = rng.tensor([2, 5, 6])
        func sdpa(_ q: Tensor, _ k: Tensor, _ v: Tensor, mask: Tensor? = nil, causal: Bool = false, scale: Double = 0) throws -> Tensor {
            try Tensor.scaledDotProductAttention(query: q, key: k, value: v, mask: mask, isCausal: causal, scale: scale)
        }
        assertThrows("sdpa rank 1", isShape) { try sdpa(Tensor.ones([4]), k, v) }
        assertThrows("sdpa E differs", isShape) { try sdpa(q, rng.tensor([2, 5, 3]), v) }
        assertThrows("sdpa S differs", isShape) { try sdpa(q, k, rng.tensor([2, 4, 6])) }
        assertThrows("sdpa batch", isShape) { try sdpa(q, rng.tensor([3, 5, 4]), v) }
        assertThrows("sdpa mask shape", isShape) { try sdpa(q, k, v, mask: Tensor.zeros([3, 4])) }
        assertThrows("sdpa mask broadens", isShape) { try sdpa(q, k, v, mask: Tensor.zeros([4, 2, 3, 5])) }
        assertThrows("sdpa mask and causal", isArgument) { try sdpa(q, k, v, mask: Tensor.zeros([3, 5]), causal: true) }
        assertThrows("sdpa scale nan", isArgument) { try sdpa(q, k, v, scale: .nan) }
        assertThrows("sdpa scale inf", isArgument) { try sdpa(q, k, v, scale: .infinity) }
        assertThrows("sdpa dtype", isDType) { try sdpa(q, k.converted(to: .float32), v) }
        assertThrows("sdpa mask dtype", isDType) { try sdpa(q, k, v, mask: Tensor.zeros([3, 5], dtype: .float32)) }
        // clip_grad_norm
        let p = try t([1, 2], [2], grad: true)
        assertThrows("clip max_norm negative", isArgument) { try GradientClipping.clipGradNorm([p], maxNorm: -1) }
        assertThrows("clip max_norm nan", isArgument) { try GradientClipping.clipGradNorm([p], maxNorm: .nan) }
        assertThrows("clip norm type 0", isArgument) { try GradientClipping.clipGradNorm([p], maxNorm: 1, normType: 0) }
        assertThrows("clip norm type -inf", isArgument) { try GradientClipping.clipGradNorm([p], maxNorm: 1, normType: -.infinity) }
        assertThrows("clip norm type nan", isArgument) { try GradientClipping.clipGradNorm([p], maxNorm: 1, normType: .nan) }
        assertThrows("clip repeated", isArgument) { try GradientClipping.clipGradNorm([p, p], maxNorm: 1) }
        // schedules
        func lr(_ step: Int, _ warmup: Int, _ total: Int, _ base: Double, _ minimum: Double) throws -> Double {
            try LearningRateSchedule.warmupCosine(base: base, minimum: minimum, warmupSteps: warmup, totalSteps: total).rate(at: step)
        }
        assertThrows("lr step negative", isArgument) { try lr(-1, 2, 10, 1, 0) }
        assertThrows("lr warmup negative", isArgument) { try lr(0, -2, 10, 1, 0) }
        assertThrows("lr total below warmup", isArgument) { try lr(0, 5, 4, 1, 0) }
        assertThrows("lr base nan", isArgument) { try lr(0, 2, 10, .nan, 0) }
        assertThrows("lr base negative", isArgument) { try lr(0, 2, 10, -1, 0) }
        assertThrows("lr min above base", isArgument) { try lr(0, 2, 10, 1, 2) }
        assertThrows("lr min inf", isArgument) { try lr(0, 2, 10, 1, .infinity) }
        assertThrows("step schedule size 0", isArgument) { try LearningRateSchedule.stepDecay(base: 1, stepSize: 0, gamma: 0.5).rate(at: 1) }
        assertThrows("step schedule gamma", isArgument) { try LearningRateSchedule.stepDecay(base: 1, stepSize: 2, gamma: -0.5).rate(at: 1) }
        assertThrows("constant negative", isArgument) { try LearningRateSchedule.constant(-1).rate(at: 1) }
    }

    // MARK: - clip_grad_norm

    func testClipGradNormAgainstPyTorch() throws {
        // torch.nn.utils.clip_grad_norm_([p0, p1, p2], 2.5, norm_type) with p2 having no grad.
        let expected: [(Double, Double, [Double], [Double])] = [
            (2, 5.595757321399848, [1.3403009153053955, -1.7870678870738608, 0.4467669717684652], [0.2233834858842326, 0.8935339435369304, -0.4467669717684652, 0.1116917429421163]),
            (.infinity, 4.0, [1.874999531250117, -2.499999375000156, 0.624999843750039], [0.3124999218750195, 1.249999687500078, -0.624999843750039, 0.15624996093750976]),
            (1, 11.75, [0.638297818017207, -0.851063757356276, 0.212765939339069], [0.1063829696695345, 0.425531878678138, -0.212765939339069, 0.05319148483476725]),
            (3, 4.659169865083454, [1.6097284725499463, -2.146304630066595, 0.5365761575166488], [0.2682880787583244, 1.0731523150332976, -0.5365761575166488, 0.1341440393791622]),
        ]
        for (normType, total, g0, g1) in expected {
            let p0 = try t([0, 0, 0], [3], grad: true), p1 = try t([0, 0, 0, 0], [2, 2], grad: true), p2 = try t([0, 0], [2], grad: true)
            p0.grad = try t([3, -4, 1], [3])
            p1.grad = try t([0.5, 2, -1, 0.25], [2, 2])
            let before = p0.grad!
            let norm = try GradientClipping.clipGradNorm([p0, p1, p2], maxNorm: 2.5, normType: normType)
            XCTAssertEqual(norm, total, accuracy: 1e-14 * total, "total norm \(normType)")
            assertValues(p0.grad!, g0, tol: 1e-14, "p0 \(normType)")
            assertValues(p1.grad!, g1, tol: 1e-14, "p1 \(normType)")
            XCTAssertNil(p2.grad)
            assertValues(before, [3, -4, 1], "a gradient read earlier keeps its values")
        }
        // Below max_norm: nothing changes (the same gradient object).
        let p = try t([0, 0], [2], grad: true)
        p.grad = try t([0.3, 0.4], [2])
        let g = p.grad!
        XCTAssertEqual(try GradientClipping.clipGradNorm([p], maxNorm: 1), 0.5, accuracy: 1e-15)
        XCTAssertTrue(p.grad! === g)
        // float32 gradients: norm in double, gradients scaled in float32.
        let p32 = try Tensor.zeros([2], dtype: .float32)
        try p32.setRequiresGrad(true)
        p32.grad = try Tensor([3, 4], shape: [2], dtype: .float32)
        XCTAssertEqual(try GradientClipping.clipGradNorm([p32], maxNorm: 1), 5)
        XCTAssertEqual(p32.grad!.dtype, .float32)
        assertValues(p32.grad!, [0.6, 0.8], tol: 1e-6)
        // No gradients at all, or no parameters: 0.
        XCTAssertEqual(try GradientClipping.clipGradNorm([try t([1], [1], grad: true)], maxNorm: 1), 0)
        XCTAssertEqual(try GradientClipping.clipGradNorm([], maxNorm: 1), 0)
    }

    func testClipGradNormNonFiniteTotalScalesAsPyTorch() throws {
        // torch: a nan total scales every gradient by nan; an inf total by 0 (inf * 0 = nan).
        let a = try t([0, 0], [2], grad: true), b = try t([0, 0], [2], grad: true)
        a.grad = try t([.nan, 1], [2])
        b.grad = try t([2, 3], [2])
        XCTAssertTrue(try GradientClipping.clipGradNorm([a, b], maxNorm: 1).isNaN)
        XCTAssertTrue(b.grad!.values.allSatisfy { $0.isNaN })
        a.grad = try t([.infinity, 1], [2])
        b.grad = try t([2, 3], [2])
        XCTAssertEqual(try GradientClipping.clipGradNorm([a, b], maxNorm: 1), .infinity)
        XCTAssertTrue(a.grad!.values[0].isNaN)
        XCTAssertEqual(a.grad!.values[1], 0)
        XCTAssertEqual(b.grad!.values, [0, 0])
        // errorIfNonfinite: an error, nothing scaled.
        a.grad = try t([.infinity, 1], [2])
        b.grad = try t([2, 3], [2])
        assertThrows("non-finite", isArgument) { try GradientClipping.clipGradNorm([a, b], maxNorm: 1, errorIfNonfinite: true) }
        XCTAssertEqual(b.grad!.values, [2, 3])
    }

    // MARK: - Learning-rate schedules

    func testWarmupCosineSchedule() throws {
        let s = LearningRateSchedule.warmupCosine(base: 1e-3, minimum: 1e-4, warmupSteps: 4, totalSteps: 12)
        // Warm-up: 1e-3 * (step + 1) / 4.
        for step in 0..<4 { XCTAssertEqual(try s.rate(at: step), 1e-3 * Double(step + 1) / 4, accuracy: 1e-18) }
        // Cosine: 1e-4 + 9e-4 * (1 + cos(pi * (step - 4) / 8)) / 2, by hand at 4, 6, 8, 10.
        XCTAssertEqual(try s.rate(at: 4), 1e-3, accuracy: 1e-18)
        XCTAssertEqual(try s.rate(at: 6), 1e-4 + 9e-4 * (1 + 0.7071067811865476) / 2, accuracy: 1e-17)
        XCTAssertEqual(try s.rate(at: 8), 5.5e-4, accuracy: 1e-17)
        XCTAssertEqual(try s.rate(at: 10), 1e-4 + 9e-4 * (1 - 0.7071067811865476) / 2, accuracy: 1e-17)
        for step in [12, 13, 1000] { XCTAssertEqual(try s.rate(at: step), 1e-4) }
        // No warm-up; warm-up as long as the schedule.
        XCTAssertEqual(try LearningRateSchedule.warmupCosine(base: 2, minimum: 0, warmupSteps: 0, totalSteps: 4).rate(at: 0), 2)
        XCTAssertEqual(try LearningRateSchedule.warmupCosine(base: 2, minimum: 0, warmupSteps: 0, totalSteps: 4).rate(at: 2), 1, accuracy: 1e-15)
        XCTAssertEqual(try LearningRateSchedule.warmupCosine(base: 2, minimum: 0.5, warmupSteps: 3, totalSteps: 3).rate(at: 3), 0.5)
        // Step decay (torch StepLR) and constant.
        XCTAssertEqual(try LearningRateSchedule.stepDecay(base: 0.1, stepSize: 3, gamma: 0.5).rate(at: 7), 0.025)
        XCTAssertEqual(try LearningRateSchedule.constant(0.3).rate(at: 99), 0.3)
        // Driving an optimizer.
        let p = try t([1], [1], grad: true)
        let opt = try SGD(parameters: [p], learningRate: 1)
        XCTAssertEqual(try s.apply(to: opt, step: 1), 5e-4)
        XCTAssertEqual(opt.learningRate, 5e-4)
    }

    // MARK: - Timing (the composition's cost; run with AUTOGRAD_TIMING=1)

    func testAttentionTiming() throws {
        guard ProcessInfo.processInfo.environment["AUTOGRAD_TIMING"] != nil else { throw XCTSkip("set AUTOGRAD_TIMING=1") }
        // batch 32, 4 heads, L = S = E = 16, float32, forward + backward.
        let q = try Tensor.normal([32, 4, 16, 16], seed: 1, dtype: .float32)
        let k = try Tensor.normal([32, 4, 16, 16], seed: 2, dtype: .float32)
        let v = try Tensor.normal([32, 4, 16, 16], seed: 3, dtype: .float32)
        for x in [q, k, v] { try x.setRequiresGrad(true) }
        func run(causal: Bool) throws -> Double {
            var best = Double.infinity
            for _ in 0..<30 {
                let start = DispatchTime.now().uptimeNanoseconds
                let y = try Tensor.scaledDotProductAttention(query: q, key: k, value: v, isCausal: causal)
                try y.sum().backward()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e3)
            }
            return best
        }
        print("sdpa composite f32 fwd+bwd: \(try run(causal: false)) us, causal \(try run(causal: true)) us")
    }
}
