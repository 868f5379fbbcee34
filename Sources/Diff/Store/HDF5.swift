import CHDF5
import CLibDeflate
import Foundation

// A small, typed wrapper over libhdf5 (1.10) for the files ila writes and reads: groups,
// attributes (strings, 64-bit ints, doubles and 1-D arrays of them) and float datasets.
// Every failure is an `HDF5Error` naming the file and the object, with HDF5's own error text;
// nothing here traps on a malformed file.

// MARK: - Errors

/// A failed HDF5 operation: `<file>: <object>: <problem> (HDF5: <library message>)`.
public struct HDF5Error: Error, CustomStringConvertible, Sendable {
    /// The file, as given by the caller.
    public let file: String
    /// The object's path inside the file (`/layers/model.layers.0.mlp.up_proj`); "/" for the root.
    public let object: String
    /// What went wrong, in our words (`attribute 'shape' is missing`).
    public let problem: String
    /// HDF5's error stack for the failed call, outermost then innermost cause; may be empty.
    public let library: String

    public init(file: String, object: String, problem: String, library: String = "") {
        self.file = file
        self.object = object
        self.problem = problem
        self.library = library
    }

    /// `problem` plus HDF5's message, without file and object (for callers that name those themselves).
    public var detail: String { library.isEmpty ? problem : "\(problem) (HDF5: \(library))" }

    public var description: String {
        let where_ = object.isEmpty || object == "/" ? "" : "\(object): "
        return "\(file): \(where_)\(detail)"
    }
}

// MARK: - Library state

enum HDF5Library {
    /// Serialises every call: the library's error stack and id tables are global state, and a
    /// non-threadsafe build of libhdf5 must never be entered from two threads at once.
    static let lock = NSRecursiveLock()

    /// Turns HDF5's automatic printing of error stacks to stderr off, once per process; errors are
    /// collected with `stackText()` and reported through `HDF5Error` instead.
    private static let quiet: Void = {
        _ = H5Eset_auto2(ila_H5E_DEFAULT(), nil, nil)
    }()

    static func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        _ = quiet
        return try body()
    }

    /// The current thread's HDF5 error stack as one line: the API call's description, then the
    /// innermost (most specific) cause. Must be called right after the failing call, before any
    /// other HDF5 call clears the stack.
    static func stackText() -> String {
        var lines: [String] = []
        withUnsafeMutablePointer(to: &lines) { ptr in
            _ = H5Ewalk2(ila_H5E_DEFAULT(), H5E_WALK_DOWNWARD, { _, err, client in
                guard let err, let client else { return 0 }
                let list = client.assumingMemoryBound(to: [String].self)
                if let desc = err.pointee.desc, desc.pointee != 0 {
                    list.pointee.append(String(cString: desc))
                } else {
                    var buffer = [CChar](repeating: 0, count: 256)
                    if H5Eget_msg(err.pointee.min_num, nil, &buffer, buffer.count) > 0 {
                        list.pointee.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) },
                                                   as: UTF8.self))
                    }
                }
                return 0
            }, UnsafeMutableRawPointer(ptr))
        }
        _ = H5Eclear2(ila_H5E_DEFAULT())
        guard let first = lines.first else { return "" }
        guard let last = lines.last, lines.count > 1, last != first else { return first }
        return "\(first): \(last)"
    }

    /// An IEEE 754 binary16 type (HDF5 1.10 has none built in): sign bit 15, exponent bits 10–14
    /// with bias 15, mantissa bits 0–9, little-endian. h5py reads it as numpy float16.
    static func makeHalfType() -> hid_t {
        let t = H5Tcopy(ila_H5T_IEEE_F32LE())
        guard t >= 0 else { return t }
        // Order matters: fields must fit the current size, so shrink after moving them down.
        guard H5Tset_fields(t, 15, 10, 5, 0, 10) >= 0, H5Tset_precision(t, 16) >= 0,
              H5Tset_size(t, 2) >= 0, H5Tset_ebias(t, 15) >= 0 else {
            _ = H5Tclose(t)
            return -1
        }
        return t
    }

    /// True when `type` is exactly little-endian IEEE binary16 (ours or h5py's), which can be read
    /// as raw bits and widened in Swift, far faster than HDF5's generic soft float conversion.
    static func isHalf(_ type: hid_t) -> Bool {
        guard H5Tget_class(type) == H5T_FLOAT, H5Tget_size(type) == 2, H5Tget_order(type) == H5T_ORDER_LE,
              H5Tget_ebias(type) == 15 else { return false }
        var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
        guard H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0 else { return false }
        return (spos, epos, esize, mpos, msize) == (15, 10, 5, 0, 10)
    }

    /// A readable name for an HDF5 datatype: float16/32/64, int8…64, uint…, string, or its class.
    static func describe(_ type: hid_t) -> String {
        let size = H5Tget_size(type)
        switch H5Tget_class(type) {
        case H5T_FLOAT: return "float\(size * 8)"
        case H5T_INTEGER: return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + "\(size * 8)"
        case H5T_STRING: return "string"
        case H5T_COMPOUND: return "compound"
        case H5T_ENUM: return "enum"
        case H5T_ARRAY: return "array"
        case H5T_VLEN: return "variable-length sequence"
        case H5T_OPAQUE: return "opaque"
        case H5T_REFERENCE: return "reference"
        case H5T_BITFIELD: return "bitfield"
        default: return "unknown type"
        }
    }

    /// Element counts above this are refused on read: a corrupt or hostile header must not make us
    /// try to allocate absurd buffers (2³² floats = 16 GiB, far above any single linear layer).
    static let maxElements = 1 << 32

    /// The largest expansion a compressed dataset may claim: deflate cannot exceed about 1032:1,
    /// so a dataset declaring more is corrupt (and must not make us allocate its declared size).
    static let maxCompressionRatio = 1100
}

