/// matmul on OpenBLAS: forward and derivative rule side by side.
extension Tensor {
    /// The matrix product of 2-D tensors: (m,k) @ (k,n) -> (m,n).
    public func matmul(_ other: Tensor) throws -> Tensor {
        guard dtype == other.dtype else {
            throw AutogradError.dtype("matmul: operands have different dtypes (\(dtype) and \(other.dtype))")
        }
        guard rank == 2 && other.rank == 2 else {
            throw AutogradError.shape("matmul: needs 2-D operands, got shapes \(shape) and \(other.shape)")
        }
        return try Tensor.gemm(self, transA: false, other, transB: false)
    }

    /// op(a) @ op(b) where op transposes when asked: the differentiable primitive behind
    /// matmul, so that backward needs no explicit transposed copies.
    static func gemm(_ a: Tensor, transA: Bool, _ b: Tensor, transB: Bool) throws -> Tensor {
        let (m, k) = transA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
        let (k2, n) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        guard k == k2 else {
            throw AutogradError.shape("matmul: inner extents differ: \(a.shape)\(transA ? "ᵀ" : "") @ \(b.shape)\(transB ? "ᵀ" : "")")
        }
        let limit = Int(Int32.max)
        guard m <= limit && n <= limit && k <= limit else {
            throw AutogradError.shape("matmul: extents above \(limit) are not supported by BLAS")
        }
        let out = try Tensor(uninitialized: [m, n], dtype: a.dtype)
        if out.count > 0 {
            if k == 0 {
                out.storage.raw!.initializeMemory(as: UInt8.self, repeating: 0, count: out.count * a.dtype.size)
            } else {
                switch a.dtype {
                case .float32: Gemm.multiply(a.buffer(Float.self).baseAddress!, transA: transA, b.buffer(Float.self).baseAddress!, transB: transB, into: out.buffer(Float.self).baseAddress!, m: m, n: n, k: k)
                case .float64: Gemm.multiply(a.buffer(Double.self).baseAddress!, transA: transA, b.buffer(Double.self).baseAddress!, transB: transB, into: out.buffer(Double.self).baseAddress!, m: m, n: n, k: k)
                }
            }
        }
        if shouldRecord(a, b) {
            // C = op(A) op(B):  d op(A) = G op(B)ᵀ,  d op(B) = op(A)ᵀ G, transposed back when
            // the operand itself was used transposed.
            out.record("matmul", inputs: [a, b], saved: [a, b]) { g, node in
                let a = node.saved[0], b = node.saved[1]
                var ga: Tensor? = nil, gb: Tensor? = nil
                if node.needsGrad(0) {
                    ga = transA ? try gemm(b, transA: transB, g, transB: true)
                                : try gemm(g, transA: false, b, transB: !transB)
                }
                if node.needsGrad(1) {
                    gb = transB ? try gemm(g, transA: true, a, transB: transA)
                                : try gemm(a, transA: !transA, g, transB: false)
                }
                return [ga, gb]
            }
        }
        return out
    }
}
