#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Values are stored and read little-endian, as the format defines, by copying bytes: right on
// the little-endian machines Autograd runs on (x86-64, AArch64); a big-endian one would need
// byte swaps on both paths.
#if _endian(big)
#error("the safetensors reader and writer copy little-endian values as they are in memory")
#endif

/// An open safetensors file (or a copy of one in memory), its header read and checked (see
/// SafetensorsHeader): the listing and metadata are in memory; a tensor's values are read from
/// the file when it is loaded, and only its own bytes.
///
/// Sendable: every stored property is a constant set in init; the descriptor is only read with
/// pread (which moves no shared file offset) and the in-memory copy only read, so loads and
/// lookups from several threads at once are safe.
public final class SafetensorsFile: @unchecked Sendable {
    /// Where the bytes are: an open descriptor, or a copy this object owns.
    private enum Source {
        case file(descriptor: Int32, path: String)
        case memory(UnsafeMutableRawBufferPointer)
    }

    private let source: Source
    /// The offset of the data (the first byte after the header) in the file or buffer.
    private let dataStart: Int
    /// Each entry's byte range, relative to dataStart.
    private let ranges: [Range<Int>]
    private let index: [ExactName: Int]
    private let metadataIndex: [ExactName: Int]

    /// The tensors, in the order of their data.
    public let entries: [SafetensorsEntry]
    /// "__metadata__", in file order.
    public let metadata: [(key: String, value: String)]

