import Foundation

/// Variables of one scope: the template, one loop iteration, one macro call.
final class JFrame {
    var vars: [String: JValue] = [:]
    let parent: JFrame?
    init(parent: JFrame?) { self.parent = parent }

    func lookup(_ name: String) -> JValue? {
        var f: JFrame? = self
        while let cur = f {
            if let v = cur.vars[name] { return v }
            f = cur.parent
        }
        return nil
    }
}

/// Limits that keep a hostile template from hanging or exhausting memory.
public struct JinjaLimits: Sendable {
    /// Evaluation steps (expressions and statements) per render.
    public var steps: Int
    /// Characters in any one string, the output included.
    public var stringLength: Int
    /// Nested macro calls.
    public var callDepth: Int

    public init(steps: Int = 20_000_000, stringLength: Int = 50_000_000, callDepth: Int = 64) {
        self.steps = steps
        self.stringLength = stringLength
        self.callDepth = callDepth
    }
}

enum Flow { case normal, breakLoop, continueLoop }

/// Renders a parsed template with jinja2's semantics (as Hugging Face configures it).
final class JinjaInterpreter {
    let limits: JinjaLimits
    var steps = 0
    var callDepth = 0
    let root: JFrame
    /// The statement line being run, for errors raised below it.
    var line = 1
    /// Current wall-clock time for strftime_now (fixed per render).
    let now: Date

    init(limits: JinjaLimits, now: Date = Date()) {
        self.limits = limits
        self.now = now
        root = JFrame(parent: nil)
        installGlobals()
    }

    func render(_ body: [JStmt], variables: [String: JValue]) throws -> String {
        let frame = JFrame(parent: root)
        frame.vars = variables
        var out = ""
        do {
            _ = try exec(body, frame, &out)
        } catch let e as EvalError {
            throw JinjaError(e.kind, line: line, e.message)
        }
        return out
    }

    func tick() throws {
        steps += 1
        if steps > limits.steps { throw EvalError("template did not finish within \(limits.steps) evaluation steps", .runtime) }
    }

    func checkLength(_ s: String) throws -> String {
        if s.utf8.count > limits.stringLength { throw EvalError("a string grew beyond \(limits.stringLength) bytes") }
        return s
    }

    // MARK: statements

