// swift-tools-version:6.0
import PackageDescription

// Pipeline: checkpoint → deltas (Diff) → mask → ranking (Mask) → transfer/export (Transfer).
let package = Package(
    name: "ila",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ila-diff", targets: ["ila-diff"]),
        .executable(name: "ila-mask", targets: ["ila-mask"]),
        .executable(name: "ila-transfer", targets: ["ila-transfer"]),
        // For the fuzz harnesses (fuzz/Package.swift depends on this package by path).
        .library(name: "ILADiff", targets: ["ILADiff"]),
        .library(name: "ILAMask", targets: ["ILAMask"]),
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

        // checkpoint readers, deltas, the HDF5 delta store, BLAS, shared CLI support
        .target(name: "ILADiff", dependencies: ["CHDF5", "COpenBLAS"], path: "Sources/Diff",
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        // tokenizer, data, the Llama engine, the ILA objective, rankings and exports
        .target(name: "ILAMask", dependencies: ["ILADiff", "COpenBLAS"], path: "Sources/Mask",
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        // ranking transfer across models
        .target(name: "ILATransfer", dependencies: ["ILADiff", "ILAMask"], path: "Sources/Transfer"),

        // exit codes and error lines shared by the three commands
        .target(name: "ILACommandLine", dependencies: [
            "ILADiff", .product(name: "ArgumentParser", package: "swift-argument-parser")], path: "Sources/CLI"),
        .executableTarget(name: "ila-diff", dependencies: [
            "ILADiff", "ILACommandLine", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/ila-diff"),
        .executableTarget(name: "ila-mask", dependencies: [
            "ILADiff", "ILAMask", "ILACommandLine", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/ila-mask"),
        .executableTarget(name: "ila-transfer", dependencies: [
            "ILADiff", "ILAMask", "ILATransfer", "ILACommandLine",
            .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/ila-transfer"),

        // Shared by the test targets: running the built commands, temporary folders, paths.
        .target(name: "ILATestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "DiffTests", dependencies: ["ILADiff", "ILATestSupport"], path: "Tests/DiffTests"),
        .testTarget(name: "MaskTests", dependencies: ["ILADiff", "ILAMask", "ILATestSupport"], path: "Tests/MaskTests"),
        .testTarget(name: "TransferTests", dependencies: ["ILADiff", "ILAMask", "ILATransfer", "ILATestSupport"],
                    path: "Tests/TransferTests"),
    ]
)
