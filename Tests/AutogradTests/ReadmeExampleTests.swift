import Foundation
import XCTest
import AutogradEngine

/// The engine-level forms (throwing, AutogradEngine) of what README.md's Swift program shows;
/// the program itself is built and run by scripts/swift-package-tests.sh.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeSwiftSnippet() throws {
        let x = try Tensor([1, -2, 3, 0.5, 1, -1], shape: [2, 3])
        let w = try Tensor([1, 2, -1, 0.5, 2, -3], shape: [3, 2])
        try x.setRequiresGrad(true)
        try w.setRequiresGrad(true)
        let f = try (x.matmul(w).relu() * 2).sum()
        try f.backward()
        XCTAssertEqual(w.grad!.values, [2, 1, -4, 2, 6, -2])  // xᵀ(2·mask), by hand

        let y = try (x ** 3 + 2 * x).sum()
        let g = try Tensor.gradients(of: [y], withRespectTo: [x], createGraph: true)[0]!
        XCTAssertEqual(g.values, [1, -2, 3, 0.5, 1, -1].map { 3 * $0 * $0 + 2 })  // 3x² + 2

        let (values, tangents) = try Transforms.jvp({ [try $0[0].tanh().sum()] }, primals: [x], tangents: [Tensor.ones(x.shape)])
        let h = try Transforms.hessian({ try ($0 ** 3).sum() }, at: x)   // shape [2, 3, 2, 3]
        let xs: [Double] = [1, -2, 3, 0.5, 1, -1]
        XCTAssertEqual(values[0].values[0], xs.map { Foundation.tanh($0) }.reduce(0, +), accuracy: 1e-12)
        // d/dt Σ tanh(x + t·1) = Σ (1 - tanh²(x)), by hand
        XCTAssertEqual(tangents[0].values[0], xs.map { 1 - Foundation.tanh($0) * Foundation.tanh($0) }.reduce(0, +), accuracy: 1e-12)
        XCTAssertEqual(h.shape, [2, 3, 2, 3])
        // The Hessian of Σ x³ is diagonal, 6x on it (by hand).
        for i in 0..<6 { for j in 0..<6 { XCTAssertEqual(h.values[i * 6 + j], i == j ? 6 * xs[i] : 0, accuracy: 1e-12) } }

        let step = try CapturedFunction.capture([x]) { inputs in
            let loss = try inputs[0].matmul(w).tanh().sum()
            return [loss] + (try Tensor.gradients(of: [loss], withRespectTo: inputs).map { $0! })
        }
        let x2 = try Tensor([0.5, 1, -1, 2, 0, 1], shape: [2, 3])
        let again = try step([x2])
        // By hand: loss = Σ tanh(x2·w); d loss / dx2 = (1 - tanh²(x2·w)) wᵀ.
        let ws: [Double] = [1, 2, -1, 0.5, 2, -3], x2s: [Double] = [0.5, 1, -1, 2, 0, 1]
        var dx = [Double](repeating: 0, count: 6), total = 0.0
        for i in 0..<2 {
            for j in 0..<2 {
                let z = (0..<3).map { x2s[i * 3 + $0] * ws[$0 * 2 + j] }.reduce(0, +)
                total += Foundation.tanh(z)
                for k in 0..<3 { dx[i * 3 + k] += (1 - Foundation.tanh(z) * Foundation.tanh(z)) * ws[k * 2 + j] }
            }
        }
        XCTAssertEqual(try again[0].item(), total, accuracy: 1e-12)
        for k in 0..<6 { XCTAssertEqual(again[1].values[k], dx[k], accuracy: 1e-12) }

        let square = try CustomOp(name: "square", inputs: 1, outputs: 1, forward: { ctx, xs in
            try ctx.save(xs)
            return [try xs[0] * xs[0]]
        }, backward: { ctx, grads in [try grads[0] * 2 * ctx.saved()[0]] })
        let before = x.grad!.values
        let s = try square(x)[0].sum()
        try s.backward()   // x.grad gains 2x
        XCTAssertEqual(try s.item(), xs.map { $0 * $0 }.reduce(0, +), accuracy: 1e-12)
        for k in 0..<6 { XCTAssertEqual(x.grad!.values[k], before[k] + 2 * xs[k], accuracy: 1e-12) }

        let opt = try Adam(parameters: [w], learningRate: 0.01)
        try opt.step()
        let path = "/tmp/ag-readme-\(getpid()).safetensors"
        defer { unlink(path) }
        let saved = w.values
        try Checkpoint.save(to: path, parameters: [("w", w)], optimizer: opt, metadata: [("epoch", "1")])
        try opt.step()
        try Checkpoint.load(from: path, parameters: [("w", w)], optimizer: opt)
        XCTAssertEqual(w.values, saved)  // the values at the save, restored
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.entries.map(\.name), ["w", "optimizer.w.exp_avg", "optimizer.w.exp_avg_sq", "optimizer.w.step"])
        XCTAssertEqual(file.metadataValue(forKey: "epoch"), "1")
    }
}
