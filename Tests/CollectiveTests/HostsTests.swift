import Foundation
import ILARanking
import ILATestSupport
import XCTest

/// Two ranks on two hosts (DESIGN.md section 12): the hosts are network namespaces the test makes,
/// joined by one veth pair that carries their only addresses, and Open MPI may talk over TCP alone
/// (no shared memory), so everything the ranks exchange really crosses a wire.
final class HostsTests: XCTestCase {
    /// `mpirun` runs in the first namespace; its rsh launch agent starts the second rank's orted in the
    /// second namespace instead of over ssh. The ranking equals the single-process run's, each rank
    /// ran in its own namespace, Open MPI placed one rank per host, the ranks connected with the TCP
    /// BTL to the veth addresses, and the veth carried at least the bytes of the step allreduces.
    func testTwoHostLearnOverVethEqualsSingleProcess() throws {
        _ = try MPI.mpirun()
        let hosts = try TwoHosts()
        defer { hosts.remove() }
        let tmp = TempDir("ila-mpi-hosts")
        let f = try tinyDeltas(tmp)
        let steps = 4
        func args(_ out: String) -> [String] {
            ["learn", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--steps", "\(steps)", "--batch", "4",
             "--seq-len", "48", "--save-every", "0", "--json", "-o", out]
        }
        let one = tmp.path("one.json"), two = tmp.path("two.json")
        let a = try CommandRunner.run("ila-mask", args(one))
        XCTAssertEqual(a.status, 0, a.stderr)

        // The launch agent (in place of ssh): "$1" is the host, the rest the command for its shell.
        let agent = tmp.path("netns-agent"), agentLog = tmp.path("agent.log")
        let script = """
            #!/bin/sh
            host=$1; shift
            echo "$host" >> '\(agentLog)'
            case "$host" in
              \(hosts.addresses[0])) ns='\(hosts.names[0])' ;;
              \(hosts.addresses[1])) ns='\(hosts.names[1])' ;;
              *) echo "netns-agent: unknown host $host" >&2; exit 255 ;;
            esac
            exec '\(hosts.ip)' netns exec "$ns" /bin/sh -c "$*"

            """
        XCTAssertTrue(FileManager.default.createFile(atPath: agent, contents: Data(script.utf8),
                                                     attributes: [.posixPermissions: 0o755]))
        let options = [
            "--host", hosts.addresses.map { "\($0):1" }.joined(separator: ","),
            "--mca", "plm", "rsh", "--mca", "plm_rsh_agent", agent,
            "--mca", "oob_tcp_if_include", TwoHosts.subnet, "--mca", "oob_tcp_disable_ipv6_family", "1",
            "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
            "--mca", "btl_tcp_if_include", TwoHosts.subnet, "--mca", "btl_tcp_disable_family", "6",
            // The BTL reports which transport it chose for each peer and where it connected.
            "--mca", "btl_base_verbose", "30",
        ]
        // Each rank writes its network namespace and Open MPI's count of ranks on its host, then execs.
        let record = #"printf '%s %s\n' "$(readlink /proc/self/ns/net)" "$OMPI_COMM_WORLD_LOCAL_SIZE" > "$0/rank-$OMPI_COMM_WORLD_RANK" && exec "$@""#
        let before = try hosts.vethBytes()
        let b = try finish(MPI.start(np: 2, "ila-mask", args(two), mpirunOptions: options,
                                     wrapper: [hosts.ip, "netns", "exec", hosts.names[0]],
                                     rankWrapper: ["/bin/sh", "-c", record, tmp.url.path]), within: 60)
        let after = try hosts.vethBytes()
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(b.errorLines, [], b.stderr)
        XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any], b.stdout)

        // The same ranking as the single process.
        try assertSameRanking(one, two, steps: steps, "two hosts")

        // Rank r ran in namespace r (not the test's), one rank per host as Open MPI saw it.
        let testNet = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        let nets = try hosts.names.map { try hosts.namespaceID($0) }
        XCTAssertNotEqual(nets[0], nets[1])
        XCTAssertFalse(nets.contains(testNet))
        for rank in 0..<2 {
            let line = (try? String(contentsOfFile: tmp.path("rank-\(rank)"), encoding: .utf8)) ?? ""
            let fields = line.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            XCTAssertEqual(fields.first, nets[rank], "rank \(rank) ran outside \(hosts.names[rank]): \(line)")
            XCTAssertEqual(fields.dropFirst().first, "1", "Open MPI did not see rank \(rank) alone on its host: \(line)")
        }
        // Only the second host was reached through the agent (the first is mpirun's own).
        let agentHosts = ((try? String(contentsOfFile: agentLog, encoding: .utf8)) ?? "").split(separator: "\n")
        XCTAssertEqual(agentHosts, [Substring(hosts.addresses[1])], "launch agent calls")

        // The BTL: TCP toward the other rank (never shared memory), connections to the veth addresses only.
        let lines = b.stderrLines
        let tcpPeers = lines.filter { $0.contains("Using tcp btl for send to") }
        XCTAssertGreaterThanOrEqual(tcpPeers.count, 2, "no rank chose the TCP BTL for its peer:\n\(b.stderr)")
        XCTAssertEqual(lines.filter { $0.contains("bml: Using") && !$0.contains("Using tcp btl") && !$0.contains("Using self btl") },
                       [], "a transport other than TCP")
        let connects = lines.filter { $0.contains("btl: tcp: attempting to connect()") }
        XCTAssertFalse(connects.isEmpty, "no TCP BTL connection:\n\(b.stderr)")
        for c in connects {
            XCTAssertTrue(hosts.addresses.contains { c.contains("address \($0) on port") }, "a connection off the veth: \(c)")
        }
        // Each step's allreduce of (Σ NLL, tokens, rows, dΣNLL/dγ per layer) as doubles must cross the
        // link both ways in full, so each direction carried at least that much (launch traffic adds more).
        let layers = try Ranking.load(path: one).layers.count
        let payload = UInt64(steps * (3 + layers) * MemoryLayout<Double>.size)
        XCTAssertGreaterThanOrEqual(after.tx - before.tx, payload, "veth sent \(after.tx - before.tx) bytes")
        XCTAssertGreaterThanOrEqual(after.rx - before.rx, payload, "veth received \(after.rx - before.rx) bytes")
    }

    /// Waits for a started command; after `seconds` it is terminated (then killed) and the test fails.
    private func finish(_ started: (Process, URL, URL), within seconds: Double) -> CommandResult {
        let p = started.0
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            XCTFail("still running after \(seconds) s; terminated")
            kill(p.processIdentifier, SIGTERM)
            let grace = Date().addingTimeInterval(5)
            while p.isRunning && Date() < grace { usleep(20_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        return CommandRunner.finish(started)
    }
}

/// Two "hosts": network namespaces joined by one veth pair, `addresses[i]`/24 on `links[i]` in
/// `names[i]`, loopback up, nothing else. The veth ends are made inside the namespaces, so their
/// names never meet the machine's, and the subnet cannot clash with anything: no other interface
/// sees it. The namespace names are unique per test process. Skipped (XCTSkip saying why) where
/// namespaces cannot be made: not root, no CAP_NET_ADMIN / CAP_SYS_ADMIN, no iproute2.
final class TwoHosts {
    static let subnet = "10.231.0.0/24"
    let addresses = ["10.231.0.1", "10.231.0.2"]
    let links = ["ila-v1", "ila-v2"]
    let names: [String]
    let ip: String
    private var made: [String] = []

    init() throws {
        guard let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { throw XCTSkip("iproute2's ip is not installed (scripts/install-deps installs it); the two-host test is skipped") }
        self.ip = ip
        let tag = "\(getpid())-\(UUID().uuidString.prefix(8).lowercased())"
        names = ["ila-h1-\(tag)", "ila-h2-\(tag)"]
        do {
            for n in names {
                try run(["netns", "add", n])
                made.append(n)
            }
            try run(["link", "add", links[0], "netns", names[0], "type", "veth", "peer", "name", links[1], "netns", names[1]])
            for i in 0..<2 {
                try run(["-n", names[i], "link", "set", "lo", "up"])
                try run(["-n", names[i], "addr", "add", "\(addresses[i])/24", "dev", links[i]])
                try run(["-n", names[i], "link", "set", links[i], "up"])
            }
            _ = try namespaceID(names[0])
        } catch let e as Failure {
            remove()
            throw XCTSkip("network namespaces cannot be made here (`ip \(e.args.joined(separator: " "))`: \(e.message)); "
                + "the two-host test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and is skipped")
        }
    }

    struct Failure: Error { var args: [String]; var message: String }

    @discardableResult
    private func run(_ args: [String]) throws -> String {
        let r = CommandRunner.finish(try CommandRunner.start(executable: ip, args))
        guard r.status == 0 else {
            throw Failure(args: args, message: r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
                              ? "exit \(r.status)" : r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return r.stdout
    }

    /// The namespace's identity as a process inside it reads it (`net:[inode]`).
    func namespaceID(_ name: String) throws -> String {
        try run(["netns", "exec", name, "readlink", "/proc/self/ns/net"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Bytes the first host's veth end has sent and received.
    func vethBytes() throws -> (tx: UInt64, rx: UInt64) {
        let dir = "/sys/class/net/\(links[0])/statistics"
        let out = try run(["netns", "exec", names[0], "cat", "\(dir)/tx_bytes", "\(dir)/rx_bytes"])
        let v = out.split(separator: "\n").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        guard v.count == 2 else { throw Failure(args: ["netns", "exec", names[0], "cat", dir], message: out) }
        return (v[0], v[1])
    }

    /// Deletes the namespaces (the veth pair goes with them); safe to call twice.
    func remove() {
        for n in made.reversed() { _ = try? run(["netns", "delete", n]) }
        made = []
    }

    deinit { remove() }
}
