import Autograd

// Operations: each checks its handles and arguments, runs the engine op, returns a new handle.

@_cdecl("ag_add")
public func ag_add(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_add", out) { let (a, b) = try Arg.tensors(a, b); return try a.adding(b) }
}

@_cdecl("ag_sub")
public func ag_sub(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_sub", out) { let (a, b) = try Arg.tensors(a, b); return try a.subtracting(b) }
}

@_cdecl("ag_mul")
public func ag_mul(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_mul", out) { let (a, b) = try Arg.tensors(a, b); return try a.multiplying(b) }
}

@_cdecl("ag_div")
public func ag_div(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_div", out) { let (a, b) = try Arg.tensors(a, b); return try a.dividing(by: b) }
}

@_cdecl("ag_neg")
public func ag_neg(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_neg", out) { try Arg.tensor(a, "a").negated() }
}

@_cdecl("ag_exp")
public func ag_exp(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_exp", out) { try Arg.tensor(a, "a").exp() }
}

@_cdecl("ag_log")
public func ag_log(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_log", out) { try Arg.tensor(a, "a").log() }
}

@_cdecl("ag_log1p")
public func ag_log1p(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_log1p", out) { try Arg.tensor(a, "a").log1p() }
}

@_cdecl("ag_expm1")
public func ag_expm1(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_expm1", out) { try Arg.tensor(a, "a").expm1() }
}

@_cdecl("ag_erf")
public func ag_erf(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_erf", out) { try Arg.tensor(a, "a").erf() }
}

@_cdecl("ag_relu")
public func ag_relu(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64) -> Int32 {
    produce("ag_relu", out) { try Arg.tensor(a, "a").relu() }
}

@_cdecl("ag_sum")
public func ag_sum(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_sum", out) { try Arg.tensor(a, "a").sum(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_mean")
public func ag_mean(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ axes: UnsafePointer<Int64>?, _ naxes: Int64, _ keepdims: UInt8) -> Int32 {
    produce("ag_mean", out) { try Arg.tensor(a, "a").mean(axes: Arg.axes(axes, naxes), keepDims: keepdims != 0) }
}

@_cdecl("ag_matmul")
public func ag_matmul(_ out: UnsafeMutablePointer<UInt64>?, _ a: UInt64, _ b: UInt64) -> Int32 {
    produce("ag_matmul", out) { let (a, b) = try Arg.tensors(a, b); return try a.matmul(b) }
}
