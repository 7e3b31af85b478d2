import Autograd

@_cdecl("ag_backward")
public func ag_backward(_ root: UInt64, _ seed: UInt64, _ retainGraph: UInt8, _ createGraph: UInt8) -> Int32 {
    guarded("ag_backward") {
        let r = try Arg.tensor(root, "root")
        let s = seed == 0 ? nil : try Arg.tensor(seed, "seed")
        try r.backward(seed: s, retainGraph: retainGraph != 0, createGraph: createGraph != 0)
    }
}
