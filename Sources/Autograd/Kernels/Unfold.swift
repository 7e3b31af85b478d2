/// The geometry of a sliding window over the two spatial axes of an (N, C, H, W) tensor, as
/// convolution and pooling use it: extents checked and the output size computed (PyTorch's).
struct WindowGeometry: Equatable {
    var n: Int, c: Int, h: Int, w: Int
    var kh: Int, kw: Int
    var sh: Int, sw: Int
    var ph: Int, pw: Int
    var dh: Int, dw: Int
    /// Channel groups: unfold lays the columns of each group out as a matrix of its own.
    var groups: Int
    var oh: Int, ow: Int

    /// Output positions per image.
    var positions: Int { oh * ow }
    /// Channels per group.
    var groupChannels: Int { c / groups }
    /// Columns of one group's unfolded matrix: its channels times the kernel's taps.
    var groupColumns: Int { groupChannels * kh * kw }
    /// Rows of an unfolded matrix: every output position of every image.
    var rows: Int { n * oh * ow }
    /// The shape unfold gives: (groups, N * OH * OW, C/groups * kH * kW).
    var columnShape: [Int] { [groups, rows, groupColumns] }
    var inputShape: [Int] { [n, c, h, w] }

    /// Checks the parameters against the input shape (N, C, H, W) and computes OH, OW:
    /// floor((H + 2p - d(k - 1) - 1) / s) + 1 on each axis. Every size that a kernel will index
    /// is checked here (sizes that overflow, kernels larger than the padded input).
    init(_ op: String, input shape: [Int], kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int),
         dilation: (Int, Int), groups: Int) throws {
        guard shape.count == 4 else {
            throw AutogradError.shape("\(op): the input must be 4-D (N, C, H, W), got shape \(shape)")
        }
        (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        (kh, kw) = kernel
        (sh, sw) = stride
        (ph, pw) = padding
        (dh, dw) = dilation
        self.groups = groups
        guard kh > 0 && kw > 0 else { throw AutogradError.argument("\(op): kernel size must be positive, got (\(kh), \(kw))") }
        guard sh > 0 && sw > 0 else { throw AutogradError.argument("\(op): stride must be positive, got (\(sh), \(sw))") }
        guard ph >= 0 && pw >= 0 else { throw AutogradError.argument("\(op): padding must be non-negative, got (\(ph), \(pw))") }
        guard dh > 0 && dw > 0 else { throw AutogradError.argument("\(op): dilation must be positive, got (\(dh), \(dw))") }
        guard groups > 0 else { throw AutogradError.argument("\(op): groups must be positive, got \(groups)") }
        guard h > 0 && w > 0 else {
            throw AutogradError.shape("\(op): the input's spatial extents must be positive, got shape \(shape)")
        }
        func outputExtent(_ extent: Int, _ k: Int, _ s: Int, _ p: Int, _ d: Int, _ axis: String) throws -> Int {
            // span = d (k - 1) + 1 and padded = extent + 2p, both checked for overflow.
            let (dk, o1) = d.multipliedReportingOverflow(by: k - 1)
            let (p2, o2) = p.multipliedReportingOverflow(by: 2)
            let (padded, o3) = extent.addingReportingOverflow(p2)
            guard !o1 && !o2 && !o3 && dk < Int.max else {
                throw AutogradError.shape("\(op): kernel, dilation or padding along \(axis) overflow int64")
            }
            let span = dk + 1
            guard span <= padded else {
                throw AutogradError.shape("\(op): the kernel (span \(span) with dilation) is larger than the padded input (\(padded)) along \(axis)")
            }
            return (padded - span) / s + 1
        }
        oh = try outputExtent(h, kh, sh, ph, dh, "H")
        ow = try outputExtent(w, kw, sw, pw, dw, "W")
        guard c % groups == 0 else {
            throw AutogradError.shape("\(op): \(c) input channels are not divisible by groups = \(groups)")
        }
        // Every buffer the kernels index: the output, the unfolded columns (and their rows).
        _ = try Shape.count([n, c, oh, ow])
        _ = try Shape.count([n, oh, ow, c, kh, kw])
    }
}

