/// One tensor listed in a safetensors header: its name, dtype and shape (its values stay in the
/// file until `SafetensorsFile.tensor(named:)` reads them).
public struct SafetensorsEntry: Sendable, Equatable {
    public let name: String
    /// The Autograd dtype the values load as; nil for a dtype of the format that Autograd does
    /// not hold (F16, BF16, I32, ...), which is listed but cannot be loaded.
    public let dtype: DType?
    /// The dtype as the header spells it: "F32", "BF16", ...
    public let formatDType: String
    /// Extents, outermost first (at most SafetensorsFormat.maxRank of them; the rank may be
    /// above Shape.maxRank, and such a tensor is listed but cannot be loaded).
    public let shape: [Int]
}

/// Facts of the safetensors format that the reader and the writer share.
enum SafetensorsFormat {
    /// The reference implementation's limit on the header's length.
    static let maxHeaderLength = 100_000_000
    /// The most extents a header may give one tensor (the header's documented limit).
    static let maxRank = 64
    /// The name of the header's metadata object (never a tensor's name).
    static let metadataKey = "__metadata__"

    /// Bits per element of each dtype the format defines (as the reference implementation,
    /// version 0.8, lists them); a sub-byte dtype's tensor must end on a byte boundary.
    static let bitsPerElement: [String: Int] = [
        "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
        "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
        "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
    ]

    /// The Autograd dtype of a format dtype, or nil for one Autograd does not hold.
    static func dtype(_ format: String) -> DType? {
        switch format {
        case "F32": return .float32
        case "F64": return .float64
        case "I64": return .int64
        case "BOOL": return .bool
        default: return nil
        }
    }

    /// The format's name for an Autograd dtype.
    static func name(_ dtype: DType) -> String {
        switch dtype {
        case .float32: return "F32"
        case .float64: return "F64"
        case .int64: return "I64"
        case .bool: return "BOOL"
        }
    }
}

/// A tensor name or metadata key compared byte for byte, as the format's JSON keys are. Swift's
/// String equality identifies canonically equivalent spellings ("\u{E9}" and "e\u{301}"), which
/// are two different keys in a file: a set or dictionary of Strings would call them duplicates.
struct ExactName: Hashable {
    let utf8: [UInt8]
    init(_ text: String) { utf8 = Array(text.utf8) }
}
