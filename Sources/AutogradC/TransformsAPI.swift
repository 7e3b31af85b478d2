import AutogradEngine

// Function transforms: jvp, vjp, Jacobians, Hessian-vector products and Hessians of a C build
// function (ag_build_fn, run through BuildFunction as ag_gradcheck runs it).

/// The values of ag_jacobian_mode.
private enum JacobianModeArg: Int32 {
    case reverse = 1, forward = 2
}

/// New handles for `tensors`, written to `outs` only once every one exists, so that a failure
/// writes nothing and leaks nothing.
private func handOut(_ tensors: [Tensor], to outs: [UnsafeMutablePointer<UInt64>]) throws {
    var handles: [UInt64] = []
    do {
        for t in tensors { handles.append(try Arg.handle(t)) }
    } catch {
        for h in handles { _ = HandleTable.shared.remove(h, kind: .tensor) }
        throw error
    }
    for (out, h) in zip(outs, handles) { out.pointee = h }
}

@_cdecl("ag_jvp")
public func ag_jvp(_ output: UnsafeMutablePointer<UInt64>?, _ outputTangent: UnsafeMutablePointer<UInt64>?,
                   _ build: CBuildFunction?, _ userData: UnsafeMutableRawPointer?,
                   _ primals: UnsafePointer<UInt64>?, _ nprimals: Int64, _ tangents: UnsafePointer<UInt64>?) -> Int32 {
    guarded("ag_jvp") {
        let outY = try Arg.out(output, "output")
        let outT = try Arg.out(outputTangent, "output_tangent")
        let f = try BuildFunction(build, userData)
        let xs = try Arg.tensorList(primals, nprimals, "primals", count: "nprimals")
        guard let tangents else { throw AutogradError.argument("tangents is NULL but nprimals is \(nprimals)") }
        let ts = try xs.indices.map { try Arg.tensor(tangents[$0], "tangents[\($0)]") }
        try MemoryReserve.ensureArmed()
        let (ys, tys) = try BuildFunction.nested("ag_jvp") {
            try Transforms.jvp({ try [f($0)] }, primals: xs, tangents: ts)
        }
        try handOut([ys[0], tys[0]], to: [outY, outT])
    }
}

@_cdecl("ag_vjp")
public func ag_vjp(_ output: UnsafeMutablePointer<UInt64>?, _ grads: UnsafeMutablePointer<UInt64>?,
                   _ build: CBuildFunction?, _ userData: UnsafeMutableRawPointer?,
                   _ primals: UnsafePointer<UInt64>?, _ nprimals: Int64, _ cotangent: UInt64) -> Int32 {
    guarded("ag_vjp") {
        let outY = try Arg.out(output, "output")
        let outG = try Arg.out(grads, "grads")
        let f = try BuildFunction(build, userData)
        let xs = try Arg.tensorList(primals, nprimals, "primals", count: "nprimals")
        let c = try Arg.tensor(cotangent, "cotangent")
        try MemoryReserve.ensureArmed()
        // Differentiable again where a primal requires grad, as a jvp's results are.
        let record = GradMode.isEnabled && xs.contains { $0.requiresGrad }
        let (ys, gs) = try BuildFunction.nested("ag_vjp") {
            try Transforms.vjp({ try [f($0)] }, primals: xs, cotangents: [c], createGraph: record)
        }
        try handOut([ys[0]] + gs, to: [outY] + gs.indices.map { outG + $0 })
    }
}

@_cdecl("ag_jacobian")
public func ag_jacobian(_ jacobian: UnsafeMutablePointer<UInt64>?, _ build: CBuildFunction?,
                        _ userData: UnsafeMutableRawPointer?, _ input: UInt64, _ mode: Int32) -> Int32 {
    produce("ag_jacobian", jacobian) {
        let f = try BuildFunction(build, userData)
        let x = try Arg.tensor(input, "input")
        guard let m = JacobianModeArg(rawValue: mode) else {
            throw AutogradError.argument("unknown Jacobian mode \(mode) (use AG_JACOBIAN_REVERSE = 1 or AG_JACOBIAN_FORWARD = 2)")
        }
        return try BuildFunction.nested("ag_jacobian") {
            try Transforms.jacobian({ try f([$0]) }, at: x, mode: m == .reverse ? .reverse : .forward)
        }
    }
}

@_cdecl("ag_hvp")
public func ag_hvp(_ product: UnsafeMutablePointer<UInt64>?, _ build: CBuildFunction?,
                   _ userData: UnsafeMutableRawPointer?, _ input: UInt64, _ v: UInt64) -> Int32 {
    produce("ag_hvp", product) {
        let f = try BuildFunction(build, userData)
        let x = try Arg.tensor(input, "input")
        let vec = try Arg.tensor(v, "v")
        return try BuildFunction.nested("ag_hvp") { try Transforms.hvp({ try f([$0]) }, at: x, vector: vec) }
    }
}

@_cdecl("ag_hessian")
public func ag_hessian(_ hessian: UnsafeMutablePointer<UInt64>?, _ build: CBuildFunction?,
                       _ userData: UnsafeMutableRawPointer?, _ input: UInt64) -> Int32 {
    produce("ag_hessian", hessian) {
        let f = try BuildFunction(build, userData)
        let x = try Arg.tensor(input, "input")
        return try BuildFunction.nested("ag_hessian") { try Transforms.hessian({ try f([$0]) }, at: x) }
    }
}
