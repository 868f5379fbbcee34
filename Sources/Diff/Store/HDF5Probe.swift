import CHDF5
import Foundation

// libhdf5 (1.10 as shipped by distributions) trusts the container's internal structures: a
// corrupt global heap, superblock or object header can make it read out of bounds, allocate
// gigabytes or loop forever (found by fuzz/deltas_raw). ila cannot fix the library, so before a
// file is opened for reading, a forked child walks its whole structure — every object, every
// attribute value, every dataset's type, shape and storage — under a time and memory limit. If
// the child dies, the file is refused with one clear line instead of taking the command down.

enum HDF5Probe {
    /// Milliseconds the walk may take (ILA_HDF5_PROBE_MS overrides; the fuzz harness lowers it).
    static var timeLimitMS: Int {
        ProcessInfo.processInfo.environment["ILA_HDF5_PROBE_MS"].flatMap { Int($0) }.map { max(1, $0) } ?? 5_000
    }
    /// Address-space cap of the child beyond the parent's current use.
    static let memoryLimit = 2 << 30

    /// Throws when the forked walk of `path` (then `alsoInChild`, e.g. the caller's own reads in
    /// the order it will do them) crashes, hangs or runs out of memory. Call it without holding
    /// `HDF5Library.lock`: the child takes it again.
    static func check(path: String, alsoInChild: (() throws -> Void)? = nil) throws {
        if let problem = failure(path: path, alsoInChild: alsoInChild) {
            throw HDF5Error(file: path, object: "", problem: "not a readable HDF5 file: \(problem)")
        }
    }