/// Element storage for float datasets.
public enum HDF5FloatStorage: Sendable {
    case float32
    /// IEEE binary16; values are rounded to nearest even in Swift before writing.
    case float16
}

/// What a group member is.
public enum HDF5MemberKind: Sendable, Equatable {
    case group, dataset, other
}

// MARK: - File

/// An open HDF5 file. Closing happens in `close()` or deinit; objects opened from it keep it alive.
public final class HDF5File {
    /// The path given when opening or creating.
    public let path: String
    let id: hid_t
    private var isOpen = true

    private init(path: String, id: hid_t) {
        self.path = path
        self.id = id
    }

    /// Creates (or truncates) a file for writing. Closing it flushes and closes everything opened
    /// from it, so the file is complete on disk once `close()` returns.
    public static func create(path: String) throws -> HDF5File {
        try HDF5Library.locked {
            let fapl = H5Pcreate(ila_H5P_FILE_ACCESS())
            let fcpl = H5Pcreate(ila_H5P_FILE_CREATE())
            defer { _ = H5Pclose(fapl); _ = H5Pclose(fcpl) }
            _ = H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG)
            // Locking fails on some network filesystems; it is a guard, not a requirement.
            _ = H5Pset_file_locking(fapl, true, true)
            // Track creation order so members list in the order they were written.
            _ = H5Pset_link_creation_order(fcpl, UInt32(H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED))
            let id = H5Fcreate(path, ila_H5F_ACC_TRUNC(), fcpl, fapl)
            guard id >= 0 else {
                throw HDF5Error(file: path, object: "", problem: "cannot create HDF5 file",
                                library: HDF5Library.stackText())
            }
            return HDF5File(path: path, id: id)
        }
    }

    /// Opens an existing file read-only; a missing file or a file that is not HDF5 gets its own message.
    ///
    /// Unless `probed` (the caller ran `HDF5Probe.check` itself), the file's structure is first
    /// walked in a forked child (HDF5Probe.swift), so that a corrupt container libhdf5 would crash
    /// or hang on is refused with an error instead.
    public static func openReadOnly(path: String, probed: Bool = false) throws -> HDF5File {
        try HDF5Library.locked {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw HDF5Error(file: path, object: "", problem: "no such file")
            }
            guard !isDir.boolValue else { throw HDF5Error(file: path, object: "", problem: "is a directory") }
            let isHDF5 = H5Fis_hdf5(path)
            if isHDF5 == 0 { throw HDF5Error(file: path, object: "", problem: "not an HDF5 file") }
            if isHDF5 < 0 {
                throw HDF5Error(file: path, object: "", problem: "cannot read file", library: HDF5Library.stackText())
            }
        }
        if !probed { try HDF5Probe.check(path: path) }
        return try HDF5Library.locked {
            let fapl = H5Pcreate(ila_H5P_FILE_ACCESS())
            defer { _ = H5Pclose(fapl) }
            _ = H5Pset_file_locking(fapl, true, true)
            let id = H5Fopen(path, ila_H5F_ACC_RDONLY(), fapl)
            guard id >= 0 else {
                throw HDF5Error(file: path, object: "", problem: "cannot open HDF5 file",
                                library: HDF5Library.stackText())
            }
            return HDF5File(path: path, id: id)
        }
    }

    /// The root group "/".
    public func root() throws -> HDF5Group {
        try HDF5Library.locked {
            guard isOpen else { throw HDF5Error(file: path, object: "/", problem: "file is closed") }
            let gid = H5Gopen2(id, "/", ila_H5P_DEFAULT())
            guard gid >= 0 else {
                throw HDF5Error(file: path, object: "/", problem: "cannot open root group",
                                library: HDF5Library.stackText())
            }
            return HDF5Group(file: self, id: gid, path: "/")
        }
    }

    /// Flushes and closes the file. A failure here (e.g. disk full) means the file is incomplete.
    public func close() throws {
        try HDF5Library.locked {
            guard isOpen else { return }
            isOpen = false
            if H5Fclose(id) < 0 {
                throw HDF5Error(file: path, object: "", problem: "cannot close file", library: HDF5Library.stackText())
            }
        }
    }

    deinit {
        if isOpen { HDF5Library.locked { _ = H5Fclose(id) } }
    }
}

// MARK: - Objects with attributes

/// A group or dataset: owns an HDF5 object id, carries attributes. Not subclassable outside this module.
public class HDF5Object {
    /// Keeps the file open (and its name at hand for errors) while this object lives.
    public let file: HDF5File
    let id: hid_t
    /// Absolute path inside the file, e.g. `/layers/model.layers.0.mlp.up_proj`.
    public let path: String

    init(file: HDF5File, id: hid_t, path: String) {
        self.file = file
        self.id = id
        self.path = path
    }

    deinit {
        // H5Oclose closes groups and datasets alike; after a STRONG file close the id is already
        // gone and this fails quietly.
        HDF5Library.locked { _ = H5Oclose(id) }
    }

    func error(_ problem: String, library: Bool = true) -> HDF5Error {
        HDF5Error(file: file.path, object: path, problem: problem, library: library ? HDF5Library.stackText() : "")
    }

    func childPath(_ name: String) -> String { path == "/" ? "/" + name : path + "/" + name }

