import Foundation

/// Element types of the safetensors format.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL
    case F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4, C64

    /// Bytes per element (the sub-byte types are refused before this is used).
    public var size: Int {
        switch self {
        case .F64, .I64, .U64, .C64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2, .F8_E8M0: return 1
        case .F6_E2M3, .F6_E3M2, .F4: return 0
        }
    }

    /// Whether values can be widened to Float32 for a linear layer.
    public var isWidenableFloat: Bool { self == .F32 || self == .F16 || self == .BF16 }
}

/// One tensor's header entry. `offset` is absolute in the file.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    public let offset: Int
    public let byteCount: Int
    public var count: Int { shape.reduce(1, *) }
}

/// A read-only memory mapping of a whole file; unmapped in `deinit`.
final class MappedFile: @unchecked Sendable {
    let base: UnsafeRawPointer?
    let size: Int

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw ILAError(file: path, errno == ENOENT ? "no such file" : "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ILAError(file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ILAError(file: path, "not a regular file") }
        size = Int(st.st_size)
        if size == 0 { base = nil; return }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw ILAError(file: path, "cannot map: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// Maps `[offset, offset + count)` in one call before it is read (MADV_POPULATE_READ, Linux
    /// 5.14+: far cheaper than a page fault per 64 KiB), else asks for read-ahead. A hint: errors
    /// are ignored and reads fault pages in as usual.
    func willNeed(offset: Int, count: Int) {
        guard let base, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let end = min(size, offset + count)
        guard end > start else { return }
        let p = UnsafeMutableRawPointer(mutating: base + start)
        #if os(Linux)
        let populateRead: Int32 = 22  // MADV_POPULATE_READ
        if madvise(p, end - start, populateRead) == 0 { return }
        #endif
        _ = madvise(p, end - start, MADV_WILLNEED)
    }

    /// Drops the mapped pages of `[offset, offset + count)` from this process's resident set
    /// (read-only private mapping: later reads fault them in again from the file).
    func release(offset: Int, count: Int) {
        guard let base, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let end = min(size, (offset + count + page - 1) / page * page)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }
}

/// A safetensors file, memory-mapped; tensors are decoded lazily one at a time.
///
/// The header is validated completely on open (DESIGN.md section 9): 8-byte little-endian length
/// ≤ 100 MB and within the file, UTF-8 JSON object, known dtypes, shapes of non-negative integers
/// whose byte size does not overflow, data_offsets contiguous and covering the data buffer exactly.
public final class SafetensorsFile: @unchecked Sendable {
    public static let maxHeaderLength = 100_000_000

    public let path: String
    public let metadata: [String: String]
    /// Entries in file order (ascending offset).
    public let tensors: [TensorInfo]
    private let index: [String: Int]
    private let file: MappedFile

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        let parsed = try Self.parseHeader(file: file, path: path)
        metadata = parsed.metadata
        tensors = parsed.tensors
        var idx: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { idx[t.name] = i }
        index = idx
    }

    public var names: [String] { tensors.map(\.name) }
    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }
    public func contains(_ name: String) -> Bool { index[name] != nil }

    /// The tensor's values widened to Float32, row-major in its stored shape.
    /// Throws for dtypes that are not F32/F16/BF16.
    public func floats(_ name: String) throws -> [Float] {
        guard let t = info(name) else { throw ILAError(file: path, "no tensor named \(name)") }
        return try floats(t)
    }

    public func floats(_ t: TensorInfo) throws -> [Float] {
        guard t.dtype.isWidenableFloat else {
            throw ILAError(file: path, "tensor \(t.name) has dtype \(t.dtype.rawValue); only F32, F16 and BF16 are supported for weights")
        }
        let n = t.count
        guard n > 0, let base = file.base else { return [] }
        let src = base + t.offset
        // The decoded copy is all that is kept: the mapped pages go back to the page cache, so
        // resident memory does not grow with the checkpoint (README "Resource bounds").
        defer { file.release(offset: t.offset, count: t.byteCount) }
        return [Float](unsafeUninitializedCapacity: n) { buf, initialized in
            let dst = buf.baseAddress!
            switch t.dtype {
            case .F32:
                memcpy(dst, src, n * 4)
            case .BF16:
                for i in 0..<n {
                    let bits = UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16
                    dst[i] = Float(bitPattern: bits)
                }
            case .F16:
                for i in 0..<n {
                    let bits = src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian
                    dst[i] = Float(halfBits: bits)
                }
            default:
                break
            }
            initialized = n
        }
    }

