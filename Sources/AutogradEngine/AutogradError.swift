/// An error raised by the engine. Each case maps to one status code of the C ABI;
/// the message says what was wrong and, where it helps, what to do instead.
public enum AutogradError: Error, Equatable, CustomStringConvertible {
    case argument(String)
    case shape(String)
    case dtype(String)
    case state(String)
    case outOfMemory(String)
    case callback(String)
    case `internal`(String)
    /// A file that cannot be opened, read or written (the message has the path and the reason).
    case io(String)
    /// A file or buffer that is not what it claims to be: truncated, or a header that lies.
    case format(String)

    public var message: String {
        switch self {
        case .argument(let m), .shape(let m), .dtype(let m), .state(let m),
             .outOfMemory(let m), .callback(let m), .internal(let m), .io(let m), .format(let m):
            return m
        }
    }

    public var description: String { message }
}