    // MARK: Writing attributes

    /// A scalar string attribute, UTF-8. Variable-length by default (h5py reads it as `str`);
    /// `fixedLength` stores it null-padded at its byte length (h5py reads that as `bytes`).
    public func setAttribute(_ name: String, _ value: String, fixedLength: Bool = false) throws {
        try HDF5Library.locked {
            let type = H5Tcopy(ila_H5T_C_S1())
            defer { _ = H5Tclose(type) }
            _ = H5Tset_cset(type, H5T_CSET_UTF8)
            if fixedLength {
                let bytes = Array(value.utf8)
                _ = H5Tset_size(type, max(bytes.count, 1))
                _ = H5Tset_strpad(type, H5T_STR_NULLPAD)
                let padded: [UInt8] = bytes.isEmpty ? [0] : bytes
                try padded.withUnsafeBytes { try writeAttribute(name, fileType: type, memType: type, dims: nil, $0.baseAddress) }
            } else {
                _ = H5Tset_size(type, ila_H5T_VARIABLE())
                try value.withCString { cstr in
                    var ptr: UnsafePointer<CChar>? = cstr
                    try withUnsafeBytes(of: &ptr) { try writeAttribute(name, fileType: type, memType: type, dims: nil, $0.baseAddress) }
                }
            }
        }
    }

    /// A 1-D array of variable-length UTF-8 strings (h5py: numpy object array of `str`).
    public func setAttribute(_ name: String, _ values: [String]) throws {
        try HDF5Library.locked {
            let type = H5Tcopy(ila_H5T_C_S1())
            defer { _ = H5Tclose(type) }
            _ = H5Tset_cset(type, H5T_CSET_UTF8)
            _ = H5Tset_size(type, ila_H5T_VARIABLE())
            // strdup'd copies: C strings that stay valid for the whole write.
            let cstrs: [UnsafeMutablePointer<CChar>?] = values.map { strdup($0) }
            defer { cstrs.forEach { free($0) } }
            try cstrs.withUnsafeBytes { try writeAttribute(name, fileType: type, memType: type, dims: [values.count], $0.baseAddress) }
        }
    }

    /// A scalar 64-bit signed integer attribute (h5py: numpy.int64).
    public func setAttribute(_ name: String, _ value: Int64) throws {
        var v = value
        try withUnsafeBytes(of: &v) {
            try writeAttribute(name, fileType: ila_H5T_STD_I64LE(), memType: ila_H5T_NATIVE_INT64(), dims: nil, $0.baseAddress)
        }
    }

    public func setAttribute(_ name: String, _ value: Int) throws { try setAttribute(name, Int64(value)) }

    /// A scalar double attribute (h5py: numpy.float64).
    public func setAttribute(_ name: String, _ value: Double) throws {
        var v = value
        try withUnsafeBytes(of: &v) {
            try writeAttribute(name, fileType: ila_H5T_IEEE_F64LE(), memType: ila_H5T_NATIVE_DOUBLE(), dims: nil, $0.baseAddress)
        }
    }

    /// A 1-D int64 array attribute.
    public func setAttribute(_ name: String, _ values: [Int64]) throws {
        try values.withUnsafeBytes {
            try writeAttribute(name, fileType: ila_H5T_STD_I64LE(), memType: ila_H5T_NATIVE_INT64(), dims: [values.count], $0.baseAddress)
        }
    }

    public func setAttribute(_ name: String, _ values: [Int]) throws { try setAttribute(name, values.map { Int64($0) }) }

    /// A 1-D float64 array attribute.
    public func setAttribute(_ name: String, _ values: [Double]) throws {
        try values.withUnsafeBytes {
            try writeAttribute(name, fileType: ila_H5T_IEEE_F64LE(), memType: ila_H5T_NATIVE_DOUBLE(), dims: [values.count], $0.baseAddress)
        }
    }

    /// Writes one attribute, replacing an existing one of the same name. `dims` nil = scalar.
    private func writeAttribute(_ name: String, fileType: hid_t, memType: hid_t, dims: [Int]?,
                                _ data: UnsafeRawPointer?) throws {
        try HDF5Library.locked {
            guard !name.isEmpty else { throw error("empty attribute name", library: false) }
            let space: hid_t
            if let dims {
                var hdims = dims.map { hsize_t($0) }
                space = H5Screate_simple(Int32(hdims.count), &hdims, nil)
            } else {
                space = H5Screate(H5S_SCALAR)
            }
            guard space >= 0 else { throw error("cannot create dataspace for attribute '\(name)'") }
            defer { _ = H5Sclose(space) }
            if H5Aexists(id, name) > 0, H5Adelete(id, name) < 0 {
                throw error("cannot replace attribute '\(name)'")
            }
            let attr = H5Acreate2(id, name, fileType, space, ila_H5P_DEFAULT(), ila_H5P_DEFAULT())
            guard attr >= 0 else { throw error("cannot create attribute '\(name)'") }
            defer { _ = H5Aclose(attr) }
            // An empty array has nothing to write; HDF5 rejects a null buffer even then.
            if let data, dims.map({ $0.reduce(1, *) }) ?? 1 > 0 {
                guard H5Awrite(attr, memType, data) >= 0 else { throw error("cannot write attribute '\(name)'") }
            }
        }
    }

    // MARK: Reading attributes

    /// Whether an attribute of this name exists.
    public func hasAttribute(_ name: String) throws -> Bool {
        try HDF5Library.locked {
            let r = H5Aexists(id, name)
            guard r >= 0 else { throw error("cannot look up attribute '\(name)'") }
            return r > 0
        }
    }

