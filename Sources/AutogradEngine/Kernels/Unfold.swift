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

    /// Whether one image's group of channels, zero-padded, is at most a few times the size of
    /// its input and columns (unfold and fold then go through such a scratch).
    var scratchIsSmall: Bool {
        let (a, o1) = (h + 2 * ph).multipliedReportingOverflow(by: w + 2 * pw)
        let (b, o2) = a.multipliedReportingOverflow(by: groupChannels)
        return !o1 && !o2 && b <= 4 * (groupChannels * h * w + positions * groupColumns) + 4096
    }

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
        guard g.scratchIsSmall else { return unfoldChecked(x, into: cols, g) }
        let (h, w, kh, kw, oh, ow) = (g.h, g.w, g.kh, g.kw, g.oh, g.ow)
        let (sh, sw, dh, dw) = (g.sh, g.sw, g.dh, g.dw)
        let cg = g.groupChannels, kcols = g.groupColumns
        let (hp, wp) = (h + 2 * g.ph, w + 2 * g.pw)
        let padded = g.ph > 0 || g.pw > 0
        let threeTaps = kw == 3 && dw == 1
        // One task per (group, image): its channels are copied into a zero-padded scratch
        // first (when there is padding), so the copy into rows needs no bounds checks.
        func run(_ task: Int) {
            let n = task % g.n, group = task / g.n
            let source = x + (n * g.c + group * cg) * h * w
            func fill(_ image: UnsafePointer<T>) {
                var p = cols + task * g.positions * kcols
                for i in 0..<oh {
                    for j in 0..<ow {
                        var corner = image + ((i &* sh) &* wp &+ j &* sw)
                        for _ in 0..<cg {
                            var line = corner
                            if threeTaps {
                                // The common 3-wide kernel, undilated along W: unrolled.
                                for _ in 0..<kh {
                                    p[0] = line[0]; p[1] = line[1]; p[2] = line[2]
                                    p += 3
                                    line += dh &* wp
                                }
                            } else {
                                for _ in 0..<kh {
                                    for kj in 0..<kw { p[kj] = line[kj &* dw] }
                                    p += kw
                                    line += dh &* wp
                                }
                            }
                            corner += hp &* wp
                        }
                    }
                }
            }
            guard padded else { return fill(source) }
            withUnsafeTemporaryAllocation(of: T.self, capacity: cg * hp * wp) { scratch in
                let pad = scratch.baseAddress!
                pad.initialize(repeating: 0, count: cg * hp * wp)
                for ch in 0..<cg {
                    for r in 0..<h {
                        (pad + (ch * hp + r + g.ph) * wp + g.pw).update(from: source + (ch * h + r) * w, count: w)
                    }
                }
                fill(pad)
            }
        }
        parallel(tasks: g.groups * g.n, work: g.rows * kcols * g.groups, run)
    }

    /// x (N, C, H, W) = the transpose of unfold applied to cols: each input position sums the
    /// column entries that unfold copied from it, in float64 (a zero-padded scratch per image
    /// and group, added to in the rows' order), so overlapping windows add without float32
    /// round-off building up, in an order that does not depend on threads.
    static func fold<T: TensorElement>(_ cols: UnsafePointer<T>, into x: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        guard g.scratchIsSmall else { return foldGathered(cols, into: x, g) }
        let (h, w, kh, kw, oh, ow) = (g.h, g.w, g.kh, g.kw, g.oh, g.ow)
        let (sh, sw, dh, dw) = (g.sh, g.sw, g.dh, g.dw)
        let cg = g.groupChannels, kcols = g.groupColumns
        let (hp, wp) = (h + 2 * g.ph, w + 2 * g.pw)
        let threeTaps = kw == 3 && dw == 1
        func run(_ task: Int) {
            let n = task % g.n, group = task / g.n
            withUnsafeTemporaryAllocation(of: Double.self, capacity: cg * hp * wp) { scratch in
                let acc = scratch.baseAddress!
                acc.initialize(repeating: 0, count: cg * hp * wp)
                var p = cols + task * g.positions * kcols
                for i in 0..<oh {
                    for j in 0..<ow {
                        var corner = acc + ((i &* sh) &* wp &+ j &* sw)
                        for _ in 0..<cg {
                            var line = corner
                            if threeTaps {
                                for _ in 0..<kh {
                                    line[0] += Double(p[0]); line[1] += Double(p[1]); line[2] += Double(p[2])
                                    p += 3
                                    line += dh &* wp
                                }
                            } else {
                                for _ in 0..<kh {
                                    for kj in 0..<kw { line[kj &* dw] += Double(p[kj]) }
                                    p += kw
                                    line += dh &* wp
                                }
                            }
                            corner += hp &* wp
                        }
                    }
                }
                let target = x + (n * g.c + group * cg) * h * w
                for ch in 0..<cg {
                    for r in 0..<h {
                        let from = acc + (ch * hp + r + g.ph) * wp + g.pw, to = target + (ch * h + r) * w
                        for q in 0..<w { to[q] = T(from[q]) }
                    }
                }
            }
        }
        parallel(tasks: g.groups * g.n, work: g.rows * kcols * g.groups, run)
    }

    /// unfold with a bounds check per tap instead of a padded scratch (used when the scratch
    /// would be much larger than the data: padding far beyond the input with large strides).
    /// Row n*OH*OW + i*OW + j
    /// of group g holds, for each channel of g and each tap (ki, kj), x[n, c, i*sh - ph + ki*dh,
    /// j*sw - pw + kj*dw] (0 outside the input).
    static func unfoldChecked<T: TensorElement>(_ x: UnsafePointer<T>, into cols: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let (h, w, kh, kw) = (g.h, g.w, g.kh, g.kw)
        let cg = g.groupChannels, kcols = g.groupColumns, oh = g.oh, ow = g.ow
        let (sh, sw, ph, pw, dh, dw) = (g.sh, g.sw, g.ph, g.pw, g.dh, g.dw)
        // One task per (group, image, output row): independent, so the split never changes bits.
        let tasks = g.groups * g.n * oh
        func run(_ task: Int) {
            let i = task % oh, image = task / oh
            let n = image % g.n, group = image / g.n
            var row = cols + ((group * g.n + n) * oh + i) * ow * kcols
            let channel0 = x + (n * g.c + group * cg) * h * w
            for j in 0..<ow {
                let top = i * sh - ph, left = j * sw - pw
                var p = row
                for ch in 0..<cg {
                    let plane = channel0 + ch * h * w
                    for ki in 0..<kh {
                        let r = top + ki * dh
                        if r < 0 || r >= h {
                            for kj in 0..<kw { p[kj] = 0 }
                        } else {
                            let line = plane + r * w
                            if dw == 1 && left >= 0 && left + kw <= w {
                                for kj in 0..<kw { p[kj] = line[left + kj] }
                            } else {
                                for kj in 0..<kw {
                                    let s = left + kj * dw
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

    /// fold without a padded scratch (see unfoldChecked): each input position gathers and sums
    /// the column entries that unfold copied from it (in float64, in a fixed order: by tap, then by
    /// output position), so overlapping windows add without float32 round-off building up.
    static func foldGathered<T: TensorElement>(_ cols: UnsafePointer<T>, into x: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let (h, w, kh, kw) = (g.h, g.w, g.kh, g.kw)
        let cg = g.groupChannels, kcols = g.groupColumns, ow = g.ow
        // For each input row r: the offsets, within a group's block of columns of one image,
        // of the (output row i, tap ki) pairs with i*sh - ph + ki*dh = r; the same for the
        // columns (output column j, tap kj). Lists start at start[r] (a CSR layout).
        func taps(_ extent: Int, _ k: Int, _ s: Int, _ p: Int, _ d: Int, _ out: Int,
                  _ positionStride: Int, _ tapStride: Int) -> (start: [Int], offset: [Int]) {
            var start = [0], offset: [Int] = []
            for r in 0..<extent {
                for kk in 0..<k {
                    let t = r + p - kk * d
                    if t >= 0 && t % s == 0 && t / s < out { offset.append(t / s * positionStride + kk * tapStride) }
                }
                start.append(offset.count)
            }
            return (start, offset)
        }
        let rowsOf = taps(h, kh, g.sh, g.ph, g.dh, g.oh, ow * kcols, kw)
        let colsOf = taps(w, kw, g.sw, g.pw, g.dw, g.ow, kcols, 1)
        rowsOf.start.withUnsafeBufferPointer { rs in rowsOf.offset.withUnsafeBufferPointer { ro in
        colsOf.start.withUnsafeBufferPointer { cs in colsOf.offset.withUnsafeBufferPointer { co in
            // One task per (image, channel) plane.
            let tasks = g.n * g.c
            func run(_ task: Int) {
                let n = task / g.c, c = task % g.c
                let group = c / cg, ch = c % cg
                let base = cols + (group * g.n + n) * g.positions * kcols + ch * kh * kw
                var out = x + task * h * w
                for r in 0..<h {
                    let (a0, a1) = (rs[r], rs[r + 1])
                    for q in 0..<w {
                        var acc = 0.0
                        for a in a0..<a1 {
                            let rowBase = base + ro[a]
                            for b in cs[q]..<cs[q + 1] { acc += Double(rowBase[co[b]]) }
                        }
                        out.pointee = T(acc)
                        out += 1
                    }
                }
            }
            parallel(tasks: tasks, work: g.n * g.c * h * w * kh * kw, run)
        }}}}
    }

    /// Calls `body(p, best)` for each output position p of one (H, W) plane of x, with `best`
    /// the offset of its window's first maximum in scan order (rows, then columns). Padding
    /// counts as -inf (never chosen: every window holds an input position, which
    /// WindowGeometry and the pool's padding limit see to it). A nan wins over any number
    /// (the first nan), so a nan input propagates as in PyTorch.
    @inline(__always)
    static func forEachArgmax<T: TensorElement>(_ x: UnsafePointer<T>, _ g: WindowGeometry, _ body: (Int, Int, T) -> Void) {
        let (h, w, kh, kw, sh, sw, ph, pw, oh, ow) = (g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow)
        var p = 0
        for i in 0..<oh {
            let top = i * sh - ph
            let r0 = Swift.max(0, top), r1 = Swift.min(h, top + kh)
            for j in 0..<ow {
                let left = j * sw - pw
                let c0 = Swift.max(0, left), c1 = Swift.min(w, left + kw)
                var best = r0 * w + c0
                var value = x[best]
                var nan: UInt8 = 0
                for r in r0..<r1 {
                    var o = r * w + c0
                    for _ in c0..<c1 {
                        let v = x[o]
                        // A greater value: selected through a mask, without a branch (random
                        // data would mispredict half of them).
                        let mask = 0 &- Int(unsafeBitCast(v > value, to: UInt8.self))
                        best = (o & mask) | (best & ~mask)
                        value = Swift.max(value, v)
                        nan |= unsafeBitCast(v != v, to: UInt8.self)
                        o += 1
                    }
                }
                if nan != 0 {
                    // Rare: the window's first nan is its maximum.
                    scan: for r in r0..<r1 {
                        for q in c0..<c1 where x[r * w + q].isNaN {
                            best = r * w + q
                            value = x[best]
                            break scan
                        }
                    }
                }
                body(p, best, value)
                p += 1
            }
        }
    }

    /// Max pooling: out (N, C, OH, OW) = the first maximum of each window of x, and, when
    /// `indices` is given, its offset within its (H, W) plane there (what the backward reads).
    static func maxPool<T: TensorElement>(_ x: UnsafePointer<T>, into out: UnsafeMutablePointer<T>,
                                          indices: UnsafeMutablePointer<Int64>?, _ g: WindowGeometry) {
        let plane = g.h * g.w, positions = g.positions
        parallel(tasks: g.n * g.c, work: g.n * g.c * positions * g.kh * g.kw) { t in
            let op = out + t * positions
            if let indices {
                let ip = indices + t * positions
                forEachArgmax(x + t * plane, g) { p, best, value in
                    op[p] = value
                    ip[p] = Int64(best)
                }
            } else {
                forEachArgmax(x + t * plane, g) { p, _, value in op[p] = value }
            }
        }
    }

    /// The offsets max pooling picks (see maxPool), alone: a replay's step for the indices.
    static func maxPoolIndices<T: TensorElement>(_ x: UnsafePointer<T>, into indices: UnsafeMutablePointer<Int64>, _ g: WindowGeometry) {
        let plane = g.h * g.w, positions = g.positions
        parallel(tasks: g.n * g.c, work: g.n * g.c * positions * g.kh * g.kw) { t in
            let ip = indices + t * positions
            forEachArgmax(x + t * plane, g) { p, best, _ in ip[p] = Int64(best) }
        }
    }

    /// out (N, C, OH, OW)[p] = v[indices[p]] within each plane (v of the input's shape): the
    /// derivative of max pooling applied to a tangent v. Indices come from maxPool (in range).
    static func poolSelect<T: TensorElement>(_ v: UnsafePointer<T>, indices: UnsafePointer<Int64>,
                                             into out: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let plane = g.h * g.w, positions = g.positions
        parallel(tasks: g.n * g.c, work: g.n * g.c * positions) { t in
            let vp = v + t * plane, op = out + t * positions, ip = indices + t * positions
            for p in 0..<positions { op[p] = vp[Int(ip[p])] }
        }
    }

    /// out (the input's shape) = zeros with gOut (N, C, OH, OW)[p] added at indices[p] within
    /// each plane: the transpose of poolSelect. Windows that overlap may pick one position
    /// several times; those sums go through float64. 2x2 windows that tile the plane write
    /// each position once, in order (its gradient or 0), with no zeroing pass.
    static func poolScatter<T: TensorElement>(_ gOut: UnsafePointer<T>, indices: UnsafePointer<Int64>,
                                              into out: UnsafeMutablePointer<T>, _ g: WindowGeometry) {
        let plane = g.h * g.w, positions = g.positions
        let overlapping = g.sh < g.kh || g.sw < g.kw
        let tiling2x2 = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0
        parallel(tasks: g.n * g.c, work: g.n * g.c * positions) { t in
            let ip = indices + t * positions, gp = gOut + t * positions, op = out + t * plane
            if tiling2x2 {
                let w = g.w
                if g.h % 2 != 0 || w % 2 != 0 { op.update(repeating: 0, count: plane) }
                let zero = T(0)
                var p = 0
                for i in 0..<g.oh {
                    for j in 0..<g.ow {
                        let o = 2 * i * w + 2 * j, best = Int(ip[p]), v = gp[p]
                        op[o] = best == o ? v : zero
                        op[o + 1] = best == o + 1 ? v : zero
                        op[o + w] = best == o + w ? v : zero
                        op[o + w + 1] = best == o + w + 1 ? v : zero
                        p += 1
                    }
                }
            } else if overlapping && T.self != Double.self {
                withUnsafeTemporaryAllocation(of: Double.self, capacity: plane) { acc in
                    acc.initialize(repeating: 0)
                    for p in 0..<positions { acc[Int(ip[p])] += Double(gp[p]) }
                    for k in 0..<plane { op[k] = T(acc[k]) }
                }
            } else {
                op.update(repeating: 0, count: plane)
                for p in 0..<positions { op[Int(ip[p])] += gp[p] }
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
