// swift-tools-version:6.0
import PackageDescription

// No unsafe flags here, so that other packages can depend on Autograd by version. The release
// library's extra flags (-O3 for the C kernels, unchecked exclusivity, the soname, the version
// script) are passed by scripts/build.sh, which builds libautograd.so.
let package = Package(
    name: "Autograd",
    products: [
        // libautograd.so: the C ABI (AutogradC) with the engine linked in.
        .library(name: "autograd", type: .dynamic, targets: ["AutogradC"]),
        // The Swift API (the module Autograd, which re-exports the engine).
        .library(name: "Autograd", targets: ["Autograd"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Hot kernels in C, built per instruction set and chosen at load time.
        .target(name: "CKernels"),
        // The engine: tensors, graphs, ops (their throwing forms at `package` access), optimizers.
        .target(
            name: "AutogradEngine",
            dependencies: ["COpenBLAS", "CKernels"]
        ),
        // The Swift API: the engine re-exported, with tensor math that does not throw.
        .target(
            name: "Autograd",
            dependencies: ["AutogradEngine"]
        ),
        .target(
            name: "AutogradC",
            dependencies: ["AutogradEngine", "CKernels"],
            // The linker version script, passed by scripts/build.sh.
            exclude: ["exports.map"]
        ),
        .testTarget(
            name: "AutogradTests",
            dependencies: ["AutogradEngine", "AutogradC"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
