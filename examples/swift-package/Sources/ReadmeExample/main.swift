import Autograd

// f(x, W) = sum(relu(x @ W) * 2), as in bindings/c/example.c: math without `try`.
let x = try Tensor([1, 2, -1, 0.5, -1.5, 2], shape: [2, 3])
let w = try Tensor([0.5, -1, 1.5, 0.25, -0.5, 2], shape: [3, 2])
try x.setRequiresGrad(true)
try w.setRequiresGrad(true)
let f = (relu(x.matmul(w)) * 2).sum()
try f.backward()
print(f.item(), x.grad!.values, w.grad!.values)   // 14.25 [1, 3, -1, -2, 0.5, 4] [2, 1, 4, -3, -2, 4]

// Misuse stops the program with the library's message; inside withError it is thrown instead.
do {
    _ = try withError { x.matmul(x) }
} catch {
    print(error)   // matmul: inner extents differ: [2, 3] @ [2, 3]
}

// Gradients as values, forward mode, Hessians.
let y = (x ** 3 + 2 * x).sum()
let g = try Tensor.gradients(of: [y], withRespectTo: [x], createGraph: true)[0]!   // 3x² + 2
let (values, tangents) = try Transforms.jvp({ [$0[0].tanh().sum()] }, primals: [x], tangents: [Tensor.ones(x.shape)])
let h = try Transforms.hessian({ ($0 ** 3).sum() }, at: x)   // shape [2, 3, 2, 3]

// Capture once, replay on new inputs: Σ tanh(x·W) and its gradient, bit for bit eager's.
let step = try CapturedFunction.capture([x]) { inputs in
    let loss = inputs[0].matmul(w).tanh().sum()
    return [loss] + (try Tensor.gradients(of: [loss], withRespectTo: inputs).map { $0! })
}
let again = try step([try Tensor([0.5, 1, -1, 2, 0, 1], shape: [2, 3])])   // [loss, d loss / dx]

// A user-defined op: its forward and its backward as closures (here x², with derivative 2x).
let square = try CustomOp(name: "square", inputs: 1, outputs: 1, forward: { ctx, xs in
    try ctx.save(xs)
    return [xs[0] * xs[0]]
}, backward: { ctx, grads in [grads[0] * 2 * (try ctx.saved()[0])] })
try square(x)[0].sum().backward()   // x.grad gains 2x

// Tensors are Sendable; grad mode set by an async scope holds across `await`.
let total = await Task.detached { (w.detach() * 2).sum().item() }.value   // 5.5
let recorded = await withNoGrad {
    await Task.yield()
    return (w * 2).requiresGrad   // false
}

// Weights and an optimizer's state in one safetensors file; a resumed run continues bit for bit.
let opt = try Adam(parameters: [w], learningRate: 0.01)
try opt.step()
try Checkpoint.save(to: "/tmp/ck.safetensors", parameters: [("w", w)], optimizer: opt, metadata: [("epoch", "1")])
try Checkpoint.load(from: "/tmp/ck.safetensors", parameters: [("w", w)], optimizer: opt)
let file = try SafetensorsFile(path: "/tmp/ck.safetensors")   // the header only
print(file.entries.map(\.name), file.metadataValue(forKey: "epoch")!)   // ["w", "optimizer.w.exp_avg", ...] 1
