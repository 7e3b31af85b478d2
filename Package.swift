// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Autograd",
    products: [
        // libautograd.so: the C ABI (AutogradC) with the engine linked in.
        .library(name: "autograd", type: .dynamic, targets: ["AutogradC"]),
        // The engine for Swift users.
        .library(name: "Autograd", targets: ["Autograd"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Hot kernels in C, built per instruction set and chosen at load time.
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-gdwarf-4"])]
        ),
        .target(
            name: "Autograd",
            dependencies: ["COpenBLAS", "CKernels"],
            // Release builds drop the run-time exclusivity checks (a runtime call per
            // class-property access on the per-op path): there, overlapping accesses to class
            // properties and globals are caught only where the compiler can see them statically.
            // Debug builds (swift test) keep the run-time checks.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .target(
            name: "AutogradC",
            dependencies: ["Autograd", "CKernels"],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))],
            linkerSettings: [.unsafeFlags(["-Xlinker", "-soname=libautograd.so.0"])]
        ),
        .testTarget(
            name: "AutogradTests",
            dependencies: ["Autograd", "AutogradC"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
