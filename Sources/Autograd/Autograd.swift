// The Swift API of Autograd: the engine's types (re-exported) with tensor math that does not throw.
//
// What throws and what stops the program (following the Swift API Design Guidelines and
// mlx-swift):
// - Tensor math (operators, elementwise functions, reductions, shape ops, matmul, losses,
//   convolutions, factories such as `Tensor.zeros`) does not throw: no `try` on arithmetic
//   lines. Misuse (mismatched shapes or dtypes, an axis out of range, a negative extent) is a
//   precondition: the program stops with the library's message, as an out-of-range Array index
//   does; running out of memory stops it too, as it does for an Array.
// - Inside `withError { ... }` the same failures are thrown instead: the first one ends the
//   scope as an `AutogradError` carrying the library's message (ops after it return NaN
//   placeholders, so the body runs to its end; discard its results). Use it where shapes come
//   from outside (a file, a request).
// - What depends on data built at run time or on state outside the expression always throws
//   `AutogradError`: `Tensor(_:shape:)` and the other initialisers over caller data, backward and
//   gradients (a graph already freed, values written since they were saved), `setRequiresGrad`,
//   in-place writes, optimizer steps and state, hooks, custom ops, captured functions, files and
//   checkpoints.
// The C API never stops the process: every failure there is a status code.
@_exported import AutogradEngine

import Synchronization

extension Tensor {
    /// Runs an engine call whose failures are all preconditions (see above): stops the program
    /// with the library's message on one, or inside `withError` records it and returns a NaN
    /// placeholder.
    @inline(__always)
    static func checked<R>(_ body: () throws -> R) -> R {
        do {
            return try body()
        } catch {
            return failed(error)
        }
    }

    @inline(never)
    private static func failed<R>(_ error: any Error) -> R {
        guard let sink = ErrorScope.sink, let placeholder = ErrorScope.placeholder(R.self) else {
            fatalError("Autograd: \(error) (wrap the code in withError { } to catch it)")
        }
        sink.record(error)
        return placeholder
    }
}

/// Runs `body`, turning the first failure of tensor math inside it (which would otherwise stop
/// the program) into a thrown `AutogradError` when `body` returns. Results computed after a
/// failure are NaN placeholders; discard them. Holds across `await` and in child tasks.
public func withError<R>(_ body: () throws -> R) throws -> R {
    let sink = ErrorScope.Sink()
    let result = try ErrorScope.$sink.withValue(sink) { try body() }
    if let error = sink.first { throw error }
    return result
}

/// The async form of `withError`.
public func withError<R>(isolation: isolated (any Actor)? = #isolation,
                         _ body: () async throws -> R) async throws -> R {
    let sink = ErrorScope.Sink()
    let result = try await ErrorScope.$sink.withValue(sink, operation: body, isolation: isolation)
    if let error = sink.first { throw error }
    return result
}

/// Where the failures of tensor math inside `withError` go.
enum ErrorScope {
    /// Sendable: its one mutable field is behind a mutex (child tasks may fail at once).
    final class Sink: Sendable {
        private let firstError = Mutex<(any Error)?>(nil)
        var first: (any Error)? { firstError.withLock { $0 } }
        func record(_ error: any Error) {
            firstError.withLock { if $0 == nil { $0 = error } }
        }
    }

    @TaskLocal static var sink: Sink?

    /// What a failed call returns inside `withError`: NaN in the shape of a 0-d float64 tensor,
    /// for each result type the tensor math has.
    static func placeholder<R>(_: R.Type) -> R? {
        if let r = Double.nan as? R { return r }  // item()
        let nan = Tensor.checkedPlaceholder
        if let r = nan as? R { return r }
        if let r = (values: nan, indices: nan) as? R { return r }  // topk
        return nil
    }
}

extension Tensor {
    /// A new 0-d float64 NaN (each failure gets its own, so no two results share a leaf).
    static var checkedPlaceholder: Tensor {
        do { return try Tensor(scalar: .nan) } catch { fatalError("Autograd: \(error)") }
    }
}
