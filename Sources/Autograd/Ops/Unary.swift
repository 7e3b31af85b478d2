/// exp, log, relu: forward kernels and derivative rules side by side.
extension Tensor {
    public func exp() throws -> Tensor {
        let out = try mapped("exp", { Float.exp($0) }, { Double.exp($0) })
        if Tensor.shouldRecord(self) {
            // d exp(x) = exp(x). The saved output is detached (no cycle); when the backward
            // pass is itself recorded (create_graph) exp(x) is recomputed differentiably.
            out.record("exp", inputs: [self], saved: [self, out.detach()]) { g, node in
                let y = GradMode.isEnabled ? try node.saved[0].exp() : node.saved[1]
                return [try g.multiplying(y)]
            }
        }
        return out
    }

    public func log() throws -> Tensor {
        let out = try mapped("log", { Float.log($0) }, { Double.log($0) })
        if Tensor.shouldRecord(self) {
            out.record("log", inputs: [self], saved: [self]) { g, node in
                [try g.dividing(by: node.saved[0])]
            }
        }
        return out
    }

    /// max(x, 0); the derivative at exactly 0 is taken as 0 (as in PyTorch).
    public func relu() throws -> Tensor {
        let out = try mapped("relu", { $0 > 0 ? $0 : 0 }, { $0 > 0 ? $0 : 0 })
        if Tensor.shouldRecord(self) {
            out.record("relu", inputs: [self], saved: [self]) { g, node in
                let mask = try node.saved[0].mapped("relu_mask", { $0 > 0 ? 1 : 0 }, { $0 > 0 ? 1 : 0 })
                return [try g.multiplying(mask)]
            }
        }
        return out
    }
}
