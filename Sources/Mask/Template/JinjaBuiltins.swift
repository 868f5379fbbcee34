import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Argument access for builtins: positional, then by keyword.
struct JArgs {
    let name: String
    let args: [JValue]
    let kwargs: [(String, JValue)]
    let names: [String]

    init(_ name: String, _ args: [JValue], _ kwargs: [(String, JValue)], names: [String]) throws {
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.names = names
        if args.count > names.count { throw EvalError("\(name)() takes at most \(names.count) argument(s) (\(args.count) given)") }
        for (k, _) in kwargs where !names.contains(k) {
            throw EvalError("\(name)() got an unexpected keyword argument '\(k)'")
        }
    }

    subscript(_ key: String) -> JValue? {
        if let i = names.firstIndex(of: key), i < args.count { return args[i] }
        return kwargs.last(where: { $0.0 == key })?.1
    }

    func bool(_ key: String, _ def: Bool) -> Bool { self[key].map(\.truthy) ?? def }
    func int(_ key: String, _ def: Int) throws -> Int {
        guard let v = self[key], !v.isNone else { return def }
        guard let i = JinjaInterpreter.asInt(v) else { throw EvalError("\(name)(): \(key) must be an integer, not \(v.typeName)") }
        return i
    }
    func string(_ key: String) throws -> String? {
        guard let v = self[key], !v.isNone else { return nil }
        guard case .string(let s) = v else { throw EvalError("\(name)(): \(key) must be a string, not \(v.typeName)") }
        return s
    }
}

extension JinjaInterpreter {
    // MARK: globals

    func installGlobals() {
        root.vars["raise_exception"] = .function(JFunction("raise_exception") { args, _ in
            throw EvalError(args.first?.pyStr ?? "", .raised)
        })
        let now = self.now
        root.vars["strftime_now"] = .function(JFunction("strftime_now") { args, _ in
            guard case .string(let fmt)? = args.first else { throw EvalError("strftime_now() needs a format string") }
            return .string(try Self.strftime(fmt, now))
        })
        root.vars["namespace"] = .function(JFunction("namespace") { args, kwargs in
            var d = JDict()
            if let first = args.first {
                guard case .dict(let init0) = first else { throw EvalError("namespace() takes a dict or keyword arguments") }
                d = init0
            }
            for (k, v) in kwargs {
                if k.hasPrefix("_") { throw EvalError("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(k)'") }
                d[k] = v
            }
            return .namespace(JNamespace(d))
        })
        root.vars["dict"] = .function(JFunction("dict") { args, kwargs in
            var d = JDict()
            if let first = args.first {
                guard case .dict(let init0) = first else { throw EvalError("dict() takes a dict or keyword arguments", .unsupported) }
                d = init0
            }
            for (k, v) in kwargs { d[k] = v }
            return .dict(d)
        })
        root.vars["range"] = .function(JFunction("range") { [unowned self] args, _ in
            let ints = try args.map { v -> Int in
                guard let i = Self.asInt(v) else { throw EvalError("range() takes integers, not \(v.typeName)") }
                return i
            }
            var start = 0, stop = 0, step = 1
            switch ints.count {
            case 1: stop = ints[0]
            case 2: (start, stop) = (ints[0], ints[1])
            case 3: (start, stop, step) = (ints[0], ints[1], ints[2])
            default: throw EvalError("range() takes 1 to 3 arguments")
            }
            guard step != 0 else { throw EvalError("range() arg 3 must not be zero") }
            let count = step > 0 ? (stop > start ? (stop - start - 1) / step + 1 : 0) : (start > stop ? (start - stop - 1) / (-step) + 1 : 0)
            guard count <= 100_000 else { throw EvalError("range too big, maximum size for range is 100000") }
            self.steps += count
            if self.steps > self.limits.steps { throw EvalError("template did not finish within \(self.limits.steps) evaluation steps") }
            return .list((0..<count).map { .int(start + $0 * step) })
        })
        for name in ["lipsum", "cycler", "joiner"] {
            root.vars[name] = .function(JFunction(name) { _, _ in throw EvalError("the global \(name)()", .unsupported) })
        }
    }

    /// C strftime (what Python's datetime.strftime calls on Linux), local time.
    static func strftime(_ format: String, _ date: Date) throws -> String {
        var t = time_t(date.timeIntervalSince1970)
        var tmv = tm()
        localtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 512)
        guard format.utf8.count < 256 else { throw EvalError("strftime_now() format is too long") }
        let n = Glibc.strftime(&buf, buf.count, format, &tmv)
        if n == 0 && !format.isEmpty { return "" }
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: methods

    func bound(_ name: String, _ f: @escaping ([JValue], [(String, JValue)]) throws -> JValue) -> JValue {
        .function(JFunction(name, f))
    }