    /// Names of all attributes, in name order.
    public func attributeNames() throws -> [String] {
        try HDF5Library.locked {
            var names: [String] = []
            var index: hsize_t = 0
            let status = withUnsafeMutablePointer(to: &names) { ptr in
                H5Aiterate2(id, H5_INDEX_NAME, H5_ITER_INC, &index, { _, name, _, client in
                    guard let name, let client else { return 0 }
                    client.assumingMemoryBound(to: [String].self).pointee.append(String(cString: name))
                    return 0
                }, UnsafeMutableRawPointer(ptr))
            }
            guard status >= 0 else { throw error("cannot list attributes") }
            return names
        }
    }

    /// A scalar string attribute, fixed- or variable-length (padding stripped).
    public func stringAttribute(_ name: String) throws -> String {
        let all = try readStrings(name, scalar: true)
        return all[0]
    }

    /// A 1-D string array attribute (a scalar string reads as one element).
    public func stringArrayAttribute(_ name: String) throws -> [String] {
        try readStrings(name, scalar: false)
    }

    /// A scalar integer attribute (any integer storage width).
    public func intAttribute(_ name: String) throws -> Int64 {
        let v: [Int64] = try readNumbers(name, scalar: true, integer: true, memType: ila_H5T_NATIVE_INT64())
        return v[0]
    }

    /// A 1-D integer array attribute (a scalar reads as one element).
    public func intArrayAttribute(_ name: String) throws -> [Int64] {
        try readNumbers(name, scalar: false, integer: true, memType: ila_H5T_NATIVE_INT64())
    }

    /// A scalar floating-point attribute; integer attributes are accepted and converted.
    public func doubleAttribute(_ name: String) throws -> Double {
        let v: [Double] = try readNumbers(name, scalar: true, integer: false, memType: ila_H5T_NATIVE_DOUBLE())
        return v[0]
    }

    /// A 1-D floating-point array attribute; integer arrays are accepted and converted.
    public func doubleArrayAttribute(_ name: String) throws -> [Double] {
        try readNumbers(name, scalar: false, integer: false, memType: ila_H5T_NATIVE_DOUBLE())
    }

    /// Opens attribute `name` and checks its dataspace: exactly one element when `scalar`,
    /// otherwise scalar or 1-D. Returns (attribute id, its file type id, element count); the
    /// caller closes both ids.
    private func openAttribute(_ name: String, scalar: Bool) throws -> (attr: hid_t, type: hid_t, count: Int) {
        let exists = H5Aexists(id, name)
        guard exists >= 0 else { throw error("cannot look up attribute '\(name)'") }
        guard exists > 0 else { throw error("attribute '\(name)' is missing", library: false) }
        let attr = H5Aopen(id, name, ila_H5P_DEFAULT())
        guard attr >= 0 else { throw error("cannot open attribute '\(name)'") }
        let space = H5Aget_space(attr)
        defer { if space >= 0 { _ = H5Sclose(space) } }
        let type = H5Aget_type(attr)
        guard space >= 0, type >= 0 else {
            let e = error("cannot read attribute '\(name)'")
            if type >= 0 { _ = H5Tclose(type) }
            _ = H5Aclose(attr)
            throw e
        }
        let rank = H5Sget_simple_extent_ndims(space)
        let points = H5Sget_simple_extent_npoints(space)
        let fail = { (problem: String) -> HDF5Error in
            _ = H5Tclose(type)
            _ = H5Aclose(attr)
            return self.error("attribute '\(name)' \(problem)", library: false)
        }
        if rank < 0 || points < 0 || H5Sget_simple_extent_type(space) == H5S_NULL {
            throw fail("has no value")
        }
        if scalar && points != 1 { throw fail("must hold one value, found \(points)") }
        if !scalar && rank > 1 { throw fail("must be 1-dimensional, found \(rank) dimensions") }
        if points > HDF5Library.maxElements { throw fail("is too large (\(points) elements)") }
        return (attr, type, Int(points))
    }

    /// Reads a numeric attribute through HDF5's conversion to `memType` (native int64 or double;
    /// out-of-range integers clamp rather than wrap). `integer` accepts only integer storage,
    /// otherwise integers and floats both convert.
    private func readNumbers<T: Numeric>(_ name: String, scalar: Bool, integer: Bool, memType: hid_t) throws -> [T] {
        try HDF5Library.locked {
            let (attr, type, count) = try openAttribute(name, scalar: scalar)
            defer { _ = H5Tclose(type); _ = H5Aclose(attr) }
            let cls = H5Tget_class(type)
            guard cls == H5T_INTEGER || (!integer && cls == H5T_FLOAT) else {
                let wanted = integer ? "an integer" : "a number"
                throw error("attribute '\(name)' has type \(HDF5Library.describe(type)), expected \(wanted)", library: false)
            }
            var values = [T](repeating: 0, count: count)
            if count > 0 {
                let status = values.withUnsafeMutableBytes { H5Aread(attr, memType, $0.baseAddress) }
                guard status >= 0 else { throw error("cannot read attribute '\(name)'") }
            }
            return values
        }
    }

