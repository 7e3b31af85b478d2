import AutogradEngine

// Convolution and pooling (the header's section of that name): pairs come as two int64_t.

@_cdecl("ag_conv2d")
public func ag_conv2d(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ weight: UInt64, _ bias: UInt64,
                      _ strideH: Int64, _ strideW: Int64, _ paddingH: Int64, _ paddingW: Int64,
                      _ dilationH: Int64, _ dilationW: Int64, _ groups: Int64) -> Int32 {
    produce("ag_conv2d", out) {
        try Arg.tensor(x, "x").conv2d(weight: Arg.tensor(weight, "weight"), bias: bias == 0 ? nil : Arg.tensor(bias, "bias"),
                                      stride: (Int(strideH), Int(strideW)), padding: (Int(paddingH), Int(paddingW)),
                                      dilation: (Int(dilationH), Int(dilationW)), groups: Int(groups))
    }
}

@_cdecl("ag_conv1d")
public func ag_conv1d(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ weight: UInt64, _ bias: UInt64,
                      _ stride: Int64, _ padding: Int64, _ dilation: Int64, _ groups: Int64) -> Int32 {
    produce("ag_conv1d", out) {
        try Arg.tensor(x, "x").conv1d(weight: Arg.tensor(weight, "weight"), bias: bias == 0 ? nil : Arg.tensor(bias, "bias"),
                                      stride: Int(stride), padding: Int(padding), dilation: Int(dilation), groups: Int(groups))
    }
}

/// A pool's stride: (0, 0) is the default (the kernel); anything else must be positive.
private func poolStride(_ op: String, _ h: Int64, _ w: Int64) throws -> (Int, Int)? {
    if h == 0 && w == 0 { return nil }
    guard h > 0 && w > 0 else {
        throw AutogradError.argument("\(op): stride must be positive, or 0, 0 for the kernel size; got (\(h), \(w))")
    }
    return (Int(h), Int(w))
}

@_cdecl("ag_max_pool2d")
public func ag_max_pool2d(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ kernelH: Int64, _ kernelW: Int64,
                          _ strideH: Int64, _ strideW: Int64, _ paddingH: Int64, _ paddingW: Int64) -> Int32 {
    produce("ag_max_pool2d", out) {
        let t = try Arg.tensor(x, "x")
        return try t.maxPool2d(kernel: (Int(kernelH), Int(kernelW)), stride: poolStride("max_pool2d", strideH, strideW),
                               padding: (Int(paddingH), Int(paddingW)))
    }
}

@_cdecl("ag_avg_pool2d")
public func ag_avg_pool2d(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ kernelH: Int64, _ kernelW: Int64,
                          _ strideH: Int64, _ strideW: Int64, _ paddingH: Int64, _ paddingW: Int64,
                          _ countIncludePad: UInt8) -> Int32 {
    produce("ag_avg_pool2d", out) {
        let t = try Arg.tensor(x, "x")
        return try t.avgPool2d(kernel: (Int(kernelH), Int(kernelW)), stride: poolStride("avg_pool2d", strideH, strideW),
                               padding: (Int(paddingH), Int(paddingW)), countIncludePad: countIncludePad != 0)
    }
}

@_cdecl("ag_adaptive_avg_pool2d")
public func ag_adaptive_avg_pool2d(_ out: UnsafeMutablePointer<UInt64>?, _ x: UInt64, _ outputH: Int64, _ outputW: Int64) -> Int32 {
    produce("ag_adaptive_avg_pool2d", out) {
        try Arg.tensor(x, "x").adaptiveAvgPool2d(outputSize: (Int(outputH), Int(outputW)))
    }
}