    /// A BF16 or F16 tensor's 16-bit values copied as they are (little-endian host order),
    /// for weights that stay in the checkpoint's dtype; nil for other dtypes.
    public func halfBits(_ t: TensorInfo) -> [UInt16]? {
        guard t.dtype == .BF16 || t.dtype == .F16 else { return nil }
        let n = t.count
        guard n > 0, let base = file.base else { return [] }
        let src = base + t.offset
        defer { file.release(offset: t.offset, count: t.byteCount) }
        return [UInt16](unsafeUninitializedCapacity: n) { buf, initialized in
            let dst = buf.baseAddress!
            for i in 0..<n { dst[i] = src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian }
            initialized = n
        }
    }

    /// Runs `body` on a tensor's mapped bytes (any dtype; valid only inside `body`), then gives
    /// the pages back to the page cache as `floats` does.
    public func withBytes<T>(_ t: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        guard let base = file.base, t.byteCount > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        file.willNeed(offset: t.offset, count: t.byteCount)
        defer { file.release(offset: t.offset, count: t.byteCount) }
        return try body(UnsafeRawBufferPointer(start: base + t.offset, count: t.byteCount))
    }

    /// Raw bytes of a tensor (any dtype), e.g. for copying untouched.
    public func rawBytes(_ t: TensorInfo) -> UnsafeRawBufferPointer {
        guard let base = file.base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + t.offset, count: t.byteCount)
    }

    // MARK: header validation

    static func parseHeader(file: MappedFile, path: String) throws -> (metadata: [String: String], tensors: [TensorInfo]) {
        let name = path
        guard file.size >= 8, let base = file.base else {
            throw ILAError(file: name, "file is \(file.size) bytes, too short for a safetensors header")
        }
        let n = base.loadUnaligned(as: UInt64.self).littleEndian
        guard n <= UInt64(file.size - 8) else {
            throw ILAError(file: name, "header length \(n) exceeds file size \(file.size)")
        }
        guard n <= UInt64(maxHeaderLength) else {
            throw ILAError(file: name, "header length \(n) exceeds the limit of \(maxHeaderLength) bytes")
        }
        let headerLength = Int(n)
        let headerData = Data(bytes: base + 8, count: headerLength)
        guard String(data: headerData, encoding: .utf8) != nil else {
            throw ILAError(file: name, "header is not valid UTF-8")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData, options: [])
        } catch {
            throw ILAError(file: name, "header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw ILAError(file: name, "header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let bufferSize = file.size - dataStart
        var metadata: [String: String] = [:]
        var entries: [(name: String, dtype: SafetensorsDType, shape: [Int], begin: Int, end: Int)] = []
        for (key, value) in object {
            if key == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw ILAError(file: name, "__metadata__ is not an object of strings")
                }
                for (k, v) in m {
                    guard let s = v as? String else { throw ILAError(file: name, "__metadata__ value for \(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let e = value as? [String: Any] else { throw ILAError(file: name, "tensor \(key): entry is not an object") }
            for k in e.keys where !["dtype", "shape", "data_offsets"].contains(k) {
                throw ILAError(file: name, "tensor \(key): unknown field \(k)")
            }
            guard let ds = e["dtype"] as? String else { throw ILAError(file: name, "tensor \(key): missing dtype") }
            guard let dtype = SafetensorsDType(rawValue: ds) else {
                throw ILAError(file: name, "tensor \(key): unknown dtype \(ds)")
            }
            guard dtype.size > 0 else {
                throw ILAError(file: name, "tensor \(key): dtype \(ds) (sub-byte) is not supported")
            }
            guard let rawShape = e["shape"] as? [Any] else { throw ILAError(file: name, "tensor \(key): missing shape") }
            var shape: [Int] = []
            for d in rawShape {
                guard let v = jsonInt(d), v >= 0 else { throw ILAError(file: name, "tensor \(key): shape \(rawShape) is not a list of non-negative integers") }
                shape.append(v)
            }
            guard let offs = e["data_offsets"] as? [Any], offs.count == 2,
                  let begin = jsonInt(offs[0]), let end = jsonInt(offs[1]), begin >= 0, end >= begin else {
                throw ILAError(file: name, "tensor \(key): data_offsets must be two integers [begin, end] with begin ≤ end")
            }
            var numel = 1
            for d in shape {
                let (p, o) = numel.multipliedReportingOverflow(by: d)
                guard !o else { throw ILAError(file: name, "tensor \(key): shape \(shape) overflows") }
                numel = p
            }
            let (bytes, o) = numel.multipliedReportingOverflow(by: dtype.size)
            guard !o else { throw ILAError(file: name, "tensor \(key): shape \(shape) overflows") }
            guard end - begin == bytes else {
                throw ILAError(file: name, "tensor \(key): data_offsets [\(begin), \(end)] hold \(end - begin) bytes but shape \(shape) of \(ds) needs \(bytes)")
            }
            guard end <= bufferSize else {
                throw ILAError(file: name, "tensor \(key): data_offsets [\(begin), \(end)] beyond the data buffer of \(bufferSize) bytes (file truncated?)")
            }
            entries.append((key, dtype, shape, begin, end))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var cursor = 0
        for e in entries {
            if e.begin < cursor {
                throw ILAError(file: name, "tensor \(e.name): data_offsets [\(e.begin), \(e.end)] overlap the previous tensor")
            }
            if e.begin > cursor {
                throw ILAError(file: name, "tensor \(e.name): gap in the data buffer before offset \(e.begin) (expected \(cursor))")
            }
            cursor = e.end
        }
        if cursor != bufferSize {
            throw ILAError(file: name, "tensors cover \(cursor) bytes but the data buffer holds \(bufferSize)")
        }
        let tensors = entries.map {
            TensorInfo(name: $0.name, dtype: $0.dtype, shape: $0.shape, offset: dataStart + $0.begin, byteCount: $0.end - $0.begin)
        }
        return (metadata, tensors)
    }
}

/// An integer from a JSONSerialization value: a JSON integer within Int range. Booleans and
/// numbers written with a fraction or exponent are refused (as the format's own parser does);
/// Foundation bridges `true` and `1.0` to Int, so the stored C type decides.
func jsonInt(_ v: Any) -> Int? {
    guard let n = v as? NSNumber else { return nil }
    switch String(cString: n.objCType) {
    case "q", "l", "i", "s":
        return Int(exactly: n.int64Value)
    case "Q", "L", "I", "S":
        return n.uint64Value <= UInt64(Int.max) ? Int(n.uint64Value) : nil
    default:  // "c" (bool), "d"/"f" (fractions, exponents, huge values)
        return nil
    }
}

extension Float {
    /// IEEE half-precision bits to Float32.
    @inlinable
    public init(halfBits h: UInt16) {
        #if arch(x86_64) || arch(arm64)
        self = Float(Float16(bitPattern: h))
        #else
        let sign = UInt32(h & 0x8000) << 16
        let exp = Int((h >> 10) & 0x1F)
        let mant = UInt32(h & 0x3FF)
        if exp == 0 {
            self = (sign != 0 ? -1 : 1) * Float(mant) * 0x1p-24
        } else if exp == 31 {
            self = Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
        } else {
            self = Float(bitPattern: sign | UInt32(exp + 112) << 23 | (mant << 13))
        }
        #endif
    }
}
