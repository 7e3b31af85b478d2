import AutogradEngine

// Checkpoints: parameters and optimizer state in one safetensors file (see Checkpoint).

@_cdecl("ag_checkpoint_save")
public func ag_checkpoint_save(_ path: UnsafePointer<CChar>?, _ names: UnsafePointer<UnsafePointer<CChar>?>?,
                               _ params: UnsafePointer<UInt64>?, _ n: Int64, _ opt: UInt64,
                               _ metadataKeys: UnsafePointer<UnsafePointer<CChar>?>?,
                               _ metadataValues: UnsafePointer<UnsafePointer<CChar>?>?, _ nmetadata: Int64) -> Int32 {
    guarded("ag_checkpoint_save") {
        let path = try Arg.string(path, "path")
        let named = try Arg.namedTensors(names, params, n, "params")
        let optimizer = opt == 0 ? nil : try Arg.optimizer(opt)
        let metadata = try Arg.stringPairs(metadataKeys, metadataValues, nmetadata)
        try Checkpoint.save(to: path, parameters: named, optimizer: optimizer, metadata: metadata)
    }
}

@_cdecl("ag_checkpoint_load")
public func ag_checkpoint_load(_ path: UnsafePointer<CChar>?, _ names: UnsafePointer<UnsafePointer<CChar>?>?,
                               _ params: UnsafePointer<UInt64>?, _ n: Int64, _ opt: UInt64) -> Int32 {
    guarded("ag_checkpoint_load") {
        let path = try Arg.string(path, "path")
        let named = try Arg.namedTensors(names, params, n, "params")
        let optimizer = opt == 0 ? nil : try Arg.optimizer(opt)
        try Checkpoint.load(from: path, parameters: named, optimizer: optimizer)
    }
}
