import AutogradEngine

@_cdecl("ag_backward")
public func ag_backward(_ root: UInt64, _ seed: UInt64, _ retainGraph: UInt8, _ createGraph: UInt8) -> Int32 {
    guarded("ag_backward") {
        let r = try Arg.tensor(root, "root")
        let s = seed == 0 ? nil : try Arg.tensor(seed, "seed")
        try r.backward(seed: s, retainGraph: retainGraph != 0, createGraph: createGraph != 0)
    }
}

@_cdecl("ag_grad")
public func ag_grad(_ outGrads: UnsafeMutablePointer<UInt64>?, _ outputs: UnsafePointer<UInt64>?, _ noutputs: Int64,
                    _ seeds: UnsafePointer<UInt64>?, _ inputs: UnsafePointer<UInt64>?, _ ninputs: Int64,
                    _ retainGraph: UInt8, _ createGraph: UInt8, _ allowUnused: UInt8) -> Int32 {
    guarded("ag_grad") {
        let out = try Arg.out(outGrads, "out_grads")
        let outs = try Arg.tensorList(outputs, noutputs, "outputs", count: "noutputs")
        let ins = try Arg.tensorList(inputs, ninputs, "inputs", count: "ninputs")
        var seedList: [Tensor?]? = nil
        if let seeds {
            seedList = try (0..<outs.count).map { seeds[$0] == 0 ? nil : try Arg.tensor(seeds[$0], "seeds[\($0)]") }
        }
        let grads = try Tensor.gradients(of: outs, withRespectTo: ins, seeds: seedList, retainGraph: retainGraph != 0,
                                         createGraph: createGraph != 0, allowUnused: allowUnused != 0)
        // Make every handle first, so a failure leaves nothing half-written.
        var handles: [UInt64] = []
        do {
            for g in grads { handles.append(try g.map(Arg.handle) ?? 0) }
        } catch {
            for h in handles where h != 0 { _ = HandleTable.shared.remove(h, kind: .tensor) }
            throw error
        }
        for (k, h) in handles.enumerated() { out[k] = h }
    }
}
