#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A contiguous buffer of elements (64-byte aligned above 1 KiB). Allocation failure is an
/// error, not a trap.
final class Storage {
    let dtype: DType
    let count: Int
    let raw: UnsafeMutableRawPointer?

    init(dtype: DType, count: Int) throws {
        self.dtype = dtype
        self.count = count
        if count == 0 { raw = nil; return }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else {
            throw AutogradError.outOfMemory("cannot allocate \(count) elements of \(dtype): size overflows")
        }
        // Small buffers come from plain malloc (16-byte aligned, cheap); large ones are aligned
        // to cache lines for the vector kernels.
        var p: UnsafeMutableRawPointer? = nil
        if bytes <= 1024 {
            p = malloc(bytes)
        } else if posix_memalign(&p, 64, bytes) != 0 {
            p = nil
        }
        guard let q = p else {
            throw AutogradError.outOfMemory("cannot allocate \(bytes) bytes for \(count) elements of \(dtype)")
        }
        raw = q
    }

    deinit { free(raw) }

    @inline(__always)
    func buffer<T: TensorElement>(_: T.Type) -> UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(start: raw?.assumingMemoryBound(to: T.self), count: count)
    }
}