/// im2col and col2im over WindowGeometry: unfold copies every window of an (N, C, H, W) input
/// into a row of a matrix (zeros where the window reaches into the padding); fold is its
/// transpose, summing each row's entries back onto the input positions they came from.
enum Unfold {
    /// cols (groups, N * OH * OW, C/groups * kH * kW) from x (N, C, H, W): row n*OH*OW + i*OW + j
    /// of group g holds, for each channel of g and each tap (ki, kj), x[n, c, i*sh - ph + ki*dh,
    /// j*sw - pw + kj*dw] (0 outside the input).
    static func unfold<T: TensorElement>(_ x: UnsafePointer<T>, into cols: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let (h, w, kh, kw) = (g.h, g.w, g.kh, g.kw)
        let cg = g.groupChannels, kcols = g.groupColumns, oh = g.oh, ow = g.ow
        // One task per (group, image, output row): independent, so the split never changes bits.
        let tasks = g.groups * g.n * oh
        func run(_ task: Int) {
            let i = task % oh, image = task / oh
            let n = image % g.n, group = image / g.n
            var row = cols + ((group * g.n + n) * oh + i) * ow * kcols
            let channel0 = x + (n * g.c + group * cg) * h * w
            for j in 0..<ow {
                let top = i * g.sh - g.ph, left = j * g.sw - g.pw
                var p = row
                for ch in 0..<cg {
                    let plane = channel0 + ch * h * w
                    for ki in 0..<kh {
                        let r = top + ki * g.dh
                        if r < 0 || r >= h {
                            p.update(repeating: 0, count: kw)
                        } else {
                            let line = plane + r * w
                            if g.dw == 1 && left >= 0 && left + kw <= w {
                                p.update(from: line + left, count: kw)
                            } else {
                                for kj in 0..<kw {
                                    let s = left + kj * g.dw
                                    p[kj] = s >= 0 && s < w ? line[s] : 0
                                }
                            }
                        }
                        p += kw
                    }
                }
                row += kcols
            }
        }
        parallel(tasks: tasks, work: g.rows * kcols, run)
    }

    /// x (N, C, H, W) = the transpose of unfold applied to cols: each input position sums the
    /// column entries that unfold copied from it (in float64, in a fixed order: by tap, then by
    /// output position), so overlapping windows add without float32 round-off building up.
    static func fold<T: TensorElement>(_ cols: UnsafePointer<T>, into x: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let (h, w, kh, kw) = (g.h, g.w, g.kh, g.kw)
        let cg = g.groupChannels, kcols = g.groupColumns, ow = g.ow
        // For each input row r: the (tap ki, output row i) pairs with i*sh - ph + ki*dh = r;
        // the same for columns. Lists start at rowStart[r] (a CSR layout).
        func taps(_ extent: Int, _ k: Int, _ s: Int, _ p: Int, _ d: Int, _ out: Int) -> (start: [Int], tap: [Int], pos: [Int]) {
            var start = [0], tap: [Int] = [], pos: [Int] = []
            for r in 0..<extent {
                for kk in 0..<k {
                    let t = r + p - kk * d
                    if t >= 0 && t % s == 0 && t / s < out { tap.append(kk); pos.append(t / s) }
                }
                start.append(tap.count)
            }
            return (start, tap, pos)
        }
        let rowsOf = taps(h, kh, g.sh, g.ph, g.dh, g.oh), colsOf = taps(w, kw, g.sw, g.pw, g.dw, g.ow)
        rowsOf.start.withUnsafeBufferPointer { rs in rowsOf.tap.withUnsafeBufferPointer { rt in rowsOf.pos.withUnsafeBufferPointer { rp in
        colsOf.start.withUnsafeBufferPointer { cs in colsOf.tap.withUnsafeBufferPointer { ct in colsOf.pos.withUnsafeBufferPointer { cp in
            // One task per (image, channel) plane.
            let tasks = g.n * g.c
            func run(_ task: Int) {
                let n = task / g.c, c = task % g.c
                let group = c / cg, ch = c % cg
                let base = cols + (group * g.n + n) * g.positions * kcols + ch * kh * kw
                let plane = x + task * h * w
                for r in 0..<h {
                    for q in 0..<w {
                        var acc = 0.0
                        for a in rs[r]..<rs[r + 1] {
                            let rowBase = base + rp[a] * ow * kcols + rt[a] * kw
                            for b in cs[q]..<cs[q + 1] {
                                acc += Double(rowBase[cp[b] * kcols + ct[b]])
                            }
                        }
                        plane[r * w + q] = T(acc)
                    }
                }
            }
            parallel(tasks: tasks, work: g.n * g.c * h * w * kh * kw, run)
        }}}}}}
    }