    private func readStrings(_ name: String, scalar: Bool) throws -> [String] {
        try HDF5Library.locked {
            let (attr, type, count) = try openAttribute(name, scalar: scalar)
            defer { _ = H5Tclose(type); _ = H5Aclose(attr) }
            guard H5Tget_class(type) == H5T_STRING else {
                throw error("attribute '\(name)' has type \(HDF5Library.describe(type)), expected a string", library: false)
            }
            if count == 0 { return [] }
            if H5Tis_variable_str(type) > 0 {
                // Read with the file's own type so no charset conversion is attempted.
                var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
                guard H5Aread(attr, type, &ptrs) >= 0 else { throw error("cannot read attribute '\(name)'") }
                defer { ptrs.forEach { if let p = $0 { H5free_memory(p) } } }
                return ptrs.map { $0.map { String(cString: $0) } ?? "" }
            }
            let size = H5Tget_size(type)
            guard size > 0, size <= 1 << 24 else { throw error("attribute '\(name)' has an invalid string size \(size)", library: false) }
            var bytes = [UInt8](repeating: 0, count: size * count)
            guard H5Aread(attr, type, &bytes) >= 0 else { throw error("cannot read attribute '\(name)'") }
            let spacePadded = H5Tget_strpad(type) == H5T_STR_SPACEPAD
            return (0..<count).map { i in
                var s = bytes[(i * size)..<((i + 1) * size)]
                if let nul = s.firstIndex(of: 0) { s = s[..<nul] }
                if spacePadded { while s.last == 0x20 { s = s.dropLast() } }
                return String(decoding: s, as: UTF8.self)
            }
        }
    }
}

