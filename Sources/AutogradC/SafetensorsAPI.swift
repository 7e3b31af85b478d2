#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AutogradEngine

// Files: safetensors (the header's section of that name).

/// What an ag_safetensors handle holds: the open file and C copies of its names and metadata,
/// which ag_safetensors_name / _metadata_entry / _metadata hand out and which stay valid until
/// the handle is closed (this object is released).
final class SafetensorsHandle {
    let file: SafetensorsFile
    private let strings: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let stringCount: Int

    /// Copies every name, then every metadata key and value, as C strings.
    init(_ file: SafetensorsFile) throws {
        let count = file.entries.count + 2 * file.metadata.count
        guard let raw = calloc(max(count, 1), MemoryLayout<UnsafeMutablePointer<CChar>?>.stride) else {
            throw AutogradError.outOfMemory("cannot allocate the names of \(file.entries.count) tensors")
        }
        let strings = raw.bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: max(count, 1))
        let all = file.entries.lazy.map(\.name) + file.metadata.lazy.flatMap { [$0.key, $0.value] }
        for (i, s) in all.enumerated() {
            guard let copy = strdup(s) else {
                for k in 0 ..< i { free(strings[k]) }
                free(raw)
                throw AutogradError.outOfMemory("cannot allocate a copy of the name \"\(s.prefix(100))\"")
            }
            strings[i] = copy
        }
        self.file = file
        self.strings = strings
        self.stringCount = count
    }

    deinit {
        for i in 0 ..< stringCount { free(strings[i]) }
        free(strings)
    }

    func name(_ index: Int) -> UnsafePointer<CChar>? { UnsafePointer(strings[index]) }
    func metadataKey(_ index: Int) -> UnsafePointer<CChar>? { UnsafePointer(strings[file.entries.count + 2 * index]) }
    func metadataValue(_ index: Int) -> UnsafePointer<CChar>? { UnsafePointer(strings[file.entries.count + 2 * index + 1]) }
}

extension Arg {
    static func safetensors(_ handle: UInt64) throws -> SafetensorsHandle {
        guard handle != 0 else { throw InvalidHandle(message: "safetensors handle is 0") }
        guard let object = HandleTable.shared.lookup(handle, kind: .safetensors) else {
            throw InvalidHandle(message: "safetensors handle 0x\(String(handle, radix: 16)) is not a live safetensors handle (closed, made up, or of another kind)")
        }
        // Only SafetensorsHandle objects are ever stored under the safetensors kind.
        return unsafeDowncast(object, to: SafetensorsHandle.self)
    }
}

/// Stores a new safetensors handle for `body`'s file in `out` (checked first).
private func produceFile(_ function: StaticString, _ out: UnsafeMutablePointer<UInt64>?, _ body: () throws -> SafetensorsFile) -> Int32 {
    guarded(function) {
        let out = try Arg.out(out)
        let handle = try SafetensorsHandle(body())
        out.pointee = try HandleTable.shared.insert(handle, kind: .safetensors)
    }
}

@_cdecl("ag_safetensors_save")
public func ag_safetensors_save(_ path: UnsafePointer<CChar>?, _ names: UnsafePointer<UnsafePointer<CChar>?>?,
                                _ tensors: UnsafePointer<UInt64>?, _ n: Int64,
                                _ metadataKeys: UnsafePointer<UnsafePointer<CChar>?>?,
                                _ metadataValues: UnsafePointer<UnsafePointer<CChar>?>?, _ nmetadata: Int64) -> Int32 {
    guarded("ag_safetensors_save") {
        let path = try Arg.string(path, "path")
        let list = try Arg.namedTensors(names, tensors, n, "tensors")
        let metadata = try Arg.stringPairs(metadataKeys, metadataValues, nmetadata)
        try Safetensors.write(list, metadata: metadata, to: path)
    }
}

@_cdecl("ag_safetensors_open")
public func ag_safetensors_open(_ out: UnsafeMutablePointer<UInt64>?, _ path: UnsafePointer<CChar>?) -> Int32 {
    produceFile("ag_safetensors_open", out) { try SafetensorsFile(path: Arg.string(path, "path")) }
}

@_cdecl("ag_safetensors_open_memory")
public func ag_safetensors_open_memory(_ out: UnsafeMutablePointer<UInt64>?, _ data: UnsafeRawPointer?, _ length: Int64) -> Int32 {
    produceFile("ag_safetensors_open_memory", out) {
        guard length >= 0 else { throw AutogradError.argument("length (\(length)) is negative") }
        if length > 0 && data == nil { throw AutogradError.argument("data is NULL but length is \(length)") }
        return try SafetensorsFile(bytes: UnsafeRawBufferPointer(start: length > 0 ? data : nil, count: Int(length)))
    }
}