    /// The first maximum of each window in scan order (rows, then columns), as an offset into
    /// the (H, W) plane; padding counts as -inf (never chosen: every window holds an input
    /// position, WindowGeometry and the pool's padding limit see to it). A nan wins over any
    /// number (the first nan), so a nan input propagates as in PyTorch.
    @inline(__always)
    static func argmax<T: TensorElement>(_ plane: UnsafePointer<T>, _ i: Int, _ j: Int, _ g: WindowGeometry) -> Int {
        let top = i * g.sh - g.ph, left = j * g.sw - g.pw
        let r0 = Swift.max(0, top), r1 = Swift.min(g.h, top + g.kh)
        let c0 = Swift.max(0, left), c1 = Swift.min(g.w, left + g.kw)
        var best = r0 * g.w + c0
        var value = plane[best]
        if value.isNaN { return best }
        for r in r0..<r1 {
            for q in c0..<c1 {
                let v = plane[r * g.w + q]
                if v > value { value = v; best = r * g.w + q }
                else if v.isNaN { return r * g.w + q }
            }
        }
        return best
    }

    /// out (N, C, OH, OW)[p] = v[argmax of x's window p] (v and x of the input's shape): max
    /// pooling when v is x, and the derivative of max pooling applied to a tangent v.
    static func poolSelect<T: TensorElement>(_ v: UnsafePointer<T>, argmaxOf x: UnsafePointer<T>,
                                             into out: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let plane = g.h * g.w, positions = g.positions
        parallel(tasks: g.n * g.c, work: g.n * g.c * positions * g.kh * g.kw) { t in
            let xp = x + t * plane, vp = v + t * plane, op = out + t * positions
            for i in 0..<g.oh {
                for j in 0..<g.ow { op[i * g.ow + j] = vp[argmax(xp, i, j, g)] }
            }
        }
    }

    /// out (the input's shape) = zeros with gOut (N, C, OH, OW)[p] added at the argmax of x's
    /// window p: the transpose of poolSelect. Windows that overlap may pick one position
    /// several times; those sums go through float64.
    static func poolScatter<T: TensorElement>(_ gOut: UnsafePointer<T>, argmaxOf x: UnsafePointer<T>,
                                              into out: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let plane = g.h * g.w, positions = g.positions
        let overlapping = g.sh < g.kh || g.sw < g.kw
        parallel(tasks: g.n * g.c, work: g.n * g.c * positions * g.kh * g.kw) { t in
            let xp = x + t * plane, gp = gOut + t * positions, op = out + t * plane
            if overlapping && T.self != Double.self {
                withUnsafeTemporaryAllocation(of: Double.self, capacity: plane) { acc in
                    acc.initialize(repeating: 0)
                    for i in 0..<g.oh {
                        for j in 0..<g.ow { acc[argmax(xp, i, j, g)] += Double(gp[i * g.ow + j]) }
                    }
                    for k in 0..<plane { op[k] = T(acc[k]) }
                }
            } else {
                op.update(repeating: 0, count: plane)
                for i in 0..<g.oh {
                    for j in 0..<g.ow { op[argmax(xp, i, j, g)] += gp[i * g.ow + j] }
                }
            }
        }
    }

    /// Runs `tasks` independent tasks, on the worker pool when the work is large enough.
    private static func parallel(tasks: Int, work: Int, _ run: (Int) -> Void) {
        let threads = Parallel.threadCount
        if threads == 1 || tasks < 2 || work < Parallel.minimumParallelCount {
            for t in 0..<tasks { run(t) }
        } else {
            // About four chunks per thread, each a run of consecutive tasks.
            let chunks = Swift.min(tasks, 4 * threads)
            WorkerPool.shared.run(chunks: chunks, threads: threads) { c in
                for t in (c * tasks / chunks)..<((c + 1) * tasks / chunks) { run(t) }
            }
        }
    }
}