private func decodeUTF8<S: Sequence>(_ chars: S) -> String where S.Element == CChar {
    String(decoding: chars.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

// MARK: - Group

/// A group: creates and opens child groups and datasets, lists its members.
public final class HDF5Group: HDF5Object {
    /// Link names must not contain "/" (that would be a path) and must not be "." (the group itself).
    private func checkName(_ name: String, _ what: String) throws {
        guard !name.isEmpty, name != ".", !name.contains("/") else {
            throw error("invalid \(what) name '\(name)' (must be non-empty and contain no '/')", library: false)
        }
    }

    /// Creates a child group; its members will list in creation order.
    public func createGroup(_ name: String) throws -> HDF5Group {
        try HDF5Library.locked {
            try checkName(name, "group")
            let gcpl = H5Pcreate(ila_H5P_GROUP_CREATE())
            defer { _ = H5Pclose(gcpl) }
            _ = H5Pset_link_creation_order(gcpl, UInt32(H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED))
            let gid = H5Gcreate2(id, name, ila_H5P_DEFAULT(), gcpl, ila_H5P_DEFAULT())
            guard gid >= 0 else { throw error("cannot create group '\(name)'") }
            return HDF5Group(file: file, id: gid, path: childPath(name))
        }
    }

    /// Opens a child group; a missing member or a member that is not a group is an error.
    public func openGroup(_ name: String) throws -> HDF5Group {
        try HDF5Library.locked {
            switch try memberKind(name) {
            case nil: throw error("group '\(name)' is missing", library: false)
            case .group?: break
            default: throw error("'\(name)' is not a group", library: false)
            }
            let gid = H5Gopen2(id, name, ila_H5P_DEFAULT())
            guard gid >= 0 else { throw error("cannot open group '\(name)'") }
            return HDF5Group(file: file, id: gid, path: childPath(name))
        }
    }

    /// Opens a child dataset; a missing member or a member that is not a dataset is an error.
    public func openDataset(_ name: String) throws -> HDF5Dataset {
        try HDF5Library.locked {
            switch try memberKind(name) {
            case nil: throw error("dataset '\(name)' is missing", library: false)
            case .dataset?: break
            default: throw error("'\(name)' is not a dataset", library: false)
            }
            let did = H5Dopen2(id, name, ila_H5P_DEFAULT())
            guard did >= 0 else { throw error("cannot open dataset '\(name)'") }
            return HDF5Dataset(file: file, id: did, path: childPath(name))
        }
    }

    /// The kind of member `name`, or nil when there is none (dangling links count as none).
    public func memberKind(_ name: String) throws -> HDF5MemberKind? {
        try HDF5Library.locked {
            guard !name.isEmpty, !name.contains("/") else { return nil }
            let exists = H5Lexists(id, name, ila_H5P_DEFAULT())
            guard exists >= 0 else { throw error("cannot look up '\(name)'") }
            guard exists > 0 else { return nil }
            let oid = H5Oopen(id, name, ila_H5P_DEFAULT())
            guard oid >= 0 else {
                _ = H5Eclear2(ila_H5E_DEFAULT())
                return nil
            }
            defer { _ = H5Oclose(oid) }
            switch H5Iget_type(oid) {
            case H5I_GROUP: return .group
            case H5I_DATASET: return .dataset
            default: return .other
            }
        }
    }

    /// Member names in creation order when the group tracks it (groups created here do), else in
    /// name order.
    public func memberNames() throws -> [String] {
        try HDF5Library.locked {
            var info = H5G_info_t()
            guard H5Gget_info(id, &info) >= 0 else { throw error("cannot list members") }
            var index = H5_INDEX_NAME
            let gcpl = H5Gget_create_plist(id)
            if gcpl >= 0 {
                var flags: UInt32 = 0
                if H5Pget_link_creation_order(gcpl, &flags) >= 0, flags & UInt32(H5P_CRT_ORDER_INDEXED) != 0 {
                    index = H5_INDEX_CRT_ORDER
                }
                _ = H5Pclose(gcpl)
            }
            return try (0..<info.nlinks).map { i in
                let n = H5Lget_name_by_idx(id, ".", index, H5_ITER_INC, i, nil, 0, ila_H5P_DEFAULT())
                guard n >= 0 else { throw error("cannot read member name \(i)") }
                var buffer = [CChar](repeating: 0, count: n + 1)
                guard H5Lget_name_by_idx(id, ".", index, H5_ITER_INC, i, &buffer, n + 1, ila_H5P_DEFAULT()) >= 0 else {
                    throw error("cannot read member name \(i)")
                }
                return decodeUTF8(buffer.prefix(n))
            }
        }
    }

    /// Writes a float dataset of `shape` (row-major `values`, count = product of shape). With
    /// `compression` 1…9 it is chunked in ~1 MiB blocks (`hdf5ChunkShape`) with shuffle + deflate
    /// at that level (HDF5's own filters, zlib); with 0 it is stored contiguously without filters.
    /// Empty datasets are stored contiguously (HDF5 chunks cannot be empty).
    @discardableResult
    public func createDataset(_ name: String, values: [Float], shape: [Int], storage: HDF5FloatStorage = .float32,
                              compression: Int = 4) throws -> HDF5Dataset {
        try HDF5Library.locked {
            try checkName(name, "dataset")
            guard !shape.isEmpty, shape.allSatisfy({ $0 >= 0 }) else {
                throw error("invalid shape \(shape) for dataset '\(name)'", library: false)
            }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d)
                return (p, acc.1 || o)
            }
            guard !overflow, count == values.count else {
                throw error("dataset '\(name)': \(values.count) values do not fill shape \(shape)", library: false)
            }
            var dims = shape.map { hsize_t($0) }
            let space = H5Screate_simple(Int32(dims.count), &dims, nil)
            guard space >= 0 else { throw error("cannot create dataspace for '\(name)'") }
            defer { _ = H5Sclose(space) }

            let halfType = storage == .float16 ? HDF5Library.makeHalfType() : -1
            defer { if halfType >= 0 { _ = H5Tclose(halfType) } }
            if storage == .float16 && halfType < 0 { throw error("cannot build the float16 type") }
            let elementSize = storage == .float16 ? 2 : 4
            let fileType = storage == .float16 ? halfType : ila_H5T_IEEE_F32LE()

            let dcpl = H5Pcreate(ila_H5P_DATASET_CREATE())
            defer { _ = H5Pclose(dcpl) }
            guard (0...9).contains(compression) else {
                throw error("dataset '\(name)': deflate level \(compression) is not within 0…9", library: false)
            }
            if compression > 0 && count > 0 {
                var chunk = hdf5ChunkShape(shape, elementSize: elementSize).map { hsize_t($0) }
                guard H5Pset_chunk(dcpl, Int32(chunk.count), &chunk) >= 0, H5Pset_shuffle(dcpl) >= 0,
                      H5Pset_deflate(dcpl, UInt32(compression)) >= 0 else { throw error("cannot set up compression for '\(name)'") }
            }
            let did = H5Dcreate2(id, name, fileType, space, ila_H5P_DEFAULT(), dcpl, ila_H5P_DEFAULT())
            guard did >= 0 else { throw error("cannot create dataset '\(name)'") }
            let dataset = HDF5Dataset(file: file, id: did, path: childPath(name))
            guard count > 0 else { return dataset }

            let status: herr_t
            switch storage {
            case .float32:
                status = values.withUnsafeBytes { H5Dwrite(did, ila_H5T_NATIVE_FLOAT(), ila_H5S_ALL(), ila_H5S_ALL(), ila_H5P_DEFAULT(), $0.baseAddress) }
            case .float16:
                // Convert in Swift (round to nearest even); memory and file types are identical,
                // so HDF5 copies bits without its slow soft conversion.
                let bits = values.map { Float16($0).bitPattern.littleEndian }
                status = bits.withUnsafeBytes { H5Dwrite(did, halfType, ila_H5S_ALL(), ila_H5S_ALL(), ila_H5P_DEFAULT(), $0.baseAddress) }
            }
            guard status >= 0 else { throw error("cannot write dataset '\(name)'") }
            return dataset
        }
    }

    /// Creates a float dataset exactly as `createDataset(_:values:shape:storage:compression:)`
    /// would at `filtered.level` (same chunk shape, shuffle + deflate declared in the creation
    /// properties) but stores chunks that `FilteredChunks.make` already shuffled and deflated, with
    /// `H5Dwrite_chunk` (filter mask 0): the costly compression then runs on any thread, outside
    /// the HDF5 lock, and with libdeflate rather than zlib.
    @discardableResult
    public func createDataset(_ name: String, filtered: FilteredChunks) throws -> HDF5Dataset {
        try HDF5Library.locked {
            try checkName(name, "dataset")
            var dims = filtered.shape.map { hsize_t($0) }
            let space = H5Screate_simple(Int32(dims.count), &dims, nil)
            guard space >= 0 else { throw error("cannot create dataspace for '\(name)'") }
            defer { _ = H5Sclose(space) }
            let halfType = filtered.storage == .float16 ? HDF5Library.makeHalfType() : -1
            defer { if halfType >= 0 { _ = H5Tclose(halfType) } }
            if filtered.storage == .float16 && halfType < 0 { throw error("cannot build the float16 type") }
            let fileType = filtered.storage == .float16 ? halfType : ila_H5T_IEEE_F32LE()
            let dcpl = H5Pcreate(ila_H5P_DATASET_CREATE())
            defer { _ = H5Pclose(dcpl) }
            var chunk = filtered.chunk.map { hsize_t($0) }
            guard H5Pset_chunk(dcpl, Int32(chunk.count), &chunk) >= 0, H5Pset_shuffle(dcpl) >= 0,
                  H5Pset_deflate(dcpl, UInt32(filtered.level)) >= 0 else {
                throw error("cannot set up compression for '\(name)'")
            }
            let did = H5Dcreate2(id, name, fileType, space, ila_H5P_DEFAULT(), dcpl, ila_H5P_DEFAULT())
            guard did >= 0 else { throw error("cannot create dataset '\(name)'") }
            let dataset = HDF5Dataset(file: file, id: did, path: childPath(name))
            for c in filtered.chunks {
                var offset = c.offset
                let status = c.bytes.withUnsafeBytes {
                    H5Dwrite_chunk(did, ila_H5P_DEFAULT(), 0, &offset, $0.count, $0.baseAddress)
                }
                guard status >= 0 else { throw error("cannot write dataset '\(name)'") }
            }
            return dataset
        }
    }
}

