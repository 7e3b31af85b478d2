/// A strict reader of the JSON a safetensors header holds (RFC 8259), driven by the header's
/// schema: the caller asks for the value it expects next (an object key, a string, an array of
/// integers) and anything else is a format error naming the byte where it went wrong. Since the
/// schema nests at most three levels (the root object, a tensor's object, its shape array), the
/// reader never recurses and nothing deeper is accepted.
///
/// Strings: escapes (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs combined; a lone surrogate
/// is refused), no raw control character (below 0x20), valid UTF-8 only, and no U+0000 (a C
/// string cannot hold it). Numbers: only non-negative integers without fraction or exponent that
/// fit Int64 are wanted anywhere in the schema; any other number is refused with a message
/// saying why. Whitespace is the four RFC 8259 characters.
struct HeaderJSON {
    private let bytes: UnsafeRawBufferPointer
    private(set) var position = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    /// A format error at the current position.
    func error(_ what: String) -> AutogradError {
        AutogradError.format("bad header JSON at byte \(position): \(what)")
    }

    private var atEnd: Bool { position >= bytes.count }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

    mutating func skipWhitespace() {
        while let b = current, HeaderJSON.isWhitespace(b) { position += 1 }
    }

    /// A readable name for the byte at the current position (for messages).
    private var found: String {
        guard let b = current else { return "the end of the header" }
        if b >= 0x20 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        return "byte 0x\(String(b, radix: 16))"
    }

    /// Whether a string comes next (after whitespace, which it skips).
    var nextIsString: Bool {
        mutating get {
            skipWhitespace()
            return current == UInt8(ascii: "\"")
        }
    }

    /// Consumes `byte` (after whitespace) or fails saying what was expected.
    mutating func expect(_ byte: UInt8, _ what: String) throws {
        skipWhitespace()
        guard current == byte else { throw error("expected \(what), found \(found)") }
        position += 1
    }

    /// Consumes `byte` (after whitespace) if it is next.
    mutating func consume(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard current == byte else { return false }
        position += 1
        return true
    }

    /// The root must start at the header's first byte with '{' (as the reference reader requires).
    mutating func beginRootObject() throws {
        guard current == UInt8(ascii: "{") else { throw error("the header must start with '{', found \(found)") }
        position += 1
    }

    /// After the root object: only whitespace (the reference writer pads with spaces).
    mutating func expectEnd() throws {
        skipWhitespace()
        guard atEnd else { throw error("unexpected \(found) after the header's JSON object") }
    }

    /// Iterates an object's members after its '{': calls `member` with each key, positioned at
    /// the value, which `member` must consume. Refuses a repeated key.
    mutating func members(_ member: (inout HeaderJSON, String) throws -> Void) throws {
        if consume(UInt8(ascii: "}")) { return }
        var seen = Set<ExactName>()
        repeat {
            skipWhitespace()
            let keyStart = position
            let key = try string()
            guard seen.insert(ExactName(key)).inserted else {
                position = keyStart
                throw error("duplicate key \"\(key)\"")
            }
            try expect(UInt8(ascii: ":"), "':' after an object key")
            try member(&self, key)
        } while try separator(close: UInt8(ascii: "}"), "',' or '}' in an object")
        return
    }

    /// After a member or element: true for ',' (another follows), false for the closing byte.
    private mutating func separator(close: UInt8, _ what: String) throws -> Bool {
        skipWhitespace()
        if current == UInt8(ascii: ",") { position += 1; return true }
        if current == close { position += 1; return false }
        throw error("expected \(what), found \(found)")
    }

    /// A JSON string, decoded.
    mutating func string() throws -> String {
        skipWhitespace()
        guard current == UInt8(ascii: "\"") else { throw error("expected a string, found \(found)") }
        position += 1
        var utf8: [UInt8] = []
        while true {
            guard let b = current else { throw error("unterminated string") }
            switch b {
            case UInt8(ascii: "\""):
                position += 1
                guard let s = String(validating: utf8, as: UTF8.self) else {
                    throw error("a string is not valid UTF-8")
                }
                return s
            case UInt8(ascii: "\\"):
                position += 1
                try escape(into: &utf8)
            case 0x00 ..< 0x20:
                throw error("a raw control character (0x\(String(b, radix: 16))) in a string (escape it)")
            default:
                utf8.append(b)
                position += 1
            }
        }
    }

