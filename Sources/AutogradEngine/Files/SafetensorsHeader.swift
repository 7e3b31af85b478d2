/// A safetensors header, parsed and checked against the data that follows it: every entry's
/// dtype is one of the format's, its shape has at most SafetensorsFormat.maxRank extents whose
/// element count and byte size fit Int64, its byte range holds exactly that many bytes, and the
/// ranges, in order, cover the data from its first byte to its last without a gap or an overlap
/// (as the reference implementation requires). Every failure is AutogradError.format naming the
/// tensor and what is wrong.
struct SafetensorsHeader {
    /// The tensors in the order of their data (by begin offset, then end, then header order).
    let entries: [SafetensorsEntry]
    /// Each entry's byte range, relative to the first byte after the header.
    let ranges: [Range<Int>]
    /// "__metadata__", in header order.
    let metadata: [(key: String, value: String)]

    /// One tensor as the header gives it, before the ranges are checked together.
    private struct Listed {
        let entry: SafetensorsEntry
        let begin: Int
        let end: Int
    }

    /// Parses `json` (the header's bytes) for a data section of `dataLength` bytes.
    init(json: UnsafeRawBufferPointer, dataLength: Int) throws {
        var reader = HeaderJSON(json)
        var listed: [Listed] = []
        var metadata: [(key: String, value: String)] = []
        try reader.beginRootObject()
        try reader.members { reader, key in
            if key == SafetensorsFormat.metadataKey {
                try reader.expect(UInt8(ascii: "{"), "an object of strings for \"__metadata__\"")
                try reader.members { reader, key in
                    guard reader.nextIsString else {
                        throw AutogradError.format("bad header: the \"__metadata__\" value of \"\(key)\" is not a string (at byte \(reader.position))")
                    }
                    metadata.append((key, try reader.string()))
                }
            } else {
                listed.append(try Self.tensor(named: key, &reader, dataLength: dataLength))
            }
        }
        try reader.expectEnd()

        // In data order; ties (empty tensors at one offset) in header order.
        let order = listed.indices.sorted {
            (listed[$0].begin, listed[$0].end, $0) < (listed[$1].begin, listed[$1].end, $1)
        }
        var covered = 0
        var previous: Listed? = nil
        for i in order {
            let t = listed[i]
            if t.begin > covered {
                throw AutogradError.format("bad header: tensor \"\(t.entry.name)\" (data_offsets [\(t.begin), \(t.end)]) leaves a gap of \(t.begin - covered) bytes after byte \(covered) that no tensor covers")
            }
            if t.begin < covered, let p = previous {
                throw AutogradError.format("bad header: tensor \"\(t.entry.name)\" (data_offsets [\(t.begin), \(t.end)]) overlaps tensor \"\(p.entry.name)\" (data_offsets [\(p.begin), \(p.end)])")
            }
            covered = t.end
            previous = t
        }
        if covered != dataLength {
            throw AutogradError.format("bad header: the data has \(dataLength) bytes but the tensors cover only the first \(covered) (\(dataLength - covered) bytes after the last tensor)")
        }
        self.entries = order.map { listed[$0].entry }
        self.ranges = order.map { listed[$0].begin ..< listed[$0].end }
        self.metadata = metadata
    }

    /// One tensor's object: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, each
    /// key exactly once and no other, checked on its own against the data's length.
    private static func tensor(named name: String, _ reader: inout HeaderJSON, dataLength: Int) throws -> Listed {
        var dtype: String? = nil
        var shape: [Int]? = nil
        var offsets: [Int]? = nil
        try reader.expect(UInt8(ascii: "{"), "an object for tensor \"\(name)\"")
        try reader.members { reader, key in
            switch key {
            case "dtype": dtype = try reader.string()
            case "shape": shape = try reader.integers("the shape of \"\(name)\"", limit: SafetensorsFormat.maxRank)
            case "data_offsets": offsets = try reader.integers("the data_offsets of \"\(name)\"", limit: 2)
            default: throw reader.error("tensor \"\(name)\" has an unknown key \"\(key)\" (only dtype, shape and data_offsets)")
            }
        }
        let what = "bad header: tensor \"\(name)\""
        guard let dtype else { throw AutogradError.format("\(what) has no dtype") }
        guard let shape else { throw AutogradError.format("\(what) has no shape") }
        guard let offsets else { throw AutogradError.format("\(what) has no data_offsets") }
        guard offsets.count == 2 else {
            throw AutogradError.format("\(what): data_offsets must be [begin, end], got \(offsets)")
        }
        guard let bits = SafetensorsFormat.bitsPerElement[dtype] else {
            throw AutogradError.format("\(what) has an unknown dtype \"\(dtype)\"")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else {
            throw AutogradError.format("\(what): data_offsets [\(begin), \(end)] end before they begin")
        }
        guard end <= dataLength else {
            throw AutogradError.format("\(what): data_offsets [\(begin), \(end)] run past the end of the data (\(dataLength) bytes)")
        }
        // The element count as Shape.count computes it: the non-zero extents' product must fit.
        var count = 1
        for d in shape where d != 0 {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw AutogradError.format("\(what): the element count of shape \(shape) overflows int64") }
            count = p
        }
        if shape.contains(0) { count = 0 }
        // Bytes: count * bits / 8, exact (a sub-byte dtype's tensor must end on a byte boundary).
        let (product, overflow) = bits % 8 == 0 ? count.multipliedReportingOverflow(by: bits / 8) : count.multipliedReportingOverflow(by: bits)
        guard !overflow else { throw AutogradError.format("\(what): the byte size of shape \(shape) of \(dtype) overflows int64") }
        guard bits % 8 == 0 || product % 8 == 0 else {
            throw AutogradError.format("\(what): \(count) elements of \(dtype) do not end on a byte boundary")
        }
        let bytes = bits % 8 == 0 ? product : product / 8
        guard end - begin == bytes else {
            throw AutogradError.format("\(what) has \(end - begin) bytes (data_offsets [\(begin), \(end)]) but shape \(shape) of \(dtype) needs \(bytes)")
        }
        let entry = SafetensorsEntry(name: name, dtype: SafetensorsFormat.dtype(dtype), formatDType: dtype, shape: shape)
        return Listed(entry: entry, begin: begin, end: end)
    }
}
