#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AutogradEngine

/// Status codes of the C ABI (ag_status in autograd.h).
enum Status: Int32 {
    case ok = 0, invalidHandle, argument, shape, dtype, state, outOfMemory, callback, `internal`, io, format

    var name: StaticString {
        switch self {
        case .ok: return "AG_OK"
        case .invalidHandle: return "AG_ERR_INVALID_HANDLE"
        case .argument: return "AG_ERR_ARGUMENT"
        case .shape: return "AG_ERR_SHAPE"
        case .dtype: return "AG_ERR_DTYPE"
        case .state: return "AG_ERR_STATE"
        case .outOfMemory: return "AG_ERR_OUT_OF_MEMORY"
        case .callback: return "AG_ERR_CALLBACK"
        case .internal: return "AG_ERR_INTERNAL"
        case .io: return "AG_ERR_IO"
        case .format: return "AG_ERR_FORMAT"
        }
    }
}

/// A handle that is zero, freed, made up or of the wrong kind.
struct InvalidHandle: Error {
    let message: String
}

/// The message of the last failed call, per thread, as a C string owned by the library.
/// Only a failing call replaces it (so the pointer ag_last_error() gave stays valid until the
/// next failing call on that thread); nothing ever clears it. `failures` counts the failing
/// calls on this thread, so a caller of a user callback can tell whether the callback's own
/// calls failed (and quote that message) without resetting anything.
enum LastError {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    /// The count of failing calls on this thread, stored as the slot's pointer value (no
    /// allocation, so no destructor).
    private static let failuresKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// "" for a thread with no failure yet: a static literal, so reading it allocates nothing.
    private static let empty: StaticString = ""

    static func set(_ message: String) {
        let old = pthread_getspecific(key)
        pthread_setspecific(key, strdup(message))
        free(old)
        pthread_setspecific(failuresKey, UnsafeRawPointer(bitPattern: failures &+ 1))
    }

    static var current: UnsafePointer<CChar> {
        UnsafePointer(pthread_getspecific(key)?.assumingMemoryBound(to: CChar.self)
            ?? UnsafeMutableRawPointer(mutating: empty.utf8Start).assumingMemoryBound(to: CChar.self))
    }

    /// How many calls have failed on this thread (wrapping; compare for equality only).
    static var failures: UInt {
        UInt(bitPattern: pthread_getspecific(failuresKey))
    }

    /// The message of the last failing call on this thread if one failed since `failures` was
    /// `before`, else nil: what a user callback's own failing calls said.
    static func since(_ before: UInt) -> String? {
        guard failures != before else { return nil }
        // Cut in the middle: a callback's message may itself quote a nested callback's (64 levels
        // of nested hooks or custom ops would otherwise make a message of kilobytes). Its start
        // says which call failed, its end holds the innermost cause: both are kept.
        let message = String(cString: current)
        guard message.count > quotedLimit else { return message }
        return String(message.prefix(quotedHead)) + " ... " + String(message.suffix(quotedLimit - quotedHead))
    }

    /// The most characters of a callback's message another message quotes, and how many of
    /// them come from its start.
    static let quotedLimit = 500
    static let quotedHead = 150
}

/// Records `message` as the last error and returns `status`.
@inline(never)
func fail(_ status: Status, _ message: String) -> Int32 {
    LastError.set(message)
    return status.rawValue
}

/// Runs an ABI function body, turning every thrown error into its status and message.
@inline(__always)
func guarded(_ function: StaticString, _ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return Status.ok.rawValue
    } catch {
        return failure(function, error)
    }
}

@inline(never)
func failure(_ function: StaticString, _ error: Error) -> Int32 {
    switch error {
    case let e as InvalidHandle: return fail(.invalidHandle, prefixed(function, e.message))
    case let e as AutogradError:
        let status: Status
        switch e {
        case .argument: status = .argument
        case .shape: status = .shape
        case .dtype: status = .dtype
        case .state: status = .state
        case .outOfMemory: status = .outOfMemory
        case .callback: status = .callback
        case .internal: status = .internal
        case .io: status = .io
        case .format: status = .format
        }
        return fail(status, prefixed(function, e.message))
    default:
        return fail(.internal, "\(function): unexpected error \(error)")
    }
}

/// "ag_op: message", without repeating the op when the engine's message already names it
/// ("matmul: ..." from ag_matmul becomes "ag_matmul: ...").
private func prefixed(_ function: StaticString, _ message: String) -> String {
    let name = "\(function)"
    if name.hasPrefix("ag_"), message.hasPrefix(name.dropFirst(3) + ": ") {
        return "ag_" + message
    }
    return name + ": " + message
}