    func dictMethod(_ d: JDict, _ name: String) -> JValue? {
        switch name {
        case "get":
            return bound("get") { args, _ in
                guard let k = args.first else { throw EvalError("get expected at least 1 argument") }
                if case .string(let ks) = k, let v = d[ks] { return v }
                return args.count > 1 ? args[1] : .none
            }
        case "items": return bound("items") { _, _ in .list(d.pairs.map { .list([.string($0.0), $0.1]) }) }
        case "keys": return bound("keys") { _, _ in .list(d.keys.map { .string($0) }) }
        case "values": return bound("values") { _, _ in .list(d.values) }
        case "copy": return bound("copy") { _, _ in .dict(d) }
        default: return nil
        }
    }

    func listMethod(_ l: [JValue], _ name: String) -> JValue? {
        switch name {
        case "index":
            return bound("index") { [unowned self] args, _ in
                guard let x = args.first else { throw EvalError("index expected 1 argument") }
                guard let i = l.firstIndex(where: { self.equal($0, x) }) else { throw EvalError("\(x.pyRepr) is not in list") }
                return .int(i)
            }
        case "count":
            return bound("count") { [unowned self] args, _ in
                guard let x = args.first else { throw EvalError("count expected 1 argument") }
                return .int(l.filter { self.equal($0, x) }.count)
            }
        case "copy": return bound("copy") { _, _ in .list(l) }
        default: return nil
        }
    }

