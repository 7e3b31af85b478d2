// swift-tools-version:6.0
// A client of Autograd, as a user's package would be: it depends on Autograd by version.
// scripts/swift-package-tests.sh makes the tagged git repository this points at (a copy of the
// project's tracked files, tagged 0.1.0) and builds this package in Swift 6 mode, failing on
// any warning.
import PackageDescription

let autograd = Context.packageDirectory + "/../../.build/swift-package/autograd"

let package = Package(
    name: "XorMLP",
    dependencies: [
        .package(url: autograd, from: "0.1.0"),
    ],
    targets: [
        .executableTarget(
            name: "XorMLP",
            dependencies: [.product(name: "Autograd", package: "autograd")]
        ),
        // README.md's Swift program, character for character (scripts/swift-package-tests.sh
        // checks that the two are the same).
        .executableTarget(
            name: "ReadmeExample",
            dependencies: [.product(name: "Autograd", package: "autograd")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