@_cdecl("ag_safetensors_count")
public func ag_safetensors_count(_ out: UnsafeMutablePointer<Int64>?, _ file: UInt64) -> Int32 {
    guarded("ag_safetensors_count") {
        let out = try Arg.out(out)
        out.pointee = Int64(try Arg.safetensors(file).file.entries.count)
    }
}

@_cdecl("ag_safetensors_name")
public func ag_safetensors_name(_ out: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ file: UInt64, _ index: Int64) -> Int32 {
    guarded("ag_safetensors_name") {
        let out = try Arg.out(out)
        let h = try Arg.safetensors(file)
        let count = h.file.entries.count
        guard index >= 0 && index < Int64(count) else {
            throw AutogradError.argument("index \(index) is outside 0..<\(count) (the file has \(count) tensors)")
        }
        out.pointee = h.name(Int(index))
    }
}

/// The position of the tensor `name` names in `h`'s file (argument errors for NULL, invalid
/// UTF-8 or no such tensor).
private func tensorIndex(_ h: SafetensorsHandle, _ name: UnsafePointer<CChar>?) throws -> Int {
    let s = try Arg.string(name, "name")
    guard let i = h.file.index(named: s) else { throw AutogradError.argument("no tensor named \"\(s)\" in the file") }
    return i
}

@_cdecl("ag_safetensors_info")
public func ag_safetensors_info(_ outDtype: UnsafeMutablePointer<Int32>?, _ outNdim: UnsafeMutablePointer<Int64>?,
                                _ outShape: UnsafeMutablePointer<Int64>?, _ capacity: Int64, _ file: UInt64,
                                _ name: UnsafePointer<CChar>?) -> Int32 {
    guarded("ag_safetensors_info") {
        let h = try Arg.safetensors(file)
        guard capacity >= 0 else { throw AutogradError.argument("capacity (\(capacity)) is negative") }
        if capacity > 0 && outShape == nil { throw AutogradError.argument("out_shape is NULL but capacity is \(capacity)") }
        let entry = h.file.entries[try tensorIndex(h, name)]
        outDtype?.pointee = entry.dtype?.rawValue ?? 0
        outNdim?.pointee = Int64(entry.shape.count)
        if let outShape {
            for k in 0 ..< min(entry.shape.count, Int(capacity)) { outShape[k] = Int64(entry.shape[k]) }
        }
    }
}

@_cdecl("ag_safetensors_load")
public func ag_safetensors_load(_ out: UnsafeMutablePointer<UInt64>?, _ file: UInt64, _ name: UnsafePointer<CChar>?) -> Int32 {
    produce("ag_safetensors_load", out) {
        let h = try Arg.safetensors(file)
        return try h.file.tensor(named: h.file.entries[try tensorIndex(h, name)].name)
    }
}

@_cdecl("ag_safetensors_metadata_count")
public func ag_safetensors_metadata_count(_ out: UnsafeMutablePointer<Int64>?, _ file: UInt64) -> Int32 {
    guarded("ag_safetensors_metadata_count") {
        let out = try Arg.out(out)
        out.pointee = Int64(try Arg.safetensors(file).file.metadata.count)
    }
}

@_cdecl("ag_safetensors_metadata_entry")
public func ag_safetensors_metadata_entry(_ outKey: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                          _ outValue: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                          _ file: UInt64, _ index: Int64) -> Int32 {
    guarded("ag_safetensors_metadata_entry") {
        let h = try Arg.safetensors(file)
        let count = h.file.metadata.count
        guard index >= 0 && index < Int64(count) else {
            throw AutogradError.argument("index \(index) is outside 0..<\(count) (the file has \(count) metadata entries)")
        }
        outKey?.pointee = h.metadataKey(Int(index))
        outValue?.pointee = h.metadataValue(Int(index))
    }
}

@_cdecl("ag_safetensors_metadata")
public func ag_safetensors_metadata(_ out: UnsafeMutablePointer<UnsafePointer<CChar>?>?, _ file: UInt64,
                                    _ key: UnsafePointer<CChar>?) -> Int32 {
    guarded("ag_safetensors_metadata") {
        let out = try Arg.out(out)
        let h = try Arg.safetensors(file)
        let k = try Arg.string(key, "key")
        out.pointee = h.file.metadataIndex(forKey: k).flatMap { h.metadataValue($0) }
    }
}

@_cdecl("ag_safetensors_close")
public func ag_safetensors_close(_ file: UInt64) -> Int32 {
    if file == 0 { return Status.ok.rawValue }
    guard HandleTable.shared.remove(file, kind: .safetensors) else {
        return fail(.invalidHandle, "ag_safetensors_close: handle 0x\(String(file, radix: 16)) is not a live safetensors handle (already closed, made up, or of another kind)")
    }
    return Status.ok.rawValue
}