    /// The escape after a backslash, appended as UTF-8.
    private mutating func escape(into utf8: inout [UInt8]) throws {
        guard let b = current else { throw error("unterminated string") }
        position += 1
        switch b {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(b)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hex4())
            if scalar >= 0xD800 && scalar < 0xDC00 {
                // A high surrogate must be followed by an escaped low one.
                guard current == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") else {
                    throw error("a lone surrogate \\u\(String(scalar, radix: 16)) in a string")
                }
                position += 2
                let low = UInt32(try hex4())
                guard low >= 0xDC00 && low < 0xE000 else {
                    throw error("a high surrogate is followed by \\u\(String(low, radix: 16)), not a low surrogate")
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if scalar >= 0xDC00 && scalar < 0xE000 {
                throw error("a lone surrogate \\u\(String(scalar, radix: 16)) in a string")
            }
            guard scalar != 0, let u = Unicode.Scalar(scalar) else {
                throw error("\\u0000 in a string (names and metadata cannot hold NUL)")
            }
            utf8.append(contentsOf: u.utf8)
        default:
            position -= 1
            throw error("an unknown escape: a backslash followed by \(found) in a string")
        }
    }

    /// Four hex digits of a \u escape.
    private mutating func hex4() throws -> UInt16 {
        var value: UInt16 = 0
        for _ in 0 ..< 4 {
            guard let b = current else { throw error("unterminated \\u escape") }
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
            default: throw error("expected a hex digit in a \\u escape, found \(found)")
            }
            value = value << 4 | UInt16(digit)
            position += 1
        }
        return value
    }

    /// A non-negative integer without fraction or exponent that fits Int64 (`what` names it in
    /// messages). Any other JSON number is read whole (RFC 8259 grammar) and refused.
    mutating func integer(_ what: @autoclosure () -> String) throws -> Int {
        skipWhitespace()
        let start = position
        var negative = false
        if current == UInt8(ascii: "-") { negative = true; position += 1 }
        guard let first = current, first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9") else {
            position = start
            throw error("\(what()) must be a non-negative integer, found \(found)")
        }
        var value = 0
        var overflow = false
        var digits = 0
        while let b = current, b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
            digits += 1
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(b - UInt8(ascii: "0")))
            overflow = overflow || o1 || o2
            value = s
            position += 1
        }
        if first == UInt8(ascii: "0") && digits > 1 {
            position = start
            throw error("\(what()): a number with a leading zero is not JSON")
        }
        var fractional = false
        if current == UInt8(ascii: ".") {
            position += 1
            guard let b = current, b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { throw error("a number's fraction has no digit") }
            while let b = current, b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") { position += 1 }
            fractional = true
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard let b = current, b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { throw error("a number's exponent has no digit") }
            while let b = current, b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") { position += 1 }
            fractional = true
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start ..< position]), as: UTF8.self)
        if fractional {
            position = start
            throw error("\(what()) must be an integer without fraction or exponent, got \(text)")
        }
        if negative {
            position = start
            throw error("\(what()) must be non-negative, got \(text)")
        }
        if overflow {
            position = start
            throw error("\(what()) \(text) does not fit int64")
        }
        return value
    }

    /// An array of integers, at most `limit` of them (`what` names them in messages).
    mutating func integers(_ what: String, limit: Int) throws -> [Int] {
        try expect(UInt8(ascii: "["), "'[' to start \(what)")
        var values: [Int] = []
        if consume(UInt8(ascii: "]")) { return values }
        repeat {
            guard values.count < limit else { throw error("\(what) has more than \(limit) entries") }
            values.append(try integer("an entry of \(what)"))
        } while try separator(close: UInt8(ascii: "]"), "',' or ']' in \(what)")
        return values
    }
}

/// Writes the JSON a safetensors header holds: strings escaped per RFC 8259 (the quote, the
/// backslash and control characters; everything else is written as its UTF-8 bytes).
enum HeaderJSONWriter {
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x00 ..< 0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    static func appendASCII(_ s: String, to out: inout [UInt8]) {
        out.append(contentsOf: s.utf8)
    }
}
