import AutogradEngine

// Versions, status codes and threads: the library information, the last error, live handles.

/// The library's version (scripts/install.sh reads it from this line). String literals are
/// static, NUL-terminated data: handing them out allocates nothing, so these answers never fail.
private let versionString: StaticString = "0.1.0"
private let unknownStatusName: StaticString = "AG_UNKNOWN_STATUS"

/// A static string literal as a C string.
private func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("ag_version")
public func ag_version() -> UnsafePointer<CChar> { cString(versionString) }

@_cdecl("ag_last_error")
public func ag_last_error() -> UnsafePointer<CChar> { LastError.current }

@_cdecl("ag_status_name")
public func ag_status_name(_ status: Int32) -> UnsafePointer<CChar> {
    guard let known = Status(rawValue: status) else { return cString(unknownStatusName) }
    return cString(known.name)
}

@_cdecl("ag_live_handle_count")
public func ag_live_handle_count(_ out: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded("ag_live_handle_count") { try Arg.out(out).pointee = Int64(HandleTable.shared.liveCount) }
}

@_cdecl("ag_set_num_threads")
public func ag_set_num_threads(_ n: Int64) -> Int32 {
    guarded("ag_set_num_threads") { try Parallel.setThreadCount(Int(clamping: n)) }
}

@_cdecl("ag_num_threads")
public func ag_num_threads(_ out: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded("ag_num_threads") { try Arg.out(out).pointee = Int64(Parallel.threadCount) }
}

@_cdecl("ag_set_error")
public func ag_set_error(_ message: UnsafePointer<CChar>?) -> Int32 {
    guarded("ag_set_error") {
        guard let message else { throw AutogradError.argument("message is NULL") }
        LastError.set(String(cString: message))
    }
}
