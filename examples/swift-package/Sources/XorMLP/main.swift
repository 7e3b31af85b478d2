// A client program of the Swift API: the C example's graph checked against hand-derived
// gradients, bad input as thrown errors, tensors handed to tasks, grad mode across `await`, and
// a small MLP learning XOR. Exits 1 if any check fails.
import Autograd
#if canImport(Glibc)
import Glibc
#endif

var failures = 0
@MainActor func expect(_ ok: Bool, _ what: String) {
    print("\(ok ? "ok  " : "FAIL") \(what)")
    if !ok { failures += 1 }
}
func close(_ a: [Double], _ b: [Double], tolerance: Double = 1e-12) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { Swift.abs($0 - $1) <= tolerance }
}

// 1. bindings/c/example.c's graph, f(x, W) = sum(relu(x @ W) * 2). By hand: z = x @ W =
//    [[4, -2.5], [-3, 3.125]], f = 2 * (4 + 3.125) = 14.25, dz = 2 * [z > 0] = [[2, 0], [0, 2]],
//    df/dx = dz @ W^T, df/dW = x^T @ dz.
let x = try Tensor([1, 2, -1, 0.5, -1.5, 2], shape: [2, 3])
let w = try Tensor([0.5, -1, 1.5, 0.25, -0.5, 2], shape: [3, 2])
try x.setRequiresGrad(true)
try w.setRequiresGrad(true)
let f = (relu(x.matmul(w)) * 2).sum()
try f.backward()
expect(close(f.values, [14.25]), "f = \(f.item())")
expect(close(x.grad?.values ?? [], [1, 3, -1, -2, 0.5, 4]), "df/dx = \(x.grad?.values ?? [])")
expect(close(w.grad?.values ?? [], [2, 1, 4, -3, -2, 4]), "df/dW = \(w.grad?.values ?? [])")

// 2. Bad input is a thrown AutogradError carrying the library's message.
do {
    _ = try Tensor([1, 2, 3], shape: [2, 2])
    expect(false, "3 values for shape [2, 2] threw")
} catch let error as AutogradError {
    expect(error.message.contains("[2, 2]"), "3 values for shape [2, 2]: \(error)")
}
do {
    _ = try withError { x.matmul(x) }   // (2, 3) @ (2, 3)
    expect(false, "a mismatched matmul inside withError threw")
} catch AutogradError.shape(let message) {
    expect(message.contains("matmul"), "(2, 3) @ (2, 3) inside withError: AutogradError.shape: \(message)")
}
expect(close(try withError { (x * 3).sum().values }, [9]), "withError returns the body's value when nothing fails")

// 3. Tensors are Sendable: handed to child tasks, used there, results handed back.
let sums = await withTaskGroup(of: Double.self) { group in
    for k in 1...4 {
        group.addTask { (w.detach() * Double(k)).sum().item() }
    }
    var total = 0.0
    for await s in group { total += s }
    return total
}
expect(close([sums], [2.75 * 10]), "four tasks summing k * W: \(sums)")

// 4. Grad mode bound to the task holds across `await`, whichever thread the task resumes on
//    (a detached task on the global executor, beside others that keep its threads busy; a
//    per-thread flag would leak into them, and be lost when this task moves).
let (recorded, threads): ([Bool], Int) = await Task.detached {
    await withTaskGroup(of: Void.self) { others in
        for _ in 0..<4 {
            others.addTask { for _ in 0..<200 { await Task.yield() } }
        }
        var seen: [Bool] = []
        var threadIDs = Set<UInt>()
        await withNoGrad {
            for _ in 0..<200 {
                await Task.yield()
                threadIDs.insert(UInt(pthread_self()))
                seen.append((w * 2).requiresGrad)
            }
            seen.append(GradMode.with(enabled: true) { (w * 2).requiresGrad })  // a nested scope wins
        }
        await others.waitForAll()
        return (seen, threadIDs.count)
    }
}.value
expect(recorded.dropLast().allSatisfy { !$0 } && recorded.last == true,
       "withNoGrad { await ... } records nothing across 200 awaits on \(threads) threads; a nested GradMode.with(enabled: true) records")
expect((w * 2).requiresGrad, "grad mode is back on after the scope")

// 5. A 2-8-1 MLP learns XOR with Adam: relu(x.matmul(w1) + b1), then a linear layer.
let inputs = try Tensor([0, 0, 0, 1, 1, 0, 1, 1], shape: [4, 2])
let targets = try Tensor([0, 1, 1, 0], shape: [4, 1])
let w1 = Tensor.normal([2, 8], std: 1, seed: 1), b1 = Tensor.zeros([8])
let w2 = Tensor.normal([8, 1], std: 0.5, seed: 2), b2 = Tensor.zeros([1])
let parameters = [w1, b1, w2, b2]
for p in parameters { try p.setRequiresGrad(true) }
let optimizer = try Adam(parameters: parameters, learningRate: 0.05)
func predict(_ x: Tensor) -> Tensor { tanh(x.matmul(w1) + b1).matmul(w2) + b2 }
var loss = 0.0
for step in 0...500 {
    for p in parameters { p.zeroGrad() }
    let l = predict(inputs).mseLoss(targets)
    try l.backward()
    try optimizer.step()
    loss = l.item()
    if step % 100 == 0 { print("step \(step)  loss \(loss)") }
}
let predictions = withNoGrad { predict(inputs) }.values
print("xor predictions:", predictions.map { ($0 * 1000).rounded() / 1000 })
expect(loss < 1e-3 && close(predictions, [0, 1, 1, 0], tolerance: 0.1), "the MLP learned XOR (loss \(loss))")

print(failures == 0 ? "swift package client: all checks passed" : "swift package client: \(failures) checks FAILED")
if failures != 0 { exit(1) }