// MARK: - Dataset

/// A dataset: its shape, element type, and values read as Float.
public final class HDF5Dataset: HDF5Object {
    /// Dimensions, outermost first ([] for a scalar dataset).
    public func shape() throws -> [Int] {
        try HDF5Library.locked {
            let space = H5Dget_space(id)
            guard space >= 0 else { throw error("cannot read dataspace") }
            defer { _ = H5Sclose(space) }
            let rank = H5Sget_simple_extent_ndims(space)
            guard rank >= 0, rank <= 32 else { throw error("cannot read dataspace rank") }
            var dims = [hsize_t](repeating: 0, count: Int(rank))
            guard H5Sget_simple_extent_dims(space, &dims, nil) >= 0 else { throw error("cannot read dimensions") }
            return try dims.map { d in
                guard let i = Int(exactly: d) else { throw error("dimension \(d) is too large", library: false) }
                return i
            }
        }
    }

    /// The element type as a short name: float16, float32, float64, int64, string, …
    public func elementType() throws -> String {
        try HDF5Library.locked {
            let type = H5Dget_type(id)
            guard type >= 0 else { throw error("cannot read datatype") }
            defer { _ = H5Tclose(type) }
            return HDF5Library.describe(type)
        }
    }

    /// How the dataset is stored: its chunk dims (nil when contiguous or compact) and its
    /// filter pipeline, e.g. `["shuffle", "deflate 1"]` (other filters by their HDF5 id).
    public func storage() throws -> (chunk: [Int]?, filters: [String]) {
        try HDF5Library.locked {
            let dcpl = H5Dget_create_plist(id)
            guard dcpl >= 0 else { throw error("cannot read the dataset's storage properties") }
            defer { _ = H5Pclose(dcpl) }
            guard H5Pget_layout(dcpl) == H5D_CHUNKED else { return (nil, []) }
            var dims = [hsize_t](repeating: 0, count: 32)
            let rank = H5Pget_chunk(dcpl, Int32(dims.count), &dims)
            guard rank > 0 else { throw error("cannot read the chunk dimensions") }
            var filters: [String] = []
            for i in 0..<max(0, H5Pget_nfilters(dcpl)) {
                var flags: UInt32 = 0, count = 8
                var cd = [UInt32](repeating: 0, count: 8)
                var config: UInt32 = 0
                let f = H5Pget_filter2(dcpl, UInt32(i), &flags, &count, &cd, 0, nil, &config)
                switch f {
                case H5Z_FILTER_DEFLATE: filters.append("deflate \(count > 0 ? Int(cd[0]) : -1)")
                case H5Z_FILTER_SHUFFLE: filters.append("shuffle")
                default: filters.append("filter \(f)")
                }
            }
            return (dims.prefix(Int(rank)).map { Int($0) }, filters)
        }
    }

    /// Refuses a dataset whose declared size is not backed by data in the file, before a buffer of
    /// that size is allocated: a tiny hostile file may declare [1e5, 1e5] and store nothing (HDF5
    /// would return fill values). Unfiltered storage must hold every byte; compressed storage
    /// cannot expand more than deflate's limit (~1032:1), rounded up to 1100.
    private func checkStored(bytes: Int, shape: [Int]) throws {
        let stored = Int(clamping: H5Dget_storage_size(id))
        let dcpl = H5Dget_create_plist(id)
        guard dcpl >= 0 else { throw error("cannot read the dataset's storage properties") }
        defer { _ = H5Pclose(dcpl) }
        let filters = H5Pget_layout(dcpl) == H5D_CHUNKED ? H5Pget_nfilters(dcpl) : 0
        let ok = filters > 0 ? stored > 0 && bytes / stored <= HDF5Library.maxCompressionRatio : stored >= bytes
        guard ok else {
            throw error("shape \(shape) needs \(bytes) bytes but the file stores only \(stored) for it "
                        + "(truncated or corrupt)", library: false)
        }
    }

    /// All values, row-major, as Float: any floating-point storage is converted (float16 widened
    /// exactly, float64 rounded); non-float element types are an error.
    public func readFloats() throws -> [Float] {
        try HDF5Library.locked {
            let type = H5Dget_type(id)
            guard type >= 0 else { throw error("cannot read datatype") }
            defer { _ = H5Tclose(type) }
            guard H5Tget_class(type) == H5T_FLOAT else {
                throw error("has type \(HDF5Library.describe(type)), expected floating point", library: false)
            }
            let dims = try shape()
            var count = 1
            for d in dims {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o, p <= HDF5Library.maxElements else {
                    throw error("shape \(dims) is too large to load", library: false)
                }
                count = p
            }
            if count == 0 { return [] }
            try checkStored(bytes: count * H5Tget_size(type), shape: dims)
            if HDF5Library.isHalf(type) {
                var bits = [UInt16](repeating: 0, count: count)
                let status = bits.withUnsafeMutableBytes { H5Dread(id, type, ila_H5S_ALL(), ila_H5S_ALL(), ila_H5P_DEFAULT(), $0.baseAddress) }
                guard status >= 0 else { throw error("cannot read values") }
                return bits.map { Float(Float16(bitPattern: UInt16(littleEndian: $0))) }
            }
            var values = [Float](repeating: 0, count: count)
            let status = values.withUnsafeMutableBytes {
                H5Dread(id, ila_H5T_NATIVE_FLOAT(), ila_H5S_ALL(), ila_H5S_ALL(), ila_H5P_DEFAULT(), $0.baseAddress)
            }
            guard status >= 0 else { throw error("cannot read values") }
            return values
        }
    }
}

