// swift-tools-version:6.1
// A user's daemon as it would depend on this package: the `WebPubSub` product only.
// `make consumer` builds it and lists what SwiftPM resolved and checked out for it.
import PackageDescription

let package = Package(
    name: "Consumer",
    platforms: [.macOS(.v13)],
    dependencies: [
        // `traits: []`: without the default `Emulator` trait, SwiftNIO and swift-argument-parser are not resolved.
        .package(name: "swift-webpubsub", path: "../..", traits: []),
    ],
    targets: [
        .executableTarget(
            name: "Consumer",
            dependencies: [.product(name: "WebPubSub", package: "swift-webpubsub")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