    func exec(_ body: [JStmt], _ frame: JFrame, _ out: inout String) throws -> Flow {
        for stmt in body {
            try tick()
            switch stmt {
            case .text(let s):
                out += s
                if out.utf8.count > limits.stringLength { _ = try checkLength(out) }
            case .output(let e, let l):
                line = l
                out += try eval(e, frame).pyStr
                if out.utf8.count > limits.stringLength { _ = try checkLength(out) }
            case .ifChain(let branches, let otherwise, let l):
                line = l
                var taken = false
                for (cond, b) in branches {
                    if try eval(cond, frame).truthy {
                        taken = true
                        let f = try exec(b, frame, &out)
                        if f != .normal { return f }
                        break
                    }
                }
                if !taken {
                    let f = try exec(otherwise, frame, &out)
                    if f != .normal { return f }
                }
            case .forLoop(let targets, let iterable, let condition, let b, let otherwise, let l):
                line = l
                let f = try runFor(targets, iterable, condition, b, otherwise, frame, &out, line: l)
                if f != .normal { return f }
            case .set(let target, let e, let l):
                line = l
                let v = try eval(e, frame)
                switch target {
                case .names(let names):
                    if names.count == 1 {
                        frame.vars[names[0]] = v
                    } else {
                        let items = try iterate(v)
                        guard items.count == names.count else {
                            throw EvalError("cannot unpack \(items.count) values into \(names.count) names")
                        }
                        for (n, x) in zip(names, items) { frame.vars[n] = x }
                    }
                case .attribute(let obj, let attr):
                    guard case .namespace(let ns)? = frame.lookup(obj) else {
                        throw EvalError("cannot assign attribute on non-namespace object '\(obj)'")
                    }
                    if attr.hasPrefix("_") { throw EvalError("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(attr)'") }
                    ns.attributes[attr] = v
                }
            case .setBlock(let name, let b, let filters, let l):
                line = l
                var s = ""
                let f = JFrame(parent: frame)
                _ = try exec(b, f, &s)
                line = l
                var v = JValue.string(s)
                for (fname, args, kwargs) in filters {
                    v = try applyFilter(fname, v, try args.map { try eval($0, frame) }, try kwargs.map { ($0.0, try eval($0.1, frame)) })
                }
                frame.vars[name] = v
            case .macro(let name, let params, let b, let l):
                line = l
                frame.vars[name] = .function(makeMacro(name, params, b, frame, caller: nil))
            case .callBlock(let call, let params, let b, let l):
                line = l
                guard case .call(let callee, let args, let kwargs) = call else { throw EvalError("'call' needs a macro call") }
                let caller = makeMacro("caller", params, b, frame, caller: nil)
                let fn = try eval(callee, frame)
                guard case .function(let f) = fn else { throw EvalError("'\(fn.typeName)' object is not callable") }
                let a = try args.map { try eval($0, frame) }
                var kw = try kwargs.map { ($0.0, try eval($0.1, frame)) }
                kw.append(("caller", .function(caller)))
                out += try f.call(a, kw).pyStr
            case .filterBlock(let filters, let b, let l):
                line = l
                var s = ""
                _ = try exec(b, JFrame(parent: frame), &s)
                line = l
                var v = JValue.string(s)
                for (fname, args, kwargs) in filters {
                    v = try applyFilter(fname, v, try args.map { try eval($0, frame) }, try kwargs.map { ($0.0, try eval($0.1, frame)) })
                }
                out += v.pyStr
            case .generation(let b):
                let f = try exec(b, frame, &out)
                if f != .normal { return f }
            case .breakLoop(let l):
                line = l
                return .breakLoop
            case .continueLoop(let l):
                line = l
                return .continueLoop
            }
        }
        return .normal
    }

