import XCTest
@testable import AutogradEngine

final class ShapeTests: XCTestCase {
    func testBroadcastFollowsNumPyRules() throws {
        XCTAssertEqual(try Shape.broadcast([3, 1], [1, 4]), [3, 4])
        XCTAssertEqual(try Shape.broadcast([2, 3], [3]), [2, 3])
        XCTAssertEqual(try Shape.broadcast([], [2, 3]), [2, 3])
        XCTAssertEqual(try Shape.broadcast([5, 1, 4], [3, 1]), [5, 3, 4])
        XCTAssertThrowsError(try Shape.broadcast([2, 3], [4])) { error in
            guard case AutogradError.shape = error else { return XCTFail("expected a shape error, got \(error)") }
        }
    }

    func testCountRefusesNegativeAndOverflowingShapes() {
        XCTAssertEqual(try Shape.count([2, 3, 4]), 24)
        XCTAssertEqual(try Shape.count([]), 1)
        XCTAssertEqual(try Shape.count([3, 0]), 0)
        XCTAssertThrowsError(try Shape.count([2, -1]))
        XCTAssertThrowsError(try Shape.count([Int.max, 2]))
        XCTAssertThrowsError(try Shape.count([1 << 32, 1 << 32]))
        XCTAssertThrowsError(try Shape.count([Int](repeating: 1, count: 9)))
    }

    func testAxesAreNormalisedAndChecked() {
        XCTAssertEqual(try Shape.normalizeAxes([-1, 0], rank: 3), [0, 2])
        XCTAssertEqual(try Shape.normalizeAxes([], rank: 2), [0, 1])
        XCTAssertThrowsError(try Shape.normalizeAxes([3], rank: 3))
        XCTAssertThrowsError(try Shape.normalizeAxes([-4], rank: 3))
        XCTAssertThrowsError(try Shape.normalizeAxes([1, -2], rank: 3))
    }
}
