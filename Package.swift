// swift-tools-version:6.0
import PackageDescription

// Pipeline: checkpoint → deltas (Diff) → model description (Model) → engine (Engine) →
// mask and scores (Mask) → ranking and exports (Ranking) → transfer (Transfer) → tune (Tune).
// Ranking, exports and transfer depend on neither the engine nor the tokenizer.
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
// Optimised in every configuration (the test suite runs debug builds over real checkpoints);
// bounds and overflow checks stay on everywhere but in the engine's inner loops.
let optimized: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "ila",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ila-diff", targets: ["ila-diff"]),
        .executable(name: "ila-mask", targets: ["ila-mask"]),
        .executable(name: "ila-transfer", targets: ["ila-transfer"]),
        .executable(name: "ila-tune", targets: ["ila-tune"]),
        // For the fuzz harnesses (fuzz/Package.swift depends on this package by path).
        .library(name: "ILADiff", targets: ["ILADiff"]),
        .library(name: "ILAModel", targets: ["ILAModel"]),
        .library(name: "ILAMask", targets: ["ILAMask"]),
        .library(name: "ILARanking", targets: ["ILARanking"]),
        .library(name: "ILACollective", targets: ["ILACollective"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries: modulemap + shim header each.
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5-serial",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // Deflate for deltas.h5 chunks (FilteredChunks): several times zlib's speed, same format.
        .systemLibrary(name: "CLibDeflate", path: "Sources/CLibDeflate", pkgConfig: "libdeflate",
                       providers: [.apt(["libdeflate-dev"])]),
        // oneDNN's GEMMs behind a small C face (its descriptors are large structs).
        .target(name: "CDNNL", path: "Sources/CDNNL", linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("dl")]),
        // Open MPI behind a small C face (its handles and constants are macros over library globals).
        // libmpi is not linked: the shim loads it with dlopen when a launcher started the process
        // (DESIGN.md section 12), so runs without mpirun neither need it nor pay its start-up.
        // Its header comes from Debian's libopenmpi-dev (/usr/include/<triplet>/mpi/mpi.h).
        .target(name: "CMPI", path: "Sources/CMPI", linkerSettings: [.linkedLibrary("dl")]),
        // rank, size, allreduce, broadcast, barrier: MPI under mpirun, the identity otherwise
        .target(name: "ILACollective", dependencies: ["CMPI"], path: "Sources/Collective"),
        // BLAS, LAPACK and oneDNN calls (GEMM for the engine, SVD and Gram matrices for the deltas).
        .target(name: "ILABLAS", dependencies: ["COpenBLAS", "CDNNL"], path: "Sources/BLAS", swiftSettings: optimized),

        // checkpoint readers, deltas, the HDF5 delta store, shared CLI support (parsers of user files:
        // bounds and overflow checks stay on)
        .target(name: "ILADiff", dependencies: ["CHDF5", "CLibDeflate", "ILABLAS"], path: "Sources/Diff", swiftSettings: optimized),
        // architecture descriptions: config.json per family, RoPE variants, weights
        .target(name: "ILAModel", dependencies: ["ILADiff"], path: "Sources/Model", swiftSettings: optimized),
        // the engine's inner loops (pointer arithmetic on buffers it sized itself)
        .target(name: "ILAEngine", dependencies: ["ILAModel", "ILABLAS", "ILADiff", "ILACollective"], path: "Sources/Engine",
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        // tokenizer, data, the ILA objective and learner
        .target(name: "ILAMask", dependencies: ["ILADiff", "ILAModel", "ILAEngine", "ILACollective"], path: "Sources/Mask",
                swiftSettings: optimized),
        // rankings, comparison, selections and their export formats
        .target(name: "ILARanking", dependencies: ["ILADiff"], path: "Sources/Ranking"),
        // ranking transfer across models
        .target(name: "ILATransfer", dependencies: ["ILADiff", "ILARanking"], path: "Sources/Transfer"),
        // LoRA fine-tuning (stage 1, and tuning only the selected layers): AdamW, schedules, adapters
        .target(name: "ILATune", dependencies: ["ILADiff", "ILAModel", "ILAEngine", "ILAMask", "ILARanking"],
                path: "Sources/Tune", swiftSettings: optimized),

        // exit codes and error lines shared by the three commands
        .target(name: "ILACommandLine", dependencies: ["ILADiff", argumentParser], path: "Sources/CLI"),
        // the model and data options of the commands that run the model (ila-mask, ila-tune)
        .target(name: "ILACommandOptions", dependencies: ["ILADiff", "ILABLAS", "ILAModel", "ILAEngine", "ILAMask", "ILACommandLine", "ILACollective", argumentParser],
                path: "Sources/CommandOptions"),
        .executableTarget(name: "ila-diff", dependencies: ["ILADiff", "ILACommandLine", argumentParser],
                          path: "Sources/ila-diff"),
        .executableTarget(name: "ila-mask", dependencies: [
            "ILADiff", "ILABLAS", "ILAModel", "ILAEngine", "ILAMask", "ILARanking", "ILATune", "ILACommandLine", "ILACommandOptions", "ILACollective",
            argumentParser],
            path: "Sources/ila-mask"),
        .executableTarget(name: "ila-tune", dependencies: [
            "ILADiff", "ILAModel", "ILAEngine", "ILAMask", "ILARanking", "ILATune", "ILACommandLine", "ILACommandOptions", "ILACollective",
            argumentParser],
            path: "Sources/ila-tune"),
        .executableTarget(name: "ila-transfer", dependencies: [
            "ILADiff", "ILARanking", "ILATransfer", "ILACommandLine", argumentParser],
            path: "Sources/ila-transfer"),

        // Shared by the test targets: running the built commands, temporary folders, paths.
        .target(name: "ILATestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "DiffTests", dependencies: ["ILADiff", "ILABLAS", "ILATestSupport"], path: "Tests/DiffTests"),
        .testTarget(name: "MaskTests", dependencies: ["ILADiff", "ILAModel", "ILAEngine", "ILAMask", "ILARanking", "ILATestSupport"],
                    path: "Tests/MaskTests"),
        .testTarget(name: "TuneTests", dependencies: ["ILADiff", "ILAModel", "ILAEngine", "ILAMask", "ILARanking", "ILATune", "ILATestSupport"],
                    path: "Tests/TuneTests"),
        .testTarget(name: "CollectiveTests", dependencies: ["ILACollective", "ILADiff", "ILARanking", "ILATestSupport"],
                    path: "Tests/CollectiveTests"),
        .testTarget(name: "TransferTests", dependencies: ["ILADiff", "ILARanking", "ILATransfer", "ILATestSupport"],
                    path: "Tests/TransferTests"),
    ]
)