    func runFor(_ targets: [String], _ iterable: JExpr, _ condition: JExpr?, _ body: [JStmt], _ otherwise: [JStmt],
                _ frame: JFrame, _ out: inout String, line l: Int) throws -> Flow {
        var items = try iterate(try eval(iterable, frame))
        func bind(_ f: JFrame, _ item: JValue) throws {
            if targets.count == 1 {
                f.vars[targets[0]] = item
            } else {
                let parts = try iterate(item)
                guard parts.count == targets.count else {
                    throw EvalError("cannot unpack \(parts.count) values into \(targets.count) loop variables")
                }
                for (n, x) in zip(targets, parts) { f.vars[n] = x }
            }
        }
        if let condition {
            var kept: [JValue] = []
            for item in items {
                try tick()
                let f = JFrame(parent: frame)
                try bind(f, item)
                if try eval(condition, f).truthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            line = l
            return try exec(otherwise, JFrame(parent: frame), &out)
        }
        let n = items.count
        for (k, item) in items.enumerated() {
            try tick()
            let f = JFrame(parent: frame)
            var loop = JDict()
            loop["index"] = .int(k + 1)
            loop["index0"] = .int(k)
            loop["revindex"] = .int(n - k)
            loop["revindex0"] = .int(n - k - 1)
            loop["first"] = .bool(k == 0)
            loop["last"] = .bool(k == n - 1)
            loop["length"] = .int(n)
            loop["depth"] = .int(1)
            loop["depth0"] = .int(0)
            loop["previtem"] = k > 0 ? items[k - 1] : .undefined("there is no previous item")
            loop["nextitem"] = k + 1 < n ? items[k + 1] : .undefined("there is no next item")
            loop["cycle"] = .function(JFunction("cycle") { args, _ in
                guard !args.isEmpty else { throw EvalError("no items for cycling given") }
                return args[k % args.count]
            })
            f.vars["loop"] = .dict(loop)
            try bind(f, item)
            let flow = try exec(body, f, &out)
            line = l
            if flow == .breakLoop { break }
        }
        return .normal
    }

    func makeMacro(_ name: String, _ params: [(String, JExpr?)], _ body: [JStmt], _ defining: JFrame, caller: JFunction?) -> JFunction {
        weak var weakFrame = defining
        let rootFrame = root
        return JFunction(name) { [unowned self] args, kwargs in
            guard self.callDepth < self.limits.callDepth else {
                throw EvalError("macro calls nested deeper than \(self.limits.callDepth)")
            }
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            let savedLine = self.line
            defer { self.line = savedLine }
            let f = JFrame(parent: weakFrame ?? rootFrame)
            guard args.count <= params.count else {
                throw EvalError("macro '\(name)' takes not more than \(params.count) argument(s)")
            }
            var given: [String: JValue] = [:]
            for (k, v) in kwargs {
                if k == "caller" {
                    f.vars["caller"] = v
                    continue
                }
                guard params.contains(where: { $0.0 == k }) else {
                    throw EvalError("macro '\(name)' takes no keyword argument '\(k)'")
                }
                given[k] = v
            }
            for (idx, (p, def)) in params.enumerated() {
                if idx < args.count {
                    f.vars[p] = args[idx]
                } else if let v = given[p] {
                    f.vars[p] = v
                } else if let def {
                    f.vars[p] = try self.eval(def, f)
                } else {
                    f.vars[p] = .undefined("'\(p)' is undefined")
                }
            }
            var out = ""
            _ = try self.exec(body, f, &out)
            return .string(out)
        }
    }

    // MARK: expressions

    func eval(_ e: JExpr, _ frame: JFrame) throws -> JValue {
        try tick()
        switch e {
        case .literal(let v): return v
        case .name(let n): return frame.lookup(n) ?? .undefined("'\(n)' is undefined")
        case .list(let items), .tuple(let items): return .list(try items.map { try eval($0, frame) })
        case .dict(let pairs):
            var d = JDict()
            for (k, v) in pairs {
                let key = try eval(k, frame)
                guard case .string(let ks) = key else { throw EvalError("dict keys other than strings are not supported (\(key.typeName))", .unsupported) }
                d[ks] = try eval(v, frame)
            }
            return .dict(d)
        case .attr(let base, let name):
            return try getAttr(try eval(base, frame), name)
        case .item(let base, let index):
            return try getItem(try eval(base, frame), try eval(index, frame))
        case .slice(let base, let a, let b, let c):
            return try slice(try eval(base, frame), try a.map { try eval($0, frame) }, try b.map { try eval($0, frame) },
                             try c.map { try eval($0, frame) })
        case .call(let callee, let args, let kwargs):
            let fn = try eval(callee, frame)
            let a = try args.map { try eval($0, frame) }
            let kw = try kwargs.map { ($0.0, try eval($0.1, frame)) }
            switch fn {
            case .function(let f): return try f.call(a, kw)
            case .undefined(let why): throw EvalError(why)
            default: throw EvalError("'\(fn.typeName)' object is not callable")
            }
        case .filter(let base, let name, let args, let kwargs):
            let v = try eval(base, frame)
            return try applyFilter(name, v, try args.map { try eval($0, frame) }, try kwargs.map { ($0.0, try eval($0.1, frame)) })
        case .test(let base, let name, let args, let negated):
            let r = try applyTest(name, try eval(base, frame), try args.map { try eval($0, frame) })
            return .bool(negated ? !r : r)
        case .unary(let op, let x):
            let v = try eval(x, frame)
            switch (op, v) {
            case ("-", .int(let i)):
                guard i != Int.min else { throw EvalError("integer overflow") }
                return .int(-i)
            case ("-", .double(let d)): return .double(-d)
            case ("-", .bool(let b)): return .int(b ? -1 : 0)
            case ("+", .int), ("+", .double): return v
            case ("+", .bool(let b)): return .int(b ? 1 : 0)
            case (_, .undefined(let why)): throw EvalError(why)
            default: throw EvalError("bad operand type for unary \(op): '\(v.typeName)'")
            }
        case .binary(let op, let a, let b):
            return try binary(op, try eval(a, frame), try eval(b, frame))
        case .compare(let first, let ops):
            var left = try eval(first, frame)
            for (op, rhs) in ops {
                let right = try eval(rhs, frame)
                if !(try compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .and(let a, let b):
            let l = try eval(a, frame)
            return l.truthy ? try eval(b, frame) : l
        case .or(let a, let b):
            let l = try eval(a, frame)
            return l.truthy ? l : try eval(b, frame)
        case .not(let x): return .bool(!(try eval(x, frame).truthy))
        case .condition(let cond, let then, let otherwise):
            if try eval(cond, frame).truthy { return try eval(then, frame) }
            if let otherwise { return try eval(otherwise, frame) }
            return .undefined("the inline if-expression on line \(line) evaluated to false and no else section was defined")
        }
    }

    // MARK: Python operations

    func iterate(_ v: JValue) throws -> [JValue] {
        switch v {
        case .list(let l): return l
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw EvalError("'\(v.typeName)' object is not iterable")
        }
    }

    func length(_ v: JValue) throws -> Int {
        switch v {
        case .list(let l): return l.count
        case .dict(let d): return d.count
        case .string(let s): return s.unicodeScalars.count
        case .undefined: return 0
        default: throw EvalError("object of type '\(v.typeName)' has no len()")
        }
    }

    static func asNumber(_ v: JValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    static func asInt(_ v: JValue) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    func equal(_ a: JValue, _ b: JValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.list(let x), .list(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.dict(let x), .dict(let y)):
            return x.count == y.count && x.pairs.allSatisfy { k, v in y[k].map { equal(v, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.function(let x), .function(let y)): return x === y
        default:
            if let i = Self.asInt(a), let j = Self.asInt(b) { return i == j }
            if let x = Self.asNumber(a), let y = Self.asNumber(b) { return x == y }
            return false
        }
    }

    /// Python ordering (`<`) for numbers, strings and lists.
    func less(_ a: JValue, _ b: JValue, _ op: String) throws -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)):
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars)
        case (.list(let x), .list(let y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return try less(p, q, op) }
            return x.count < y.count
        case (.undefined(let why), _), (_, .undefined(let why)): throw EvalError(why)
        default:
            if let i = Self.asInt(a), let j = Self.asInt(b) { return i < j }
            if let x = Self.asNumber(a), let y = Self.asNumber(b) { return x < y }
            throw EvalError("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    func contains(_ container: JValue, _ item: JValue) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else {
                if case .undefined(let why) = item { throw EvalError(why) }
                throw EvalError("'in <string>' requires string as left operand, not \(item.typeName)")
            }
            return sub.isEmpty || PyStr.find(Array(s.unicodeScalars), Array(sub.unicodeScalars), from: 0) >= 0
        case .list(let l): return l.contains { equal($0, item) }
        case .dict(let d):
            if case .string(let k) = item { return d[k] != nil }
            return false
        case .undefined: return false
        default: throw EvalError("argument of type '\(container.typeName)' is not iterable")
        }
    }

    func compare(_ op: String, _ a: JValue, _ b: JValue) throws -> Bool {
        switch op {
        case "==": return equal(a, b)
        case "!=": return !equal(a, b)
        case "<": return try less(a, b, op)
        case ">": return try less(b, a, op)
        case "<=": return try !less(b, a, op)
        case ">=": return try !less(a, b, op)
        case "in": return try contains(b, a)
        case "notin": return try !contains(b, a)
        default: throw EvalError("unknown comparison \(op)", .unsupported)
        }
    }

    func binary(_ op: String, _ a: JValue, _ b: JValue) throws -> JValue {
        if op == "~" { return .string(try checkLength(a.pyStr + b.pyStr)) }
        if case .undefined(let why) = a { throw EvalError(why) }
        if case .undefined(let why) = b { throw EvalError(why) }
        func typeError() -> EvalError {
            EvalError("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)): return .string(try checkLength(x + y))
        case ("+", .list(let x), .list(let y)):
            guard x.count + y.count <= limits.stringLength else { throw EvalError("a list grew beyond \(limits.stringLength) items") }
            return .list(x + y)
        case ("*", .string(let s), _), ("*", _, .string(let s)):
            guard let n = Self.asInt(op == "*" && a.isString ? b : a) else { throw EvalError("can't multiply sequence by non-int of type '\((a.isString ? b : a).typeName)'") }
            if n <= 0 || s.isEmpty { return .string("") }
            guard s.utf8.count.multipliedReportingOverflow(by: n).partialValue <= limits.stringLength,
                  !s.utf8.count.multipliedReportingOverflow(by: n).overflow else {
                throw EvalError("a string grew beyond \(limits.stringLength) bytes")
            }
            return .string(String(repeating: s, count: n))
        case ("*", .list(let l), _), ("*", _, .list(let l)):
            guard let n = Self.asInt(a.isList ? b : a) else { throw typeError() }
            if n <= 0 || l.isEmpty { return .list([]) }
            guard !l.count.multipliedReportingOverflow(by: n).overflow, l.count * n <= 1_000_000 else {
                throw EvalError("a list grew beyond 1000000 items")
            }
            return .list(Array([[JValue]](repeating: l, count: n).joined()))
        case ("%", .string(let s), _):
            return .string(try checkLength(try PyStr.percentFormat(s, b)))
        default: break
        }
        if let x = Self.asInt(a), let y = Self.asInt(b) {
            switch op {
            case "+":
                let r = x.addingReportingOverflow(y)
                if r.overflow { throw EvalError("integer overflow in +", .unsupported) }
                return .int(r.partialValue)
            case "-":
                let r = x.subtractingReportingOverflow(y)
                if r.overflow { throw EvalError("integer overflow in -", .unsupported) }
                return .int(r.partialValue)
            case "*":
                let r = x.multipliedReportingOverflow(by: y)
                if r.overflow { throw EvalError("integer overflow in *", .unsupported) }
                return .int(r.partialValue)
            case "/":
                guard y != 0 else { throw EvalError("division by zero") }
                return .double(Double(x) / Double(y))
            case "//":
                guard y != 0 else { throw EvalError("integer division or modulo by zero") }
                if x == Int.min && y == -1 { throw EvalError("integer overflow in //", .unsupported) }
                var q = x / y
                if (x % y != 0) && ((x < 0) != (y < 0)) { q -= 1 }
                return .int(q)
            case "%":
                guard y != 0 else { throw EvalError("integer division or modulo by zero") }
                if y == -1 { return .int(0) }
                var r = x % y
                if r != 0 && ((r < 0) != (y < 0)) { r += y }
                return .int(r)
            case "**":
                if y < 0 { return .double(pow(Double(x), Double(y))) }
                var result = 1
                var base = x
                var e = y
                while e > 0 {
                    if e & 1 == 1 {
                        let r = result.multipliedReportingOverflow(by: base)
                        if r.overflow { throw EvalError("integer overflow in **", .unsupported) }
                        result = r.partialValue
                    }
                    e >>= 1
                    if e > 0 {
                        let r = base.multipliedReportingOverflow(by: base)
                        if r.overflow { throw EvalError("integer overflow in **", .unsupported) }
                        base = r.partialValue
                    }
                }
                return .int(result)
            default: break
            }
        }
        if let x = Self.asNumber(a), let y = Self.asNumber(b) {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw EvalError("float division by zero") }
                return .double(x / y)
            case "//":
                guard y != 0 else { throw EvalError("float floor division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw EvalError("float modulo") }
                var r = fmod(x, y)
                if r != 0 && ((r < 0) != (y < 0)) { r += y }
                return .double(r)
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        throw typeError()
    }

    // MARK: attributes and items

    static let unsafeMethods: Set<String> = ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse",
                                             "update", "setdefault", "popitem"]

    func getAttr(_ v: JValue, _ name: String) throws -> JValue {
        if name.hasPrefix("_") {
            if case .undefined(let why) = v { throw EvalError(why) }
            throw EvalError("access to attribute '\(name)' of '\(v.typeName)' object is unsafe")
        }
        switch v {
        case .undefined(let why): throw EvalError(why)
        case .dict(let d):
            if let m = dictMethod(d, name) { return m }
            return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined("'Namespace object' has no attribute '\(name)'")
        case .string(let s):
            if let m = stringMethod(s, name) { return m }
        case .list(let l):
            if let m = listMethod(l, name) { return m }
        default: break
        }
        if Self.unsafeMethods.contains(name), v.isList || v.isDict {
            throw EvalError("access to attribute '\(name)' of '\(v.typeName)' object is unsafe")
        }
        return .undefined("'\(v.typeName == "NoneType" ? "None" : v.typeName + " object")' has no attribute '\(name)'")
    }

    func getItem(_ v: JValue, _ key: JValue) throws -> JValue {
        switch (v, key) {
        case (.undefined(let why), _): throw EvalError(why)
        case (.dict(let d), .string(let k)):
            if let x = d[k] { return x }
            return try getAttrOrUndefined(v, k)
        case (.list(let l), _):
            if let i = Self.asInt(key) {
                let j = i < 0 ? i + l.count : i
                return j >= 0 && j < l.count ? l[j] : .undefined("list object has no element \(i)")
            }
        case (.string(let s), _):
            if let i = Self.asInt(key) {
                let u = Array(s.unicodeScalars)
                let j = i < 0 ? i + u.count : i
                return j >= 0 && j < u.count ? .string(String(u[j])) : .undefined("str object has no element \(i)")
            }
        case (.namespace, .string(let k)):
            return try getAttr(v, k)
        default: break
        }
        if case .string(let k) = key { return try getAttrOrUndefined(v, k) }
        return .undefined("'\(v.typeName) object' has no attribute \(key.pyRepr)")
    }

    private func getAttrOrUndefined(_ v: JValue, _ k: String) throws -> JValue {
        if k.hasPrefix("_") { return .undefined("'\(v.typeName) object' has no attribute '\(k)'") }
        return try getAttr(v, k)
    }

    func slice(_ v: JValue, _ a: JValue?, _ b: JValue?, _ c: JValue?) throws -> JValue {
        func idx(_ x: JValue?) throws -> Int? {
            guard let x, !x.isNone else { return nil }
            if case .undefined(let why) = x { throw EvalError(why) }
            guard let i = Self.asInt(x) else { throw EvalError("slice indices must be integers or None") }
            return i
        }
        let start = try idx(a), stop = try idx(b), step = try idx(c) ?? 1
        guard step != 0 else { throw EvalError("slice step cannot be zero") }
        func indices(_ n: Int) -> [Int] {
            func clamp(_ x: Int?, _ def: Int, lo: Int, hi: Int) -> Int {
                guard var x else { return def }
                if x < 0 { x += n }
                return min(max(x, lo), hi)
            }
            var out: [Int] = []
            if step > 0 {
                var i = clamp(start, 0, lo: 0, hi: n)
                let e = clamp(stop, n, lo: 0, hi: n)
                while i < e { out.append(i); i += step }
            } else {
                var i = clamp(start, n - 1, lo: -1, hi: n - 1)
                let e = clamp(stop, -1, lo: -1, hi: n - 1)
                while i > e { out.append(i); i += step }
            }
            return out
        }
        switch v {
        case .list(let l): return .list(indices(l.count).map { l[$0] })
        case .string(let s):
            let u = Array(s.unicodeScalars)
            var out = String.UnicodeScalarView()
            for i in indices(u.count) { out.append(u[i]) }
            return .string(String(out))
        case .undefined(let why): throw EvalError(why)
        default: throw EvalError("'\(v.typeName)' object is not subscriptable")
        }
    }
}

extension JValue {
    var isString: Bool { if case .string = self { return true } else { return false } }
    var isList: Bool { if case .list = self { return true } else { return false } }
    var isDict: Bool { if case .dict = self { return true } else { return false } }
}
