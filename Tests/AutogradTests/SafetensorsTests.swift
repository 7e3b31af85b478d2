import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import AutogradEngine

/// Safetensors files (issue 19): round trips of every dtype Autograd holds (0-d and empty tensors,
/// metadata with escapes and non-ASCII text), files built byte by byte here with their values
/// derived by hand (IEEE 754 bit patterns, little-endian), the writer's exact bytes and padding,
/// and every kind of malformed or lying header, each refused with its error and no crash.
final class SafetensorsTests: XCTestCase {
    // MARK: - helpers

    /// A file: the header's length (8 bytes, little-endian), the header, then the data.
    func file(_ header: String, _ data: [UInt8] = []) -> [UInt8] {
        let h = Array(header.utf8)
        return le64(UInt64(h.count)) + h + data
    }

    func le64(_ v: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    func open(_ bytes: [UInt8]) throws -> SafetensorsFile {
        try bytes.withUnsafeBytes { try SafetensorsFile(bytes: $0) }
    }

    /// `bytes` must be refused with `.format` whose message contains `fragment`.
    func assertFormat(_ bytes: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try open(bytes)
            XCTFail("accepted; wanted a format error with \"\(fragment)\"", file: file, line: line)
        } catch let AutogradError.format(message) {
            XCTAssertTrue(message.contains(fragment), "\"\(message)\" lacks \"\(fragment)\"", file: file, line: line)
        } catch {
            XCTFail("\(error); wanted a format error with \"\(fragment)\"", file: file, line: line)
        }
    }

