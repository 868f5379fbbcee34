import XCTest
import ILATune

/// Schedules against transformers' lr_lambda formulas written out by hand.
final class ScheduleTests: XCTestCase {
    func testCosineLinearConstantWithWarmup() {
        let total = 10, warmup = 3
        for k in 0..<total {
            let cos = LearningRateSchedule.cosine.factor(step: k, total: total, warmup: warmup)
            let lin = LearningRateSchedule.linear.factor(step: k, total: total, warmup: warmup)
            let con = LearningRateSchedule.constant.factor(step: k, total: total, warmup: warmup)
            if k < warmup {
                XCTAssertEqual(cos, Double(k) / 3, accuracy: 1e-15)
                XCTAssertEqual(lin, Double(k) / 3, accuracy: 1e-15)
                XCTAssertEqual(con, Double(k) / 3, accuracy: 1e-15)
            } else {
                let progress = Double(k - 3) / 7
                XCTAssertEqual(cos, 0.5 * (1 + Foundation.cos(Double.pi * progress)), accuracy: 1e-15)
                XCTAssertEqual(lin, Double(10 - k) / 7, accuracy: 1e-15)
                XCTAssertEqual(con, 1)
            }
        }
        XCTAssertEqual(LearningRateSchedule.warmupSteps(0.03, total: 300), 9)
        XCTAssertEqual(LearningRateSchedule.warmupSteps(0.03, total: 20), 1)
        XCTAssertEqual(LearningRateSchedule.warmupSteps(0, total: 20), 0)
        XCTAssertEqual(LearningRateSchedule.warmupSteps(5, total: 20), 5)
    }
}
