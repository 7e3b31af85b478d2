import XCTest
@testable import AutogradC

/// The C ABI called from Swift: statuses, messages and handle rules.
final class CABITests: XCTestCase {
    private func lastError() -> String { String(cString: ag_last_error()) }

    private func make(_ values: [Double], _ shape: [Int64]) -> UInt64 {
        var h: UInt64 = 0
        let st = values.withUnsafeBytes { v in
            shape.withUnsafeBufferPointer { s in ag_tensor_from_data(&h, v.baseAddress, s.baseAddress, Int64(shape.count), 2) }
        }
        XCTAssertEqual(st, 0, lastError())
        return h
    }

    func testValuesAndGradientsThroughTheABI() {
        let x = make([1, 2, 3], [3])
        XCTAssertEqual(ag_tensor_set_requires_grad(x, 1), 0)
        var y: UInt64 = 0, s: UInt64 = 0, g: UInt64 = 0
        XCTAssertEqual(ag_mul(&y, x, x), 0)
        XCTAssertEqual(ag_sum(&s, y, nil, 0, 0), 0)
        var v = 0.0
        XCTAssertEqual(ag_tensor_item(&v, s), 0)
        XCTAssertEqual(v, 14)
        XCTAssertEqual(ag_backward(s, 0, 0, 0), 0)
        XCTAssertEqual(ag_tensor_grad(&g, x), 0)
        var out = [Float](repeating: 0, count: 3)
        XCTAssertEqual(ag_tensor_copy_data(&out, 3, 1, g), 0)
        XCTAssertEqual(out, [2, 4, 6])
        for h in [x, y, s, g] { XCTAssertEqual(ag_tensor_free(h), 0) }
    }

    func testGradReadyHookThroughTheABI() {
        // f = sum(x * x): the hook reads x.grad = 2x = [2, 4, 6] after the accumulation.
        let x = make([1, 2, 3], [3])
        XCTAssertEqual(ag_tensor_set_requires_grad(x, 1), 0)
        final class Box { var seen: [Double] = []; var destroyed = 0 }
        let box = Box()
        let hook: CGradReadyHook = { t, user in
            let box = Unmanaged<Box>.fromOpaque(user!).takeUnretainedValue()
            var g: UInt64 = 0
            guard ag_tensor_grad(&g, t) == 0 else { return 1 }
            var out = [Double](repeating: 0, count: 3)
            _ = ag_tensor_copy_data(&out, 3, 2, g)
            _ = ag_tensor_free(g)
            box.seen = out
            return 0
        }
        let destroy: CDestroy = { user in Unmanaged<Box>.fromOpaque(user!).takeUnretainedValue().destroyed += 1 }
        // The Box outlives every call: this test holds it until the end.
        let user = Unmanaged.passUnretained(box).toOpaque()
        var id: Int64 = 0
        XCTAssertEqual(ag_tensor_register_post_accumulate_grad_hook(&id, x, hook, user, destroy), 0)
        XCTAssertEqual(ag_tensor_register_post_accumulate_grad_hook(&id, x, nil, user, destroy), 2)
        var y: UInt64 = 0, s: UInt64 = 0
        XCTAssertEqual(ag_mul(&y, x, x), 0)
        XCTAssertEqual(ag_tensor_register_post_accumulate_grad_hook(nil, y, hook, user, destroy), 5)
        XCTAssertTrue(lastError().contains("not a leaf"), lastError())
        XCTAssertEqual(ag_sum(&s, y, nil, 0, 0), 0)
        XCTAssertEqual(ag_backward(s, 0, 0, 0), 0)
        XCTAssertEqual(box.seen, [2, 4, 6])
        XCTAssertEqual(ag_tensor_remove_hook(x, id), 0)
        XCTAssertEqual(box.destroyed, 1)
        for h in [x, y, s] { XCTAssertEqual(ag_tensor_free(h), 0) }
    }

    func testBadHandlesAreRefusedWithAMessage() {
        let x = make([1], [1])
        var out: UInt64 = 0
        XCTAssertEqual(ag_tensor_free(x), 0)
        XCTAssertEqual(ag_neg(&out, x), 1)
        XCTAssertTrue(lastError().contains("ag_neg"), lastError())
        XCTAssertEqual(ag_tensor_free(x), 1, "double free must be refused")
        XCTAssertEqual(ag_neg(&out, 0), 1)
        XCTAssertEqual(ag_neg(&out, 0xDEAD_BEEF), 1)
        XCTAssertEqual(ag_neg(&out, x ^ (1 << 40)), 1)
        XCTAssertEqual(ag_tensor_free(0), 0, "freeing AG_NULL_TENSOR is a no-op")
        XCTAssertEqual(out, 0, "nothing is written on failure")
    }

    func testArgumentShapeAndDTypeErrors() {
        let a = make([1, 2, 3, 4, 5, 6], [2, 3]), b = make([1, 2, 3, 4], [4])
        var out: UInt64 = 0
        XCTAssertEqual(ag_add(nil, a, a), 2)
        XCTAssertEqual(ag_add(&out, a, b), 3)
        XCTAssertTrue(lastError().contains("broadcast"), lastError())
        XCTAssertEqual(ag_matmul(&out, a, a), 3)
        let shape: [Int64] = [Int64.max, 4]
        XCTAssertEqual(ag_tensor_zeros(&out, shape, 2, 2), 3)
        XCTAssertEqual(ag_tensor_zeros(&out, shape, 9, 2), 2)
        XCTAssertEqual(ag_tensor_zeros(&out, nil, 1, 2), 2)
        XCTAssertEqual(ag_tensor_zeros(&out, nil, 0, 7), 4)
        let axes: [Int64] = [5]
        XCTAssertEqual(ag_sum(&out, a, axes, 1, 0), 2)
        var f: UInt64 = 0
        XCTAssertEqual(ag_tensor_ones(&f, nil, 0, 1), 0)
        XCTAssertEqual(ag_mul(&out, a, f), 4)
        XCTAssertEqual(String(cString: ag_status_name(4)), "AG_ERR_DTYPE")
        XCTAssertEqual(String(cString: ag_status_name(99)), "AG_UNKNOWN_STATUS")
        for h in [a, b, f] { XCTAssertEqual(ag_tensor_free(h), 0) }
    }

    func testEveryHandleFreedLeavesNothingAlive() {
        var before: Int64 = 0, after: Int64 = 0
        XCTAssertEqual(ag_live_handle_count(&before), 0)
        let x = make([1, 2], [2])
        XCTAssertEqual(ag_tensor_set_requires_grad(x, 1), 0)
        var y: UInt64 = 0, s: UInt64 = 0
        XCTAssertEqual(ag_exp(&y, x), 0)
        XCTAssertEqual(ag_mean(&s, y, nil, 0, 0), 0)
        XCTAssertEqual(ag_tensor_free(y), 0)  // the graph keeps what it needs
        XCTAssertEqual(ag_backward(s, 0, 0, 0), 0)
        for h in [x, s] { XCTAssertEqual(ag_tensor_free(h), 0) }
        XCTAssertEqual(ag_live_handle_count(&after), 0)
        XCTAssertEqual(after, before)
    }
}