    func assertError(_ expected: (String) -> AutogradError, _ fragment: String, file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("no error; wanted one with \"\(fragment)\"", file: file, line: line)
        } catch let e as AutogradError {
            XCTAssertEqual(e, expected(e.message), "wrong kind: \(e)", file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), "\"\(e.message)\" lacks \"\(fragment)\"", file: file, line: line)
        } catch {
            XCTFail("\(error)", file: file, line: line)
        }
    }

    func tensor(_ v: [Double], _ shape: [Int], _ dtype: DType) throws -> Tensor {
        try Tensor(v, shape: shape, dtype: dtype)
    }

    /// A fresh temporary directory, removed with its files after the test.
    func temporaryDirectory() -> String {
        var template = Array("/tmp/autograd-safetensors-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        addTeardownBlock {
            if let d = opendir(dir) {
                while let e = readdir(d) {
                    let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
                    if name != "." && name != ".." { unlink(dir + "/" + name) }
                }
                closedir(d)
            }
            rmdir(dir)
        }
        return dir
    }

    func directoryEntries(_ dir: String) -> [String] {
        var names: [String] = []
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(d)
        }
        return names.sorted()
    }

    func readFile(_ path: String) -> [UInt8] {
        guard let f = fopen(path, "rb") else { return [] }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n == 0 { break }
            out += buffer[0 ..< n]
        }
        return out
    }

    // MARK: - files built by hand

    /// Every value's bytes written out here: 1.0f = 0x3F800000, -2.0f = 0xC0000000,
    /// 0.5 = 0x3FE0000000000000, int64 -1 = 0xFF.., 258 = 0x0102; little-endian.
    func testHandBuiltFile() throws {
        let header = #"{"__metadata__":{"format":"pt","note":"a\"b\\c\u00e9\ud83d\ude00"},"#
            + #""i":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},"#
            + #""f":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""d":{"dtype":"F64","shape":[],"data_offsets":[8,16]},"#
            + #""m":{"dtype":"BOOL","shape":[1,3],"data_offsets":[32,35]},"#
            + #""e":{"dtype":"F32","shape":[0,4],"data_offsets":[35,35]}}   "#
        let data: [UInt8] = [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,
                             0, 0, 0, 0, 0, 0, 0xE0, 0x3F,
                             0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                             0x02, 0x01, 0, 0, 0, 0, 0, 0,
                             1, 0, 1]
        let f = try open(file(header, data))
        XCTAssertEqual(f.entries.map(\.name), ["f", "d", "i", "m", "e"])  // data order
        XCTAssertEqual(f.entries[0], SafetensorsEntry(name: "f", dtype: .float32, formatDType: "F32", shape: [2]))
        XCTAssertEqual(f.entry(named: "m"), SafetensorsEntry(name: "m", dtype: .bool, formatDType: "BOOL", shape: [1, 3]))
        XCTAssertEqual(f.metadata.map(\.key), ["format", "note"])
        XCTAssertEqual(f.metadataValue(forKey: "note"), "a\"b\\cé😀")
        XCTAssertNil(f.metadataValue(forKey: "missing"))
        XCTAssertNil(f.entry(named: "missing"))

        let ft = try f.tensor(named: "f")
        XCTAssertEqual(ft.dtype, .float32)
        XCTAssertEqual(ft.shape, [2])
        XCTAssertEqual(ft.values, [1, -2])
        XCTAssertTrue(ft.isLeaf)
        XCTAssertFalse(ft.requiresGrad)
        let dt = try f.tensor(named: "d")
        XCTAssertEqual(dt.shape, [])
        XCTAssertEqual(dt.values, [0.5])
        let it = try f.tensor(named: "i")
        XCTAssertEqual(it.dtype, .int64)
        XCTAssertEqual(it.integers().map { $0 }, [-1, 258])
        let mt = try f.tensor(named: "m")
        XCTAssertEqual(mt.flags().map { $0 }, [1, 0, 1])
        let et = try f.tensor(named: "e")
        XCTAssertEqual(et.shape, [0, 4])
        XCTAssertEqual(et.count, 0)
        // A tensor loaded twice is two leaves.
        XCTAssertFalse(try f.tensor(named: "f") === ft)
        assertError(AutogradError.argument, "no tensor named \"missing\"") { _ = try f.tensor(named: "missing") }
    }

    /// Other dtypes of the format are listed (dtype nil) and refused on load with a dtype error.
    func testFormatDTypesAreListedNotLoaded() throws {
        let f = try open(file(#"{"h":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"q":{"dtype":"F4","shape":[4],"data_offsets":[4,6]},"u":{"dtype":"U8","shape":[1],"data_offsets":[6,7]}}"#,
                              [0, 0x3F, 0, 0x40, 0x12, 0x34, 7]))
        XCTAssertEqual(f.entries.map(\.formatDType), ["BF16", "F4", "U8"])
        XCTAssertEqual(f.entries.map(\.dtype), [nil, nil, nil])
        assertError(AutogradError.dtype, "tensor \"h\" is BF16, which Autograd does not hold") { _ = try f.tensor(named: "h") }
        // Four-bit elements must end on a byte boundary.
        assertFormat(file(#"{"q":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, [0, 0]), "do not end on a byte boundary")
    }

    /// A rank above Shape.maxRank is listed, and refused on load with a shape error.
    func testHighRankIsListedNotLoaded() throws {
        let shape = Array(repeating: "1", count: 9).joined(separator: ",")
        let f = try open(file(#"{"r":{"dtype":"F32","shape":[\#(shape)],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]))
        XCTAssertEqual(f.entries[0].shape, Array(repeating: 1, count: 9))
        assertError(AutogradError.shape, "has rank 9, above the maximum rank 8") { _ = try f.tensor(named: "r") }
    }

    func testBoolBytesOtherThanZeroOrOneAreRefused() throws {
        let f = try open(file(#"{"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#, [1, 0, 2]))
        assertError(AutogradError.format, "holds the byte 2 at element 2") { _ = try f.tensor(named: "m") }
    }

    func testEscapedNamesAndSurrogatePairs() throws {
        let f = try open(file(#"{"\ud83d\ude00\/\n":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, [0, 0, 0x80, 0x3F]))
        XCTAssertEqual(f.entries[0].name, "😀/\n")
        XCTAssertEqual(try f.tensor(named: "😀/\n").values, [1])
    }

    // MARK: - the writer

    /// The writer's bytes, derived by hand: length, the JSON (metadata first, then the tensors in
    /// the caller's order), spaces up to a multiple of 8, the values little-endian.
    func testEncodeGivesTheExpectedBytes() throws {
        let x = try tensor([1, -2], [2], .float32)
        let y = try Tensor(copying: [UInt8(1)], shape: [], dtype: .bool)
        let bytes = try Safetensors.encode([("x", x), ("y", y)], metadata: [("k", "v\"\n")])
        var json = Array(#"{"__metadata__":{"k":"v\"\n"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"BOOL","shape":[],"data_offsets":[8,9]}}"#.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        XCTAssertEqual(bytes, le64(UInt64(json.count)) + json + [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, 1])
        // No metadata: no "__metadata__" key at all.
        let plain = try Safetensors.encode([("x", x)], metadata: [])
        var json2 = Array(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.utf8)
        while json2.count % 8 != 0 { json2.append(0x20) }
        XCTAssertEqual(plain, le64(UInt64(json2.count)) + json2 + [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0])
        // Control characters are escaped.
        let ctl = try Safetensors.encode([], metadata: [("\u{1}\t", "\\")])
        var json3 = Array(#"{"__metadata__":{"\u0001\t":"\\"}}"#.utf8)
        while json3.count % 8 != 0 { json3.append(0x20) }
        XCTAssertEqual(Array(ctl[8...]), json3)
    }

    func testRoundTripsThroughFileAndMemory() throws {
        let dir = temporaryDirectory()
        let tensors: [(name: String, tensor: Tensor)] = [
            ("weight.f32", try tensor([1.5, -0.25, 3e38, -1e-30, .infinity, 0], [2, 3], .float32)),
            ("bias_f64", try tensor([Double.pi, -.greatestFiniteMagnitude, .leastNonzeroMagnitude], [3], .float64)),
            ("steps", try Tensor(copying: [Int64.min, -1, 0, Int64.max], shape: [2, 1, 2], dtype: .int64)),
            ("mask", try Tensor(copying: [UInt8(1), 0, 1, 1], shape: [4], dtype: .bool)),
            ("scalar", try tensor([42], [], .float64)),
            ("empty", try tensor([], [3, 0], .float32)),
            ("ünïcødé ✓", try tensor([7], [1, 1, 1, 1, 1, 1, 1, 1], .float32)),
        ]
        let metadata: [(key: String, value: String)] = [("format", "pt"), ("q\"b\\s/\n\t\u{7}", "é😀 \u{1F}end"), ("", "")]
        let path = dir + "/model.safetensors"
        try Safetensors.write(tensors, metadata: metadata, to: path)
        XCTAssertEqual(directoryEntries(dir), ["model.safetensors"])  // no temporary file left
        let onDisk = readFile(path)
        XCTAssertEqual(onDisk, try Safetensors.encode(tensors, metadata: metadata))
        let headerLength = onDisk[0 ..< 8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual((8 + headerLength) % 8, 0, "the data starts 8-aligned")

        for f in [try SafetensorsFile(path: path), try open(onDisk)] {
            XCTAssertEqual(f.entries.map(\.name), tensors.map(\.name))
            XCTAssertEqual(f.metadata.map(\.key), metadata.map(\.key))
            XCTAssertEqual(f.metadata.map(\.value), metadata.map(\.value))
            for (name, t) in tensors {
                let e = try XCTUnwrap(f.entry(named: name))
                XCTAssertEqual(e.dtype, t.dtype)
                XCTAssertEqual(e.shape, t.shape)
                let u = try f.tensor(named: name)
                XCTAssertEqual(u.shape, t.shape)
                XCTAssertEqual(u.dtype, t.dtype)
                let (a, b) = (t.count * t.dtype.size, u.count * u.dtype.size)
                XCTAssertEqual(a, b)
                if a > 0 {
                    XCTAssertEqual(memcmp(t.storage.raw!, u.storage.raw!, a), 0, "\(name): the bytes differ")
                }
            }
        }
        // Writing over an existing file replaces it.
        try Safetensors.write([("only", try tensor([2], [1], .float64))], metadata: [], to: path)
        XCTAssertEqual(try SafetensorsFile(path: path).entries.map(\.name), ["only"])
        XCTAssertEqual(directoryEntries(dir), ["model.safetensors"])
        // No tensor at all is a valid file too.
        let none = try open(try Safetensors.encode([], metadata: []))
        XCTAssertEqual(none.entries.count, 0)
    }

    func testWriterRefusesBadNames() throws {
        let t = try tensor([1], [1], .float32)
        assertError(AutogradError.argument, "the name of tensor 1 is empty") { _ = try Safetensors.encode([("a", t), ("", t)], metadata: []) }
        assertError(AutogradError.argument, "may not be called \"__metadata__\"") { _ = try Safetensors.encode([("__metadata__", t)], metadata: []) }
        assertError(AutogradError.argument, "the name \"a\" of tensor 1 repeats") { _ = try Safetensors.encode([("a", t), ("a", t)], metadata: []) }
        assertError(AutogradError.argument, "contains a NUL character") { _ = try Safetensors.encode([("a\u{0}b", t)], metadata: []) }
        assertError(AutogradError.argument, "the metadata key \"k\" (entry 1) repeats") {
            _ = try Safetensors.encode([("a", t)], metadata: [("k", "1"), ("k", "2")])
        }
        let dir = temporaryDirectory()
        assertError(AutogradError.argument, "repeats") { try Safetensors.write([("a", t), ("a", t)], metadata: [], to: dir + "/x") }
        XCTAssertEqual(directoryEntries(dir), [])
    }

    func testFileSystemErrors() throws {
        assertError(AutogradError.io, "cannot open '/nonexistent-dir/x.safetensors': No such file or directory") {
            _ = try SafetensorsFile(path: "/nonexistent-dir/x.safetensors")
        }
        let t = try tensor([1], [1], .float32)
        assertError(AutogradError.io, "cannot create '/nonexistent-dir/x.safetensors.tmp.") {
            try Safetensors.write([("a", t)], metadata: [], to: "/nonexistent-dir/x.safetensors")
        }
        let dir = temporaryDirectory()
        assertError(AutogradError.io, "is not a regular file") { _ = try SafetensorsFile(path: dir) }
        // A FIFO without a writer: refused at once, not waited on.
        XCTAssertEqual(mkfifo(dir + "/fifo", 0o644), 0)
        assertError(AutogradError.io, "is not a regular file") { _ = try SafetensorsFile(path: dir + "/fifo") }
        unlink(dir + "/fifo")
        assertError(AutogradError.io, "is not a regular file") { _ = try SafetensorsFile(path: "/dev/zero") }
        // A directory in the way of the rename: the temporary file is removed again.
        mkdir(dir + "/sub", 0o755)
        assertError(AutogradError.io, "cannot rename") { try Safetensors.write([("a", t)], metadata: [], to: dir + "/sub") }
        XCTAssertEqual(directoryEntries(dir), ["sub"])
        rmdir(dir + "/sub")
    }

    /// A file cut short after it was opened: loading reads past its new end, an io error.
    func testFileThatShrinksAfterOpening() throws {
        let dir = temporaryDirectory()
        let path = dir + "/shrink.safetensors"
        try Safetensors.write([("a", try tensor([1, 2, 3, 4], [4], .float64))], metadata: [], to: path)
        let f = try SafetensorsFile(path: path)
        let size = readFile(path).count
        XCTAssertEqual(truncate(path, off_t(size - 8)), 0)
        assertError(AutogradError.io, "shorter than when it was opened") { _ = try f.tensor(named: "a") }
    }

    // MARK: - malformed and lying headers

    func testTruncatedAndAbsurdLengths() {
        assertFormat([], "it has 0 bytes, fewer than the 8 of the header length")
        assertFormat([1, 2, 3], "it has 3 bytes, fewer than the 8 of the header length")
        assertFormat(le64(100) + Array("{}".utf8), "the header length is 100 bytes but only 2 follow it")
        assertFormat(le64(100_000_001) + Array("{}".utf8), "the header length 100000001 is above the format's limit of 100000000 bytes")
        assertFormat(le64(UInt64.max), "the header length 18446744073709551615 is above the format's limit")
        assertFormat(le64(0), "the header must start with '{', found the end of the header")
    }

    func testBadJSON() {
        assertFormat(file(#"{"a":"#), "bad header JSON at byte 5: expected an object for tensor \"a\"")
        assertFormat(file(#" {}"#), "the header must start with '{'")
        assertFormat(file(#"{} x"#), "unexpected 'x' after the header's JSON object")
        assertFormat(file("{}\0"), "unexpected byte 0x0 after")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},}"#), "expected a string, found '}'")
        assertFormat(file(#"{"a" {}}"#), "expected ':' after an object key")
        assertFormat(file(#"{"a\q":1}"#), "an unknown escape: a backslash followed by 'q'")
        assertFormat(file("{\"a\tb\":1}"), "a raw control character (0x9) in a string")
        assertFormat(file(#"{"\ud800":1}"#), "a lone surrogate \\ud800")
        assertFormat(file(#"{"\udc00":1}"#), "a lone surrogate \\udc00")
        assertFormat(file(#"{"\ud800\u0041":1}"#), "not a low surrogate")
        assertFormat(file(#"{"\u0000":1}"#), "cannot hold NUL")
        assertFormat(file(#"{"\u12G4":1}"#), "expected a hex digit")
        assertFormat(le64(6) + [0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A], "not valid UTF-8")  // {"\xC3(":
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}"#), "expected ',' or '}' in an object, found the end of the header")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}}"#), "must be a non-negative integer, found '['")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#), "a number with a leading zero is not JSON")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1.],"data_offsets":[0,4]}}"#), "a number's fraction has no digit")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1e],"data_offsets":[0,4]}}"#), "a number's exponent has no digit")
        assertFormat(file(#"{"a":{"dtype":F32,"shape":[1],"data_offsets":[0,4]}}"#), "expected a string, found 'F'")
    }

    func testDuplicateAndUnknownKeys() {
        let a = #""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#
        assertFormat(file("{\(a),\(a)}", [0, 0, 0, 0]), "duplicate key \"a\"")
        assertFormat(file(#"{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "duplicate key \"dtype\"")
        assertFormat(file(#"{"__metadata__":{},"__metadata__":{}}"#), "duplicate key \"__metadata__\"")
        assertFormat(file(#"{"__metadata__":{"k":"1","k":"2"}}"#), "duplicate key \"k\"")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#, [0, 0, 0, 0]), "has an unknown key \"extra\"")
        assertFormat(file(#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "tensor \"a\" has no dtype")
        assertFormat(file(#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "tensor \"a\" has no shape")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1]}}"#, [0, 0, 0, 0]), "tensor \"a\" has no data_offsets")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, [0, 0, 0, 0]), "data_offsets must be [begin, end], got [0]")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, [0, 0, 0, 0]), "the data_offsets of \"a\" has more than 2 entries")
        assertFormat(file(#"{"a":[]}"#), "expected an object for tensor \"a\"")
    }

    func testMetadataMustBeStrings() {
        assertFormat(file(#"{"__metadata__":{"k":1}}"#), "the \"__metadata__\" value of \"k\" is not a string")
        assertFormat(file(#"{"__metadata__":{"k":null}}"#), "is not a string")
        assertFormat(file(#"{"__metadata__":{"k":{"x":"y"}}}"#), "is not a string")
        assertFormat(file(#"{"__metadata__":["k"]}"#), "expected an object of strings for \"__metadata__\"")
        assertFormat(file(#"{"__metadata__":null}"#), "expected an object of strings")
    }

    func testDTypesAndNumbers() {
        assertFormat(file(#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "tensor \"a\" has an unknown dtype \"F33\"")
        assertFormat(file(#"{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "unknown dtype \"f32\"")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "an entry of the shape of \"a\" must be non-negative, got -1")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}"#), "must be non-negative, got -0")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "must be an integer without fraction or exponent, got 1.5")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "without fraction or exponent, got 1.0")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "without fraction or exponent, got 1e0")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4E+0]}}"#, [0, 0, 0, 0]), "an entry of the data_offsets of \"a\" must be an integer without fraction or exponent, got 4E+0")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "9223372036854775808 does not fit int64")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999999]}}"#, [0, 0, 0, 0]), "does not fit int64")
        let rank65 = Array(repeating: "1", count: 65).joined(separator: ",")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[\#(rank65)],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "the shape of \"a\" has more than 64 entries")
        let rank64 = Array(repeating: "1", count: 64).joined(separator: ",")
        XCTAssertEqual(try open(file(#"{"a":{"dtype":"F32","shape":[\#(rank64)],"data_offsets":[0,4]}}"#, [0, 0, 0, 0])).entries[0].shape.count, 64)
    }

    func testRangesThatLie() {
        let z4: [UInt8] = [0, 0, 0, 0]
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#, z4), "data_offsets [0, 8] run past the end of the data (4 bytes)")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, z4), "data_offsets [4, 0] end before they begin")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}"#, z4), "tensor \"a\" has 4 bytes (data_offsets [0, 4]) but shape [3] of F32 needs 12")
        assertFormat(file(#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,4]}}"#, z4), "but shape [1] of F64 needs 8")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, z4 + z4 + z4),
                     "tensor \"b\" (data_offsets [4, 12]) overlaps tensor \"a\" (data_offsets [0, 8])")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, z4),
                     "overlaps tensor \"a\"")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, z4 + z4 + z4),
                     "tensor \"b\" (data_offsets [8, 12]) leaves a gap of 4 bytes after byte 4")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, z4 + z4), "leaves a gap of 4 bytes after byte 0")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, z4 + z4), "the data has 8 bytes but the tensors cover only the first 4")
        assertFormat(file(#"{}"#, [0]), "the data has 1 bytes but the tensors cover only the first 0")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, z4), "the element count of shape [4294967296, 4294967296] overflows int64")
        assertFormat(file(#"{"a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#), "overflows int64")
        assertFormat(file(#"{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}}"#, z4), "the byte size of shape [2305843009213693952] of F64 overflows int64")
        // Accepted: empty tensors anywhere, several at one offset.
        let ok = file(#"{"e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e2":{"dtype":"I64","shape":[2,0],"data_offsets":[4,4]},"e0":{"dtype":"F64","shape":[0],"data_offsets":[0,0]}}"#, z4)
        XCTAssertEqual(try open(ok).entries.map(\.name), ["e0", "a", "e1", "e2"])
    }

    /// Every prefix of a valid file, and every single-byte change of its header, is refused or
    /// read without a crash (a small exhaustive fuzz).
    func testPrefixesAndByteFlipsNeverCrash() throws {
        let bytes = try Safetensors.encode([("w", try tensor([1, 2], [2], .float32)), ("m", try Tensor(copying: [UInt8(1)], shape: [1], dtype: .bool))],
                                           metadata: [("k", "v")])
        for n in 0 ..< bytes.count {
            XCTAssertThrowsError(try open(Array(bytes[0 ..< n])))
        }
        for i in 0 ..< bytes.count {
            for v: UInt8 in [0, 0x20, 0x22, 0x2C, 0x30, 0x39, 0x5B, 0x5D, 0x7B, 0x7D, 0xFF] {
                var b = bytes
                b[i] = v
                if let f = try? open(b) {
                    for e in f.entries { _ = try? f.tensor(named: e.name) }
                }
            }
        }
    }

    /// Keys are compared byte for byte: "\u{E9}" and "e\u{301}" (canonically equivalent, equal as
    /// Swift Strings) are two tensors of one valid file, each found by its own spelling, and the
    /// writer takes both names (as the reference package does).
    func testCanonicallyEquivalentNamesAreDistinctKeys() throws {
        let composed = "\u{E9}", decomposed = "e\u{301}"
        XCTAssertEqual(composed, decomposed)  // what makes a String set the wrong tool
        let header = "{\"\(composed)\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
            + "\"\(decomposed)\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}"
        let f = try open(file(header, le64(7) + le64(9)))
        XCTAssertEqual(f.entries.map { Array($0.name.utf8) }, [Array(composed.utf8), Array(decomposed.utf8)])
        XCTAssertEqual(try f.tensor(named: composed).int64Values, [7])
        XCTAssertEqual(try f.tensor(named: decomposed).int64Values, [9])
        let bytes = try Safetensors.encode([(composed, tensor([1], [], .float64)), (decomposed, tensor([2], [], .float64))], metadata: [])
        let g = try bytes.withUnsafeBytes { try SafetensorsFile(bytes: $0) }
        XCTAssertEqual(try g.tensor(named: decomposed).values, [2])
    }
}