// MARK: - Chunks filtered outside the HDF5 library

/// Chunk dims of about 1 MiB of `elementSize`-byte elements: whole trailing dimensions where they
/// fit, then as many of the next dimension as fill the budget (each at least 1, never more than
/// the dimension). Used by every chunked float dataset, filtered here or by HDF5.
public func hdf5ChunkShape(_ shape: [Int], elementSize: Int) -> [Int] {
    var budget = max(1, (1 << 20) / elementSize)
    var chunk = [Int](repeating: 1, count: shape.count)
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        let take = max(1, min(shape[axis], budget))
        chunk[axis] = take
        budget = max(1, budget / take)
        if take < shape[axis] { break }
    }
    return chunk
}

/// A 2-D float dataset's chunks, stored exactly as HDF5's shuffle + deflate filters would store
/// them and decodable by any HDF5 reader (h5py included): the chunk grid of `hdf5ChunkShape`,
/// edge chunks zero-padded to full size (HDF5 ignores what lies outside the extent), each chunk
/// byte-shuffled (H5Zshuffle's layout) and compressed to the zlib format that the deflate filter
/// inflates. Compression is libdeflate's at the same level, much faster than zlib and a little
/// smaller. Pure computation, so it may run on any thread.
public struct FilteredChunks: @unchecked Sendable {
    public let shape: [Int]
    public let chunk: [Int]
    public let storage: HDF5FloatStorage
    /// The deflate level, 1…9, declared in the dataset's filter pipeline.
    public let level: Int
    public let chunks: [(offset: [hsize_t], bytes: [UInt8])]

    /// nil when the dataset is not 2-D and non-empty, the level is outside 1…9, or libdeflate
    /// fails (write it through HDF5's own filters instead).
    public static func make(_ values: [Float], shape: [Int], storage: HDF5FloatStorage, level: Int) -> FilteredChunks? {
        guard shape.count == 2, shape[0] > 0, shape[1] > 0, (1...9).contains(level) else { return nil }
        let (rows, cols) = (shape[0], shape[1])
        let (count, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard !overflow, values.count == count else { return nil }
        let es = storage == .float16 ? 2 : 4
        let chunk = hdf5ChunkShape(shape, elementSize: es)
        let (cr, cc) = (chunk[0], chunk[1])
        let n = cr * cc
        let chunkBytes = n * es
        guard let compressor = libdeflate_alloc_compressor(Int32(level)) else { return nil }
        defer { libdeflate_free_compressor(compressor) }
        let bound = libdeflate_zlib_compress_bound(compressor, chunkBytes)
        let gathered = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64)
        let shuffled = UnsafeMutablePointer<UInt8>.allocate(capacity: chunkBytes)
        let out = UnsafeMutablePointer<UInt8>.allocate(capacity: bound)
        defer { gathered.deallocate(); shuffled.deallocate(); out.deallocate() }

        var chunks: [(offset: [hsize_t], bytes: [UInt8])] = []
        chunks.reserveCapacity(((rows + cr - 1) / cr) * ((cols + cc - 1) / cc))
        let ok: Bool = values.withUnsafeBufferPointer { vp in
            let v = vp.baseAddress!
            for r0 in stride(from: 0, to: rows, by: cr) {
                for c0 in stride(from: 0, to: cols, by: cc) {
                    let nr = min(cr, rows - r0), nc = min(cc, cols - c0)
                    let source: UnsafeRawPointer
                    if storage == .float32 && nr == cr && nc == cols {
                        // A full chunk of whole rows is contiguous in `values`: shuffle it in place.
                        source = UnsafeRawPointer(v + r0 * cols)
                    } else {
                        if nr < cr || nc < cc { memset(gathered, 0, chunkBytes) }
                        for r in 0..<nr {
                            let src = v + (r0 + r) * cols + c0
                            let dst = gathered + r * cc * es
                            if storage == .float16 {
                                let h = dst.assumingMemoryBound(to: UInt16.self)
                                for i in 0..<nc { h[i] = Float16(src[i]).bitPattern.littleEndian }
                            } else {
                                memcpy(dst, src, nc * 4)
                            }
                        }
                        source = UnsafeRawPointer(gathered)
                    }
                    ila_shuffle(source.assumingMemoryBound(to: UInt8.self), shuffled, n, es)
                    let size = libdeflate_zlib_compress(compressor, shuffled, chunkBytes, out, bound)
                    guard size > 0 else { return false }
                    chunks.append((offset: [hsize_t(r0), hsize_t(c0)], bytes: Array(UnsafeBufferPointer(start: out, count: size))))
                }
            }
            return true
        }
        guard ok else { return nil }
        return FilteredChunks(shape: shape, chunk: chunk, storage: storage, level: level, chunks: chunks)
    }
}
