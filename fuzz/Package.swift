// swift-tools-version:6.0
import PackageDescription

// libFuzzer harnesses for ila's parsers (README "Fuzzing"). Kept apart from the main package so
// `swift test` is untouched; build and run them with `fuzz/run-all SECONDS`, which passes
// `-sanitize=fuzzer,address`.
let harnesses = ["safetensors", "config", "adapter_config", "tokenizer", "tokenizer_encode",
                 "jsonl", "ranking", "deltas", "deltas_raw", "chat_template"]

let package = Package(
    name: "ila-fuzz",
    platforms: [.macOS(.v13)],
    dependencies: [.package(name: "ila", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "ILADiff", package: "ila")],
                path: "Sources/FuzzSupport"),
    ] + harnesses.map { name in
        .executableTarget(name: name, dependencies: [
            "FuzzSupport",
            .product(name: "ILADiff", package: "ila"),
            .product(name: "ILAMask", package: "ila"),
            .product(name: "ILAModel", package: "ila"),
            .product(name: "ILARanking", package: "ila"),
        ], path: "Sources/\(name)")
    }
)
