#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The few POSIX file operations the safetensors reader and writer need, each retried on EINTR
/// and looping over partial transfers, each failing with AutogradError.io naming the path and
/// the system's reason (strerror of errno).
enum FileIO {
    /// "'path': reason" for the errno of the call that just failed.
    static func failure(_ what: String, _ path: String, _ code: Int32 = errno) -> AutogradError {
        AutogradError.io("cannot \(what) '\(path)': \(String(cString: strerror(code)))")
    }

    /// A read-only descriptor for `path` (closed on exec). Opened non-blocking, so that a FIFO
    /// without a writer does not hang the caller (`size` then refuses it); reads of a regular
    /// file ignore the flag.
    static func openForReading(_ path: String) throws -> Int32 {
        while true {
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            if fd >= 0 { return fd }
            if errno != EINTR { throw failure("open", path) }
        }
    }

    /// The size of the regular file behind `fd`.
    static func size(_ fd: Int32, _ path: String) throws -> Int {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("stat", path) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw AutogradError.io("cannot read '\(path)': it is not a regular file")
        }
        return Int(info.st_size)
    }

    /// Reads `count` bytes at `offset` into `buffer`; returns how many were read before the end
    /// of the file (fewer than `count` only when the file ends first).
    static func readFully(_ fd: Int32, _ path: String, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset + done))
            if n > 0 {
                done += n
            } else if n == 0 {
                break
            } else if errno != EINTR {
                throw failure("read", path)
            }
        }
        return done
    }

    /// Writes all `count` bytes at `bytes` to `fd`.
    static func writeAll(_ fd: Int32, _ path: String, _ bytes: UnsafeRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            let n = write(fd, bytes + done, count - done)
            if n > 0 {
                done += n
            } else if n < 0 && errno != EINTR {
                throw failure("write", path)
            } else if n == 0 {
                throw AutogradError.io("cannot write '\(path)': the system wrote nothing")
            }
        }
    }

    /// Distinguishes the temporary files of concurrent writers in one process.
    private static let temporaryCounter = Atomic<Int>(0)

    /// Writes a file at `path` whole or not at all: `body` writes to a new temporary file beside
    /// it ("path.tmp.<pid>.<n>", created exclusively), which is flushed to disk (fsync), closed
    /// and renamed over `path`; on any failure the temporary file is removed and `path` is left
    /// as it was.
    static func writeAtomically(_ path: String, _ body: (_ fd: Int32, _ temporaryPath: String) throws -> Void) throws {
        let n = temporaryCounter.add(1, ordering: .relaxed).newValue
        let temporary = "\(path).tmp.\(getpid()).\(n)"
        var fd: Int32
        repeat { fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw failure("create", temporary) }
        do {
            try body(fd, temporary)
            while fsync(fd) != 0 {
                if errno != EINTR { throw failure("flush (fsync)", temporary) }
            }
            let closed = close(fd)
            fd = -1
            // A failed close after a successful fsync may still mean lost data (NFS): refused.
            guard closed == 0 || errno == EINTR else { throw failure("close", temporary) }
            guard rename(temporary, path) == 0 else { throw failure("rename '\(temporary)' to", path) }
        } catch {
            if fd >= 0 { close(fd) }
            unlink(temporary)
            throw error
        }
    }
}