    /// nil when the walk finished or libhdf5 reported an ordinary error (the normal open then
    /// reports it), else what happened to the child.
    static func failure(path: String, alsoInChild: (() throws -> Void)? = nil) -> String? {
        let limitMS = timeLimitMS
        fflush(nil)
        let pid = fork()
        if pid < 0 { return nil }  // cannot fork: open without the probe
        if pid == 0 {
            // Child: no Foundation, no exit handlers (libhdf5's would flush the parent's files).
            // Under a sanitizer + libFuzzer (fuzz/), a crash here must not be reported as the
            // harness's own: drop the death callback libFuzzer registered.
            if sanitized, let f = dlsym(nil, "__sanitizer_set_death_callback") {
                unsafeBitCast(f, to: (@convention(c) (UnsafeRawPointer?) -> Void).self)(nil)
            }
            let devnull = open("/dev/null", O_WRONLY)
            if devnull >= 0 { dup2(devnull, 2); dup2(devnull, 1) }
            var timer = itimerval(it_interval: timeval(tv_sec: 0, tv_usec: 0),
                                  it_value: timeval(tv_sec: limitMS / 1000, tv_usec: (limitMS % 1000) * 1000))
            signal(SIGALRM, SIG_DFL)
            setitimer(Int32(ITIMER_REAL.rawValue), &timer, nil)
            if !sanitized {
                var lim = rlimit()
                if getrlimit(Int32(RLIMIT_AS.rawValue), &lim) == 0 {
                    lim.rlim_cur = min(lim.rlim_max, rlim_t(currentAddressSpace() + memoryLimit))
                    setrlimit(Int32(RLIMIT_AS.rawValue), &lim)
                }
            }
            // The walk may stop at an error libhdf5 reports cleanly; the caller's own reads run
            // regardless (the parent will do them).
            let walked = walk(path)
            if corruptDataset { _exit(4) }
            do { try alsoInChild?() } catch { _exit(3) }
            _exit(walked ? 0 : 3)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signaled = status & 0x7f != 0 && status & 0x7f != 0x7f
        let code = (status >> 8) & 0xff
        if signaled {
            let sig = status & 0x7f
            if sig == SIGALRM { return "its internal structure makes the HDF5 library hang" }
            return "its internal structure is corrupt (the HDF5 library crashed reading it, signal \(sig))"
        }
        if code == 0 || code == 3 { return nil }
        if code == 4 { return "its internal structure is corrupt (a dataset's chunk index or values cannot be read)" }
        return "its internal structure is corrupt (the HDF5 library failed reading it)"
    }

    /// Set in the child when a dataset's storage or values fail to read: libhdf5 reports it
    /// cleanly here, but has read past its own buffers on the same files in the parent.
    nonisolated(unsafe) static var corruptDataset = false

    /// Built with a sanitizer (the fuzz harnesses): its shadow memory defeats RLIMIT_AS.
    static let sanitized: Bool = dlsym(nil, "__asan_init") != nil

    private static func currentAddressSpace() -> Int {
        // /proc/self/statm: the first field is the address-space size in pages.
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { return 0 }
        var pages = 0
        for c in buffer.prefix(n) { guard c >= 48 && c <= 57 else { break }; pages = pages * 10 + Int(c - 48) }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Reads everything structural; false when libhdf5 reports an error (not a crash).
    private static func walk(_ path: String) -> Bool {
        _ = H5Eset_auto2(ila_H5E_DEFAULT(), nil, nil)
        let file = H5Fopen(path, ila_H5F_ACC_RDONLY(), ila_H5P_DEFAULT())
        guard file >= 0 else { return false }
        var ok = true
        let status = withUnsafeMutablePointer(to: &ok) { okPtr in
            H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, { root, name, _, data in
                guard let name, let data else { return 0 }
                let obj = H5Oopen(root, name, ila_H5P_DEFAULT())
                guard obj >= 0 else { data.assumingMemoryBound(to: Bool.self).pointee = false; return 0 }
                defer { _ = H5Oclose(obj) }
                HDF5Probe.readAttributes(obj)
                if H5Iget_type(obj) == H5I_DATASET { HDF5Probe.inspectDataset(obj) }
                return 0
            }, UnsafeMutableRawPointer(okPtr), UInt32(H5O_INFO_BASIC))
        }
        _ = H5Fclose(file)
        return status >= 0 && ok
    }

    private static func readAttributes(_ obj: hid_t) {
        var idx: hsize_t = 0
        _ = H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, { loc, name, _, _ in
            guard let name else { return 0 }
            let attr = H5Aopen(loc, name, ila_H5P_DEFAULT())
            guard attr >= 0 else { return 0 }
            defer { _ = H5Aclose(attr) }
            let type = H5Aget_type(attr), space = H5Aget_space(attr)
            defer { if type >= 0 { _ = H5Tclose(type) }; if space >= 0 { _ = H5Sclose(space) } }
            guard type >= 0, space >= 0 else { return 0 }
            let points = Int(H5Sget_simple_extent_npoints(space))
            guard points > 0, points <= 1 << 20 else { return 0 }
            if H5Tis_variable_str(type) > 0 {
                var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: points)
                if H5Aread(attr, type, &ptrs) >= 0 { for p in ptrs { if let p { _ = strlen(p); H5free_memory(p) } } }
                return 0
            }
            let cls = H5Tget_class(type)
            guard cls == H5T_INTEGER || cls == H5T_FLOAT || cls == H5T_STRING else { return 0 }
            let native = cls == H5T_STRING ? H5Tcopy(type) : H5Tget_native_type(type, H5T_DIR_DEFAULT)
            guard native >= 0 else { return 0 }
            defer { _ = H5Tclose(native) }
            let size = H5Tget_size(native)
            guard size > 0, size <= 1 << 24, points * size <= 1 << 26 else { return 0 }
            var buffer = [UInt8](repeating: 0, count: points * size)
            _ = H5Aread(attr, native, &buffer)
            return 0
        }, nil)
    }

    /// Type, shape and storage of a dataset; the values too when they are small (compact
    /// datasets live in the object header, where corruption has made libhdf5 read past its own
    /// buffers), so that the parent's later read of them is known to be safe.
    private static func inspectDataset(_ ds: hid_t) {
        let type = H5Dget_type(ds), space = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds)
        defer {
            if type >= 0 { _ = H5Tclose(type) }
            if space >= 0 { _ = H5Sclose(space) }
            if dcpl >= 0 { _ = H5Pclose(dcpl) }
        }
        guard type >= 0, space >= 0, dcpl >= 0 else { return }
        var dims = [hsize_t](repeating: 0, count: 32)
        guard H5Sget_simple_extent_ndims(space) <= 32, H5Sget_simple_extent_dims(space, &dims, nil) >= 0 else { return }
        let layout = H5Pget_layout(dcpl)
        _ = H5Pget_nfilters(dcpl)
        _ = H5Eclear2(ila_H5E_DEFAULT())
        let stored = H5Dget_storage_size(ds)
        if H5Eget_num(ila_H5E_DEFAULT()) > 0 { corruptDataset = true; return }
        let points = H5Sget_simple_extent_npoints(space)
        guard H5Tget_class(type) == H5T_FLOAT || H5Tget_class(type) == H5T_INTEGER, points > 0, points <= 1 << 22,
              layout == H5D_COMPACT || stored <= 1 << 20 else { return }
        let native = H5Tget_native_type(type, H5T_DIR_DEFAULT)
        guard native >= 0 else { return }
        defer { _ = H5Tclose(native) }
        let size = H5Tget_size(native)
        guard size > 0, size <= 16 else { return }
        var buffer = [UInt8](repeating: 0, count: Int(points) * size)
        if H5Dread(ds, native, ila_H5S_ALL(), ila_H5S_ALL(), ila_H5P_DEFAULT(), &buffer) < 0 { corruptDataset = true }
    }
}