    func stringMethod(_ s: String, _ name: String) -> JValue? {
        let u = Array(s.unicodeScalars)
        func str(_ x: JValue?, _ what: String) throws -> [Unicode.Scalar]? {
            guard let x, !x.isNone else { return nil }
            guard case .string(let t) = x else { throw EvalError("\(what) arg must be None or str") }
            return Array(t.unicodeScalars)
        }
        switch name {
        case "strip", "lstrip", "rstrip":
            return bound(name) { args, _ in
                let chars = try str(args.first, name)
                return .string(PyStr.strip(u, chars, left: name != "rstrip", right: name != "lstrip"))
            }
        case "upper": return bound(name) { _, _ in .string(s.uppercased()) }
        case "lower": return bound(name) { _, _ in .string(s.lowercased()) }
        case "title": return bound(name) { _, _ in .string(PyStr.title(u)) }
        case "capitalize": return bound(name) { _, _ in .string(PyStr.capitalize(u)) }
        case "swapcase": return nil
        case "startswith", "endswith":
            return bound(name) { args, _ in
                guard let p = args.first else { throw EvalError("\(name) takes at least 1 argument") }
                var prefixes: [[Unicode.Scalar]] = []
                switch p {
                case .string(let t): prefixes = [Array(t.unicodeScalars)]
                case .list(let l):
                    for x in l {
                        guard case .string(let t) = x else { throw EvalError("tuple for \(name) must only contain str") }
                        prefixes.append(Array(t.unicodeScalars))
                    }
                default: throw EvalError("\(name) first arg must be str or a tuple of str, not \(p.typeName)")
                }
                if args.count > 1 { throw EvalError("\(name) with start/end", .unsupported) }
                return .bool(prefixes.contains { name == "startswith" ? u.starts(with: $0) : u.reversed().starts(with: $0.reversed()) })
            }
        case "split", "rsplit":
            return bound(name) { args, kwargs in
                let a = try JArgs(name, args, kwargs, names: ["sep", "maxsplit"])
                let sep = try str(a["sep"], name)
                let maxsplit = try a.int("maxsplit", -1)
                if let sep, sep.isEmpty { throw EvalError("empty separator") }
                let parts = PyStr.split(u, sep, maxsplit: maxsplit, fromRight: name == "rsplit")
                return .list(parts.map { .string($0) })
            }
        case "splitlines":
            return bound(name) { _, _ in .list(PyStr.splitlines(u).map { .string($0) }) }
        case "replace":
            return bound(name) { [unowned self] args, _ in
                guard args.count >= 2, case .string(let old) = args[0], case .string(let new) = args[1] else {
                    throw EvalError("replace() takes two strings")
                }
                let count = args.count > 2 ? (Self.asInt(args[2]) ?? -1) : -1
                return .string(try self.checkLength(PyStr.replace(u, Array(old.unicodeScalars), Array(new.unicodeScalars), count: count)))
            }
        case "find", "rfind", "index", "rindex", "count":
            return bound(name) { args, _ in
                guard case .string(let sub)? = args.first else { throw EvalError("\(name)() needs a string") }
                let su = Array(sub.unicodeScalars)
                if name == "count" { return .int(PyStr.count(u, su)) }
                let i = name.hasPrefix("r") ? PyStr.rfind(u, su) : PyStr.find(u, su, from: 0)
                if i < 0 && name.hasSuffix("index") { throw EvalError("substring not found") }
                return .int(i)
            }
        case "join":
            return bound(name) { [unowned self] args, _ in
                guard let x = args.first else { throw EvalError("join() takes exactly one argument") }
                let items = try self.iterate(x)
                var parts: [String] = []
                for (i, it) in items.enumerated() {
                    guard case .string(let t) = it else { throw EvalError("sequence item \(i): expected str instance, \(it.typeName) found") }
                    parts.append(t)
                }
                return .string(try self.checkLength(parts.joined(separator: s)))
            }
        case "format":
            return bound(name) { [unowned self] args, kwargs in .string(try self.checkLength(try PyStr.format(u, args, kwargs))) }
        case "isdigit", "isnumeric", "isdecimal":
            return bound(name) { _, _ in .bool(!u.isEmpty && u.allSatisfy { $0.properties.numericType != nil }) }
        case "isalpha": return bound(name) { _, _ in .bool(!u.isEmpty && u.allSatisfy { $0.properties.isAlphabetic }) }
        case "isalnum":
            return bound(name) { _, _ in .bool(!u.isEmpty && u.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil }) }
        case "isspace": return bound(name) { _, _ in .bool(!u.isEmpty && u.allSatisfy(JinjaLexer.isSpace)) }
        case "islower": return bound(name) { _, _ in .bool(PyStr.isLower(u)) }
        case "isupper": return bound(name) { _, _ in .bool(PyStr.isUpper(u)) }
        default: return nil
        }
    }

    // MARK: filters

    static let filterNames: Set<String> = [
        "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "forceescape",
        "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject",
        "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
        "tojson", "trim", "unique", "upper", "wordcount",
    ]
    /// jinja2 filters that exist but are not implemented here (refused by name).
    static let knownUnsupportedFilters: Set<String> = [
        "batch", "center", "filesizeformat", "groupby", "pprint", "random", "slice", "striptags", "truncate",
        "urlencode", "urlize", "wordwrap", "xmlattr",
    ]

    func applyFilter(_ name: String, _ v: JValue, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue {
        func a(_ names: [String]) throws -> JArgs { try JArgs(name, args, kwargs, names: names) }
        switch name {
        case "safe": return v
        case "string": return .string(v.pyStr)
        case "upper": return .string(v.pyStr.uppercased())
        case "lower": return .string(v.pyStr.lowercased())
        case "capitalize": return .string(PyStr.capitalize(Array(v.pyStr.unicodeScalars)))
        case "title": return .string(PyStr.jinjaTitle(Array(v.pyStr.unicodeScalars)))
        case "trim":
            let p = try a(["chars"])
            let chars = try p.string("chars").map { Array($0.unicodeScalars) }
            return .string(PyStr.strip(Array(v.pyStr.unicodeScalars), chars, left: true, right: true))
        case "length", "count": return .int(try length(v))
        case "wordcount":
            return .int(PyStr.split(Array(v.pyStr.unicodeScalars), nil, maxsplit: -1, fromRight: false).count)
        case "default", "d":
            let p = try a(["default_value", "boolean"])
            let def = p["default_value"] ?? .string("")
            if v.isUndefined || (p.bool("boolean", false) && !v.truthy) { return def }
            return v
        case "tojson":
            let p = try a(["ensure_ascii", "indent", "separators", "sort_keys"])
            var indent: String? = nil
            if let i = p["indent"], !i.isNone {
                switch i {
                case .int(let n): indent = String(repeating: " ", count: max(0, min(n, 1000)))
                case .string(let s): indent = s
                default: throw EvalError("tojson(): indent must be an integer or a string")
                }
            }
            var separators: (String, String)? = nil
            if let s = p["separators"], !s.isNone {
                guard case .list(let l) = s, l.count == 2, case .string(let x) = l[0], case .string(let y) = l[1] else {
                    throw EvalError("tojson(): separators must be a pair of strings")
                }
                separators = (x, y)
            }
            var out = ""
            try PyJSON.dump(v, into: &out, indent: indent, separators: separators, sortKeys: p.bool("sort_keys", false),
                            ensureASCII: p.bool("ensure_ascii", false), level: 0, limit: limits.stringLength)
            return .string(out)
        case "join":
            let p = try a(["d", "attribute"])
            var items = try iterate(v)
            if let attr = p["attribute"], !attr.isNone { items = try items.map { try attribute($0, attr) } }
            let sep = p["d"]?.pyStr ?? ""
            return .string(try checkLength(items.map(\.pyStr).joined(separator: sep)))
        case "list": return .list(try iterate(v))
        case "first":
            let items = try iterate(v)
            return items.first ?? .undefined("No first item, sequence was empty.")
        case "last":
            let items = try iterate(v)
            return items.last ?? .undefined("No last item, sequence was empty.")
        case "reverse":
            if case .string(let s) = v { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .list(try iterate(v).reversed())
        case "items":
            switch v {
            case .undefined: return .list([])
            case .dict(let d): return .list(d.pairs.map { .list([.string($0.0), $0.1]) })
            default: throw EvalError("Can only get item pairs from a mapping.")
            }
        case "dictsort":
            let p = try a(["case_sensitive", "by", "reverse"])
            guard case .dict(let d) = v else { throw EvalError("dictsort() needs a mapping, not \(v.typeName)") }
            let byValue = try p.string("by") == "value"
            let cs = p.bool("case_sensitive", false)
            var pairs = d.pairs
            var failure: Error?
            pairs.sort { x, y in
                let l = byValue ? x.1 : JValue.string(x.0), r = byValue ? y.1 : JValue.string(y.0)
                do { return try less(sortKey(l, cs), sortKey(r, cs), "<") } catch { failure = error; return false }
            }
            if let failure { throw failure }
            if p.bool("reverse", false) { pairs.reverse() }
            return .list(pairs.map { .list([.string($0.0), $0.1]) })
        case "sort":
            let p = try a(["reverse", "case_sensitive", "attribute"])
            var items = try iterate(v)
            let cs = p.bool("case_sensitive", false)
            let attr = p["attribute"]
            var failure: Error?
            let keyed = try items.map { x in (x, try sortKey(attr.map { a in try attribute(x, a) } ?? x, cs)) }
            let sorted = keyed.sorted { x, y in
                do { return try less(x.1, y.1, "<") } catch { failure = error; return false }
            }
            if let failure { throw failure }
            items = sorted.map(\.0)
            if p.bool("reverse", false) { items.reverse() }
            return .list(items)
        case "unique":
            let p = try a(["case_sensitive", "attribute"])
            let cs = p.bool("case_sensitive", false)
            var seen: [JValue] = []
            var out: [JValue] = []
            for x in try iterate(v) {
                let k = try sortKey(try p["attribute"].map { try attribute(x, $0) } ?? x, cs)
                if !seen.contains(where: { equal($0, k) }) {
                    seen.append(k)
                    out.append(x)
                }
            }
            return .list(out)
        case "min", "max":
            let p = try a(["case_sensitive", "attribute"])
            let cs = p.bool("case_sensitive", false)
            var best: (JValue, JValue)?
            for x in try iterate(v) {
                let k = try sortKey(try p["attribute"].map { try attribute(x, $0) } ?? x, cs)
                if let b = best {
                    if name == "min" ? try less(k, b.1, "<") : try less(b.1, k, "<") { best = (x, k) }
                } else {
                    best = (x, k)
                }
            }
            return best?.0 ?? .undefined("No aggregated item, sequence was empty.")
        case "sum":
            let p = try a(["attribute", "start"])
            var total = p["start"] ?? .int(0)
            for x in try iterate(v) {
                try tick()
                total = try binary("+", total, try p["attribute"].map { try attribute(x, $0) } ?? x)
            }
            return total
        case "abs":
            switch v {
            case .int(let i):
                guard i != Int.min else { throw EvalError("integer overflow", .unsupported) }
                return .int(abs(i))
            case .double(let d): return .double(abs(d))
            case .bool(let b): return .int(b ? 1 : 0)
            default: throw EvalError("bad operand type for abs(): '\(v.typeName)'")
            }
        case "int":
            let p = try a(["default", "base"])
            let def = p["default"] ?? .int(0)
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : def
            case .string(let s):
                let t = s.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "_", with: "")
                if let i = Int(t, radix: try p.int("base", 10)) { return .int(i) }
                if let d = Double(t), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return def
            default: return def
            }
        case "float":
            let p = try a(["default"])
            let def = p["default"] ?? .double(0)
            switch v {
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .double: return v
            case .string(let s):
                return Double(s.trimmingCharacters(in: .whitespacesAndNewlines)).map { .double($0) } ?? def
            default: return def
            }
        case "round":
            let p = try a(["precision", "method"])
            let precision = try p.int("precision", 0)
            let method = try p.string("method") ?? "common"
            guard let x = Self.asNumber(v) else { throw EvalError("round() needs a number, not \(v.typeName)") }
            if case .int = v, method == "common" { return v }
            guard abs(precision) <= 300 else { return .double(x) }
            let scale = pow(10.0, Double(precision))
            let rule: FloatingPointRoundingRule
            switch method {
            case "common": rule = .toNearestOrEven
            case "ceil": rule = .up
            case "floor": rule = .down
            default: throw EvalError("method must be 'common', 'ceil' or 'floor'")
            }
            return .double((x * scale).rounded(rule) / scale)
        case "replace":
            let p = try a(["old", "new", "count"])
            guard let old = p["old"], let new = p["new"] else { throw EvalError("replace() needs old and new") }
            let count = try p.int("count", -1)
            return .string(try checkLength(PyStr.replace(Array(v.pyStr.unicodeScalars), Array(old.pyStr.unicodeScalars),
                                                         Array(new.pyStr.unicodeScalars), count: count)))
        case "indent":
            let p = try a(["width", "first", "blank"])
            var indention = "    "
            if let w = p["width"] {
                switch w {
                case .string(let s): indention = s
                default:
                    guard let n = Self.asInt(w) else { throw EvalError("indent(): width must be an integer or a string") }
                    indention = String(repeating: " ", count: max(0, min(n, 1000)))
                }
            }
            let s = v.pyStr + "\n"
            let lines = PyStr.splitlines(Array(s.unicodeScalars))
            var rv: String
            if p.bool("blank", false) {
                rv = lines.joined(separator: "\n" + indention)
            } else {
                rv = lines.first ?? ""
                let rest = lines.dropFirst()
                if !rest.isEmpty { rv += "\n" + rest.map { $0.isEmpty ? $0 : indention + $0 }.joined(separator: "\n") }
            }
            if p.bool("first", false) { rv = indention + rv }
            return .string(try checkLength(rv))
        case "escape", "e", "forceescape":
            var out = ""
            for c in v.pyStr.unicodeScalars {
                switch c {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&#34;"
                case "'": out += "&#39;"
                default: out.unicodeScalars.append(c)
                }
            }
            return .string(try checkLength(out))
        case "format":
            if !kwargs.isEmpty { throw EvalError("format filter with keyword arguments", .unsupported) }
            return .string(try checkLength(try PyStr.percentFormat(v.pyStr, args.count == 1 ? args[0] : .list(args))))
        case "attr":
            guard case .string(let n)? = args.first else { throw EvalError("attr() needs a name") }
            return try getAttr(v, n)
        case "map":
            let items = try iterate(v)
            if let attr = kwargs.first(where: { $0.0 == "attribute" })?.1 {
                let def = kwargs.first(where: { $0.0 == "default" })?.1
                return .list(try items.map { x in
                    let r = try attribute(x, attr)
                    if r.isUndefined, let def { return def }
                    return r
                })
            }
            guard case .string(let f)? = args.first else { throw EvalError("map() needs a filter name or attribute=") }
            try checkFilterName(f)
            return .list(try items.map { try applyFilter(f, $0, Array(args.dropFirst()), kwargs) })
        case "select", "reject":
            let items = try iterate(v)
            let keep = name == "select"
            return .list(try items.filter { x in
                let r: Bool
                if case .string(let t)? = args.first {
                    try checkTestName(t)
                    r = try applyTest(t, x, Array(args.dropFirst()))
                } else {
                    r = x.truthy
                }
                return r == keep
            })
        case "selectattr", "rejectattr":
            let items = try iterate(v)
            guard let attr = args.first else { throw EvalError("\(name)() needs an attribute name") }
            let keep = name == "selectattr"
            return .list(try items.filter { x in
                let value = try attribute(x, attr)
                let r: Bool
                if args.count > 1 {
                    guard case .string(let t) = args[1] else { throw EvalError("\(name)(): the test must be named by a string") }
                    try checkTestName(t)
                    r = try applyTest(t, value, Array(args.dropFirst(2)))
                } else {
                    r = value.truthy
                }
                return r == keep
            })
        default:
            if Self.knownUnsupportedFilters.contains(name) { throw EvalError("filter '\(name)'", .unsupported) }
            throw EvalError("no filter named '\(name)'", .syntax)
        }
    }

    func checkFilterName(_ f: String) throws {
        if !Self.filterNames.contains(f) {
            throw EvalError(Self.knownUnsupportedFilters.contains(f) ? "filter '\(f)'" : "no filter named '\(f)'",
                            Self.knownUnsupportedFilters.contains(f) ? .unsupported : .syntax)
        }
    }

    func checkTestName(_ t: String) throws {
        if !Self.testNames.contains(t) { throw EvalError("no test named '\(t)'", .syntax) }
    }

    /// `item.a.b` as selectattr/map/sort read it (item lookup first, integers for digit parts).
    func attribute(_ x: JValue, _ attr: JValue) throws -> JValue {
        if let i = Self.asInt(attr) { return try getItem(x, .int(i)) }
        guard case .string(let path) = attr else { throw EvalError("attribute must be a string") }
        var cur = x
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            if cur.isUndefined { return cur }
            if let i = Int(part) { cur = try getItem(cur, .int(i)) } else { cur = try getItem(cur, .string(String(part))) }
        }
        return cur
    }

    func sortKey(_ v: JValue, _ caseSensitive: Bool) throws -> JValue {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    // MARK: tests

    static let testNames: Set<String> = [
        "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string", "sequence",
        "iterable", "mapping", "callable", "sameas", "escaped", "in", "lower", "upper", "eq", "equalto", "==", "ne", "!=",
        "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "odd", "even", "divisibleby",
    ]

    func applyTest(_ name: String, _ v: JValue, _ args: [JValue]) throws -> Bool {
        func arg() throws -> JValue {
            guard let a = args.first else { throw EvalError("test '\(name)' needs an argument") }
            return a
        }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": return v.isNone
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "number":
            switch v {
            case .int, .double, .bool: return true
            default: return false
            }
        case "string": return v.isString
        case "mapping": return v.isDict
        case "sequence":
            switch v {
            case .string, .list, .dict, .undefined: return true
            default: return false
            }
        case "iterable":
            switch v {
            case .string, .list, .dict, .undefined: return true
            default: return false
            }
        case "callable":
            // jinja2's Undefined defines __call__ (to fail), so callable() is true for it
            switch v {
            case .function, .undefined: return true
            default: return false
            }
        case "escaped": return false
        case "sameas":
            let o = try arg()
            switch (v, o) {
            case (.none, .none): return true
            case (.bool(let x), .bool(let y)): return x == y
            case (.namespace(let x), .namespace(let y)): return x === y
            case (.function(let x), .function(let y)): return x === y
            case (.int(let x), .int(let y)): return x == y && (-5...256).contains(x)
            default: return false
            }
        case "in": return try contains(try arg(), v)
        case "lower": return PyStr.isLower(Array(v.pyStr.unicodeScalars))
        case "upper": return PyStr.isUpper(Array(v.pyStr.unicodeScalars))
        case "eq", "equalto", "==": return equal(v, try arg())
        case "ne", "!=": return !equal(v, try arg())
        case "lt", "lessthan", "<": return try less(v, try arg(), "<")
        case "le", "<=": return try !less(try arg(), v, "<=")
        case "gt", "greaterthan", ">": return try less(try arg(), v, ">")
        case "ge", ">=": return try !less(v, try arg(), ">=")
        case "odd", "even":
            guard let i = Self.asInt(v) else { throw EvalError("test '\(name)' needs an integer, not \(v.typeName)") }
            return (i & 1 == 1) == (name == "odd")
        case "divisibleby":
            guard let i = Self.asInt(v), let d = Self.asInt(try arg()) else { throw EvalError("divisibleby needs integers") }
            guard d != 0 else { throw EvalError("integer division or modulo by zero") }
            return i % d == 0
        default:
            throw EvalError("no test named '\(name)'", .syntax)
        }
    }
}