    /// Opens the file at `path` and checks its header. Throws AutogradError.io when it cannot be
    /// opened or read, .format when it is not a valid safetensors file.
    public convenience init(path: String) throws {
        let fd = try FileIO.openForReading(path)
        do {
            let size = try FileIO.size(fd, path)
            try self.init(source: .file(descriptor: fd, path: path), size: size)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Reads a safetensors file from memory (the bytes are copied). Throws .format when they
    /// are not a valid one, .outOfMemory when the copy cannot be made.
    public convenience init(bytes: UnsafeRawBufferPointer) throws {
        let copy: UnsafeMutableRawBufferPointer
        if bytes.count == 0 {
            copy = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        } else {
            guard let p = malloc(bytes.count) else {
                throw AutogradError.outOfMemory("cannot allocate \(bytes.count) bytes for a copy of the safetensors buffer")
            }
            copy = UnsafeMutableRawBufferPointer(start: p, count: bytes.count)
            copy.copyMemory(from: bytes)
        }
        do {
            try self.init(source: .memory(copy), size: bytes.count)
        } catch {
            free(copy.baseAddress)
            throw error
        }
    }

    /// Reads and checks the header of `size` bytes of `source`. Every throw comes before the
    /// first property is set, so a failed init never runs deinit: the caller keeps the source
    /// and releases it.
    private init(source: Source, size: Int) throws {
        let what = Self.describe(source)
        guard size >= 8 else {
            throw AutogradError.format("\(what) is truncated: it has \(size) bytes, fewer than the 8 of the header length")
        }
        var lengthBytes: UInt64 = 0
        try Self.read(source, into: &lengthBytes, count: 8, at: 0, what)
        let length = UInt64(littleEndian: lengthBytes)
        guard length <= UInt64(SafetensorsFormat.maxHeaderLength) else {
            throw AutogradError.format("\(what): the header length \(length) is above the format's limit of \(SafetensorsFormat.maxHeaderLength) bytes")
        }
        let headerLength = Int(length)
        guard headerLength <= size - 8 else {
            throw AutogradError.format("\(what) is truncated: the header length is \(headerLength) bytes but only \(size - 8) follow it")
        }
        guard let raw = malloc(max(headerLength, 1)) else {
            throw AutogradError.outOfMemory("cannot allocate \(headerLength) bytes for a safetensors header")
        }
        defer { free(raw) }
        try Self.read(source, into: raw, count: headerLength, at: 8, what)
        let header = try SafetensorsHeader(json: UnsafeRawBufferPointer(start: raw, count: headerLength),
                                           dataLength: size - 8 - headerLength)
        self.source = source
        self.dataStart = 8 + headerLength
        self.ranges = header.ranges
        self.entries = header.entries
        self.metadata = header.metadata
        // Names and metadata keys are distinct (the header's keys are).
        self.index = Dictionary(header.entries.enumerated().map { (ExactName($1.name), $0) }, uniquingKeysWith: { a, _ in a })
        self.metadataIndex = Dictionary(header.metadata.enumerated().map { (ExactName($1.key), $0) }, uniquingKeysWith: { a, _ in a })
    }

    deinit {
        switch source {
        case .file(let fd, _): close(fd)
        case .memory(let buffer): free(buffer.baseAddress)
        }
    }

    /// "'path'" or "the buffer", for messages.
    private static func describe(_ source: Source) -> String {
        switch source {
        case .file(_, let path): return "'\(path)'"
        case .memory: return "the buffer"
        }
    }

    /// Reads exactly `count` bytes at `offset` (the caller has checked them against the size
    /// the source had when it was opened); a file that has shrunk since is an io error.
    private static func read(_ source: Source, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int, _ what: @autoclosure () -> String) throws {
        if count == 0 { return }
        switch source {
        case .file(let fd, let path):
            let got = try FileIO.readFully(fd, path, into: buffer, count: count, at: offset)
            guard got == count else {
                throw AutogradError.io("cannot read '\(path)': it ends at byte \(offset + got), shorter than when it was opened (bytes \(offset) ..< \(offset + count) were wanted)")
            }
        case .memory(let bytes):
            guard let base = bytes.baseAddress, offset <= bytes.count, count <= bytes.count - offset else {
                throw AutogradError.internal("safetensors: bytes \(offset) ..< \(offset + count) are outside the \(bytes.count)-byte buffer")
            }
            buffer.copyMemory(from: base + offset, byteCount: count)
        }
    }

    /// The position of the tensor called `name` in `entries`, or nil.
    public func index(named name: String) -> Int? { index[ExactName(name)] }

    public func entry(named name: String) -> SafetensorsEntry? {
        index[ExactName(name)].map { entries[$0] }
    }

    /// The position of `key` in `metadata`, or nil.
    public func metadataIndex(forKey key: String) -> Int? { metadataIndex[ExactName(key)] }

    public func metadataValue(forKey key: String) -> String? {
        metadataIndex[ExactName(key)].map { metadata[$0].value }
    }

    /// A new leaf holding the values of the tensor called `name`, read now. Throws .argument (no
    /// such tensor), .dtype (a dtype Autograd does not hold), .shape (rank above Shape.maxRank),
    /// .format (a BOOL byte other than 0 or 1), .io (the read failed or the file shrank),
    /// .outOfMemory.
    public func tensor(named name: String) throws -> Tensor {
        guard let i = index[ExactName(name)] else { throw AutogradError.argument("no tensor named \"\(name)\" in the file") }
        let entry = entries[i]
        guard let dtype = entry.dtype else {
            throw AutogradError.dtype("tensor \"\(name)\" is \(entry.formatDType), which Autograd does not hold (it loads F32, F64, I64 and BOOL)")
        }
        guard entry.shape.count <= Shape.maxRank else {
            throw AutogradError.shape("tensor \"\(name)\" has rank \(entry.shape.count), above the maximum rank \(Shape.maxRank)")
        }
        // The header check made the range exactly count * size bytes inside the source.
        let t = try Tensor(uninitialized: entry.shape, dtype: dtype)
        let range = ranges[i]
        if range.count > 0 {
            guard let dst = t.storage.raw, range.count == t.count * dtype.size else {
                throw AutogradError.internal("safetensors: tensor \"\(name)\" has \(range.count) bytes for \(t.count) elements of \(dtype)")
            }
            try Self.read(source, into: dst, count: range.count, at: dataStart + range.lowerBound, Self.describe(source))
            if dtype == .bool {
                let flags = dst.assumingMemoryBound(to: UInt8.self)
                for k in 0 ..< t.count where flags[k] > 1 {
                    throw AutogradError.format("tensor \"\(name)\" (BOOL) holds the byte \(flags[k]) at element \(k) (booleans are 0 or 1)")
                }
            }
        }
        Trace.noteConstant(t)
        return t
    }
}
