import COpenBLAS

/// Matrix products on OpenBLAS: C (m x n) = op(A) op(B) (+ C when accumulating), row-major,
/// with optional transposes.
enum Gemm {
    static func multiply<T: TensorElement>(_ a: UnsafeMutablePointer<T>, transA: Bool,
                                           _ b: UnsafeMutablePointer<T>, transB: Bool,
                                           into c: UnsafeMutablePointer<T>, m: Int, n: Int, k: Int, accumulate: Bool = false) {
        let ta = transA ? CblasTrans : CblasNoTrans
        let tb = transB ? CblasTrans : CblasNoTrans
        let lda = Int32(Swift.max(1, transA ? m : k))
        let ldb = Int32(Swift.max(1, transB ? k : n))
        let ldc = Int32(Swift.max(1, n))
        if T.self == Float.self {
            cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), 1,
                        UnsafeMutableRawPointer(a).assumingMemoryBound(to: Float.self), lda,
                        UnsafeMutableRawPointer(b).assumingMemoryBound(to: Float.self), ldb, accumulate ? 1 : 0,
                        UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc)
        } else {
            cblas_dgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), 1,
                        UnsafeMutableRawPointer(a).assumingMemoryBound(to: Double.self), lda,
                        UnsafeMutableRawPointer(b).assumingMemoryBound(to: Double.self), ldb, accumulate ? 1 : 0,
                        UnsafeMutableRawPointer(c).assumingMemoryBound(to: Double.self), ldc)
        }
    }
}