// MARK: - Python str helpers (on Unicode scalars, as Python indexes code points)

enum PyStr {
    static func s(_ u: some Sequence<Unicode.Scalar>) -> String { String(String.UnicodeScalarView(u)) }

    static func strip(_ u: [Unicode.Scalar], _ chars: [Unicode.Scalar]?, left: Bool, right: Bool) -> String {
        let drop: (Unicode.Scalar) -> Bool = chars.map { set in { set.contains($0) } } ?? JinjaLexer.isSpace
        var a = 0, b = u.count
        if left { while a < b && drop(u[a]) { a += 1 } }
        if right { while b > a && drop(u[b - 1]) { b -= 1 } }
        return s(u[a..<b])
    }

    static func find(_ u: [Unicode.Scalar], _ sub: [Unicode.Scalar], from: Int) -> Int {
        if sub.isEmpty { return from <= u.count ? from : -1 }
        guard sub.count <= u.count else { return -1 }
        var i = from
        while i + sub.count <= u.count {
            if u[i] == sub[0] && u[i..<i + sub.count].elementsEqual(sub) { return i }
            i += 1
        }
        return -1
    }

    static func rfind(_ u: [Unicode.Scalar], _ sub: [Unicode.Scalar]) -> Int {
        guard sub.count <= u.count else { return -1 }
        var i = u.count - sub.count
        while i >= 0 {
            if u[i..<i + sub.count].elementsEqual(sub) { return i }
            i -= 1
        }
        return -1
    }

