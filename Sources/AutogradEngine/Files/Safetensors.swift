/// Writing safetensors files: the tensors in the caller's order, their bytes contiguous from
/// the start of the data, after a header padded with spaces so that the data starts at a
/// multiple of 8 bytes in the file (as the reference writer does). "__metadata__" comes first
/// in the header and is left out when there is none.
public enum Safetensors {
    /// Writes `tensors` and `metadata` to a safetensors file at `path`, whole or not at all (a
    /// temporary file beside it, flushed and renamed over it). Throws .argument for a bad name
    /// or key (see `encode`), .io when the file cannot be written.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [(key: String, value: String)], to path: String) throws {
        let header = try self.header(tensors, metadata: metadata)
        try FileIO.writeAtomically(path) { fd, temporary in
            try header.withUnsafeBytes { bytes in
                if let base = bytes.baseAddress { try FileIO.writeAll(fd, temporary, base, count: bytes.count) }
            }
            for (_, t) in tensors {
                if let (raw, bytes) = try values(t) { try FileIO.writeAll(fd, temporary, raw, count: bytes) }
            }
        }
    }

    /// The bytes of the safetensors file `write` writes. Names must be non-empty, distinct, not
    /// "__metadata__" and free of NUL; metadata keys distinct and keys and values free of NUL
    /// (AutogradError.argument otherwise).
    public static func encode(_ tensors: [(name: String, tensor: Tensor)], metadata: [(key: String, value: String)]) throws -> [UInt8] {
        var out = try header(tensors, metadata: metadata)
        for (_, t) in tensors {
            if let (raw, bytes) = try values(t) { out.append(contentsOf: UnsafeRawBufferPointer(start: raw, count: bytes)) }
        }
        return out
    }

    /// The bytes of `t`'s values as they are in memory (little-endian), or nil when it has none.
    private static func values(_ t: Tensor) throws -> (UnsafeRawPointer, Int)? {
        let bytes = t.count * t.dtype.size
        if bytes == 0 { return nil }
        guard let raw = t.storage.raw else { throw AutogradError.internal("safetensors: a tensor of \(t.count) elements has no buffer") }
        return (UnsafeRawPointer(raw), bytes)
    }

    /// The 8-byte length and the padded JSON header for `tensors`.
    static func header(_ tensors: [(name: String, tensor: Tensor)], metadata: [(key: String, value: String)]) throws -> [UInt8] {
        var names = Set<ExactName>()
        for (i, (name, _)) in tensors.enumerated() {
            guard !name.isEmpty else { throw AutogradError.argument("the name of tensor \(i) is empty") }
            guard name != SafetensorsFormat.metadataKey else {
                throw AutogradError.argument("tensor \(i) may not be called \"__metadata__\" (the format's metadata key)")
            }
            guard !name.utf8.contains(0) else { throw AutogradError.argument("the name of tensor \(i) contains a NUL character") }
            guard names.insert(ExactName(name)).inserted else {
                throw AutogradError.argument("the name \"\(name)\" of tensor \(i) repeats an earlier tensor's")
            }
        }
        var keys = Set<ExactName>()
        for (i, (key, value)) in metadata.enumerated() {
            guard !key.utf8.contains(0) && !value.utf8.contains(0) else {
                throw AutogradError.argument("metadata entry \(i) contains a NUL character")
            }
            guard keys.insert(ExactName(key)).inserted else {
                throw AutogradError.argument("the metadata key \"\(key)\" (entry \(i)) repeats an earlier key")
            }
        }

        var json: [UInt8] = [UInt8(ascii: "{")]
        if !metadata.isEmpty {
            HeaderJSONWriter.appendString(SafetensorsFormat.metadataKey, to: &json)
            json.append(contentsOf: Array(":{".utf8))
            for (i, (key, value)) in metadata.enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                HeaderJSONWriter.appendString(key, to: &json)
                json.append(UInt8(ascii: ":"))
                HeaderJSONWriter.appendString(value, to: &json)
            }
            json.append(UInt8(ascii: "}"))
        }
        var offset = 0
        for (i, (name, t)) in tensors.enumerated() {
            if i > 0 || !metadata.isEmpty { json.append(UInt8(ascii: ",")) }
            // One tensor's size fits (it is in memory); the same tensor under many names may not.
            let (end, overflow) = offset.addingReportingOverflow(t.count * t.dtype.size)
            guard !overflow else { throw AutogradError.argument("the tensors' sizes add up past int64 at tensor \(i)") }
            HeaderJSONWriter.appendString(name, to: &json)
            let shape = t.shape.map(String.init).joined(separator: ",")
            HeaderJSONWriter.appendASCII(":{\"dtype\":\"\(SafetensorsFormat.name(t.dtype))\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}", to: &json)
            offset = end
        }
        json.append(UInt8(ascii: "}"))
        // Spaces up to a multiple of 8, so the data (after the 8-byte length) starts 8-aligned.
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }

        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        return out
    }
}
