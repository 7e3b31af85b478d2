/// Graphviz DOT pictures of a recorded graph: operations as ellipses, leaves as boxes.
extension Tensor {
    /// The DOT description of the graph that produced this tensor.
    public func graphDOT() -> String {
        GraphLock.withLock { unlockedGraphDOT() }
    }

    private func unlockedGraphDOT() -> String {
        var lines = ["digraph autograd {", "  rankdir=BT;", "  node [fontname=\"Helvetica\", fontsize=10];"]
        func describe(_ shape: [Int], _ dtype: DType) -> String { "\(shape) \(dtype)" }
        lines.append("  root [shape=box, style=\"rounded,filled\", fillcolor=\"#d6eaf8\", label=\"result\\n\(describe(shape, dtype))\(requiresGrad ? "\\nrequires_grad" : "")\"];")
        guard let rootNode = gradFn else {
            lines.append("}")
            return lines.joined(separator: "\n") + "\n"
        }
        var ids: [ObjectIdentifier: Int] = [:]
        var leafIds: [ObjectIdentifier: Int] = [:]
        var stack: [Node] = [rootNode]
        ids[ObjectIdentifier(rootNode)] = 0
        lines.append("  n0 -> root;")
        var constants = 0
        while let node = stack.popLast() {
            let me = ids[ObjectIdentifier(node)]!
            let released = node.isReleased ? "\\n(released)" : ""
            lines.append("  n\(me) [shape=ellipse, style=filled, fillcolor=\"#fdebd0\", label=\"\(Tensor.dotEscaped("\(node.name)"))\\n\(describe(node.shape, node.dtype))\(released)\"];")
            for k in 0..<node.inputCount {
                let edge = node.edge(k)
                switch edge {
                case .none:
                    lines.append("  c\(constants) [shape=box, style=dashed, label=\"constant\\n\(node.inputShape(k))\"];")
                    lines.append("  c\(constants) -> n\(me);")
                    constants += 1
                case .leaf(let anchor):
                    guard anchor.isAlive else {
                        lines.append("  c\(constants) [shape=box, style=dotted, label=\"freed leaf\\n\(node.inputShape(k))\"];")
                        lines.append("  c\(constants) -> n\(me);")
                        constants += 1
                        continue
                    }
                    let id = ObjectIdentifier(anchor)
                    let l = leafIds[id] ?? leafIds.count
                    if leafIds[id] == nil {
                        leafIds[id] = l
                        lines.append("  l\(l) [shape=box, style=filled, fillcolor=\"#d5f5e3\", label=\"leaf\\n\(describe(anchor.shape, anchor.storage.dtype))\\nrequires_grad\"];")
                    }
                    lines.append("  l\(l) -> n\(me);")
                case .node(let child):
                    let id = ObjectIdentifier(child)
                    if ids[id] == nil {
                        ids[id] = ids.count
                        stack.append(child)
                    }
                    lines.append("  n\(ids[id]!) -> n\(me);")
                }
            }
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Text for a quoted DOT label: a custom op's name is the user's, and a quote or a line
    /// break in it would end the label early.
    static func dotEscaped(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n", "\r", "\r\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