    static func count(_ u: [Unicode.Scalar], _ sub: [Unicode.Scalar]) -> Int {
        if sub.isEmpty { return u.count + 1 }
        var n = 0, i = 0
        while true {
            let j = find(u, sub, from: i)
            if j < 0 { return n }
            n += 1
            i = j + sub.count
        }
    }

    static func replace(_ u: [Unicode.Scalar], _ old: [Unicode.Scalar], _ new: [Unicode.Scalar], count: Int) -> String {
        var out = String.UnicodeScalarView()
        var done = 0
        if old.isEmpty {
            for (k, c) in u.enumerated() {
                if count < 0 || done < count { out.append(contentsOf: new); done += 1 }
                out.append(c)
                _ = k
            }
            if count < 0 || done < count { out.append(contentsOf: new) }
            return String(out)
        }
        var i = 0
        while i < u.count {
            if count < 0 || done < count, u[i] == old[0], i + old.count <= u.count, u[i..<i + old.count].elementsEqual(old) {
                out.append(contentsOf: new)
                i += old.count
                done += 1
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(out)
    }

    static func split(_ u: [Unicode.Scalar], _ sep: [Unicode.Scalar]?, maxsplit: Int, fromRight: Bool) -> [String] {
        if fromRight {
            let parts = split(Array(u.reversed()), sep.map { Array($0.reversed()) }, maxsplit: maxsplit, fromRight: false)
            return parts.reversed().map { s($0.unicodeScalars.reversed()) }
        }
        var out: [String] = []
        if let sep {
            var i = 0, start = 0
            while i + sep.count <= u.count {
                if maxsplit >= 0 && out.count >= maxsplit { break }
                if u[i..<i + sep.count].elementsEqual(sep) {
                    out.append(s(u[start..<i]))
                    i += sep.count
                    start = i
                } else {
                    i += 1
                }
            }
            out.append(s(u[start...]))
            return out
        }
        var i = 0
        while i < u.count {
            while i < u.count && JinjaLexer.isSpace(u[i]) { i += 1 }
            if i >= u.count { break }
            if maxsplit >= 0 && out.count >= maxsplit {
                var e = u.count
                while e > i && JinjaLexer.isSpace(u[e - 1]) { e -= 1 }
                out.append(s(u[i..<e]))
                return out
            }
            let st = i
            while i < u.count && !JinjaLexer.isSpace(u[i]) { i += 1 }
            out.append(s(u[st..<i]))
        }
        return out
    }

    static func isLineBreak(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029: return true
        default: return false
        }
    }

    static func splitlines(_ u: [Unicode.Scalar]) -> [String] {
        var out: [String] = []
        var i = 0, start = 0
        while i < u.count {
            if isLineBreak(u[i]) {
                out.append(s(u[start..<i]))
                if u[i] == "\r", i + 1 < u.count, u[i + 1] == "\n" { i += 1 }
                i += 1
                start = i
            } else {
                i += 1
            }
        }
        if start < u.count { out.append(s(u[start...])) }
        return out
    }

    static func isCased(_ c: Unicode.Scalar) -> Bool { c.properties.isLowercase || c.properties.isUppercase || c.properties.generalCategory == .titlecaseLetter }

    static func isLower(_ u: [Unicode.Scalar]) -> Bool {
        var cased = false
        for c in u {
            if c.properties.isUppercase || c.properties.generalCategory == .titlecaseLetter { return false }
            if c.properties.isLowercase { cased = true }
        }
        return cased
    }

    static func isUpper(_ u: [Unicode.Scalar]) -> Bool {
        var cased = false
        for c in u {
            if c.properties.isLowercase || c.properties.generalCategory == .titlecaseLetter { return false }
            if c.properties.isUppercase { cased = true }
        }
        return cased
    }

    static func capitalize(_ u: [Unicode.Scalar]) -> String {
        guard let f = u.first else { return "" }
        return s(f.properties.titlecaseMapping.unicodeScalars) + s(u.dropFirst()).lowercased()
    }

    /// Python's str.title(): a cased letter after an uncased character starts a word.
    static func title(_ u: [Unicode.Scalar]) -> String {
        var out = ""
        var prevCased = false
        for c in u {
            if isCased(c) {
                out += prevCased ? c.properties.lowercaseMapping : c.properties.titlecaseMapping
                prevCased = true
            } else {
                out.unicodeScalars.append(c)
                prevCased = false
            }
        }
        return out
    }

    /// jinja2's title filter: words start after whitespace, '-', '(', '{', '[' or '<'.
    static func jinjaTitle(_ u: [Unicode.Scalar]) -> String {
        var out = ""
        var atStart = true
        for c in u {
            let boundary = JinjaLexer.isSpace(c) || c == "-" || c == "(" || c == "{" || c == "[" || c == "<"
            if boundary {
                out.unicodeScalars.append(c)
                atStart = true
            } else if atStart {
                out += c.properties.uppercaseMapping
                atStart = false
            } else {
                out += c.properties.lowercaseMapping
            }
        }
        return out
    }

    /// str.format with `{}`, `{0}` and `{name}` fields (no format specs or conversions).
    static func format(_ u: [Unicode.Scalar], _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> String {
        var out = ""
        var i = 0
        var auto = 0
        while i < u.count {
            let c = u[i]
            if c == "{" {
                if i + 1 < u.count, u[i + 1] == "{" { out += "{"; i += 2; continue }
                var j = i + 1
                while j < u.count && u[j] != "}" { j += 1 }
                guard j < u.count else { throw EvalError("Single '{' encountered in format string") }
                let field = s(u[(i + 1)..<j])
                if field.contains(":") || field.contains("!") || field.contains("[") || field.contains(".") {
                    throw EvalError("str.format field {\(field)} (format specs, conversions, indexing)", .unsupported)
                }
                let v: JValue
                if field.isEmpty {
                    guard auto < args.count else { throw EvalError("Replacement index \(auto) out of range for positional args tuple") }
                    v = args[auto]
                    auto += 1
                } else if let n = Int(field) {
                    guard n >= 0 && n < args.count else { throw EvalError("Replacement index \(n) out of range for positional args tuple") }
                    v = args[n]
                } else {
                    guard let kv = kwargs.last(where: { $0.0 == field }) else { throw EvalError("KeyError: '\(field)'") }
                    v = kv.1
                }
                out += v.pyStr
                i = j + 1
            } else if c == "}" {
                if i + 1 < u.count, u[i + 1] == "}" { out += "}"; i += 2; continue }
                throw EvalError("Single '}' encountered in format string")
            } else {
                out.unicodeScalars.append(c)
                i += 1
            }
        }
        return out
    }

    /// printf-style `%` formatting with %s, %r, %d, %i and %%.
    static func percentFormat(_ fmt: String, _ value: JValue) throws -> String {
        let args: [JValue]
        if case .list(let l) = value { args = l } else { args = [value] }
        let u = Array(fmt.unicodeScalars)
        var out = ""
        var i = 0, k = 0
        while i < u.count {
            if u[i] != "%" { out.unicodeScalars.append(u[i]); i += 1; continue }
            guard i + 1 < u.count else { throw EvalError("incomplete format") }
            let spec = u[i + 1]
            i += 2
            if spec == "%" { out += "%"; continue }
            guard k < args.count else { throw EvalError("not enough arguments for format string") }
            let a = args[k]
            k += 1
            switch spec {
            case "s": out += a.pyStr
            case "r": out += a.pyRepr
            case "d", "i":
                guard let n = JinjaInterpreter.asNumber(a) else { throw EvalError("%d format: a real number is required, not \(a.typeName)") }
                if let iv = JinjaInterpreter.asInt(a) { out += String(iv) } else if n.isFinite, abs(n) < 9.2e18 { out += String(Int(n)) } else { throw EvalError("cannot convert float to integer") }
            default: throw EvalError("%-format '%\(spec)'", .unsupported)
            }
        }
        if k < args.count, case .list = value { throw EvalError("not all arguments converted during string formatting") }
        return out
    }
}

// MARK: - json.dumps as transformers' tojson calls it

enum PyJSON {
    static func dump(_ v: JValue, into out: inout String, indent: String?, separators: (String, String)?, sortKeys: Bool,
                     ensureASCII: Bool, level: Int, limit: Int) throws {
        if out.utf8.count > limit { throw EvalError("tojson output grew beyond \(limit) bytes") }
        guard level < 600 else { throw EvalError("tojson: value nested too deeply") }
        let (itemSep, keySep) = separators ?? (indent == nil ? (", ", ": ") : (",", ": "))
        switch v {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : pyFloatRepr(d)
        case .string(let s): string(s, into: &out, ensureASCII: ensureASCII)
        case .list(let l):
            if l.isEmpty { out += "[]"; return }
            out += "["
            let nl = indent.map { "\n" + String(repeating: $0, count: level + 1) }
            if let nl { out += nl }
            for (k, x) in l.enumerated() {
                if k > 0 { out += itemSep + (nl ?? "") }
                try dump(x, into: &out, indent: indent, separators: separators, sortKeys: sortKeys, ensureASCII: ensureASCII,
                         level: level + 1, limit: limit)
            }
            if let indent { out += "\n" + String(repeating: indent, count: level) }
            out += "]"
        case .dict(let d):
            if d.count == 0 { out += "{}"; return }
            out += "{"
            let nl = indent.map { "\n" + String(repeating: $0, count: level + 1) }
            if let nl { out += nl }
            var pairs = d.pairs
            if sortKeys { pairs.sort { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) } }
            for (k, (key, x)) in pairs.enumerated() {
                if k > 0 { out += itemSep + (nl ?? "") }
                string(key, into: &out, ensureASCII: ensureASCII)
                out += keySep
                try dump(x, into: &out, indent: indent, separators: separators, sortKeys: sortKeys, ensureASCII: ensureASCII,
                         level: level + 1, limit: limit)
            }
            if let indent { out += "\n" + String(repeating: indent, count: level) }
            out += "}"
        case .undefined, .namespace, .function:
            throw EvalError("Object of type \(v.typeName) is not JSON serializable")
        }
    }

    static func string(_ s: String, into out: inout String, ensureASCII: Bool) {
        out += "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 || (ensureASCII && c.value > 0x7E) {
                    if c.value > 0xFFFF {
                        let v = c.value - 0x10000
                        out += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                    } else {
                        out += String(format: "\\u%04x", c.value)
                    }
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        out += "\""
    }
}
