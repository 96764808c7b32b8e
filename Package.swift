// swift-tools-version:6.1
//===----------------------------------------------------------------------===//
// swift-webpubsub: an Azure Web PubSub client for Linux services, on our own
// RFC 6455 WebSocket over POSIX sockets and the system OpenSSL, and a local
// emulator of the service on SwiftNIO.
//===----------------------------------------------------------------------===//
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

// The emulator, the executables and the tests need SwiftNIO and swift-argument-parser; the `WebPubSub`
// and `WebSocket` libraries do not. Both packages are used only under the `Emulator` trait (on by
// default), so a consumer that depends on this package with `traits: []` resolves swift-log alone.
let emulatorOnly: TargetDependencyCondition? = .when(traits: ["Emulator"])
// The integrations each have a trait of their own, on by default here; a consumer that wants one
// names it (`traits: ["ServiceLifecycle"]`), and resolves only that package besides swift-log.
let metricsOnly: TargetDependencyCondition? = .when(traits: ["Metrics"])
let lifecycleOnly: TargetDependencyCondition? = .when(traits: ["ServiceLifecycle"])

let package = Package(
    name: "swift-webpubsub",
    platforms: [.macOS(.v13)],
    products: [
        // The library a service links: OpenSSL, Foundation, Dispatch and swift-log only.
        .library(name: "WebPubSub", targets: ["WebPubSub"]),
        .library(name: "WebSocket", targets: ["WebSocket"]),
        // The local service (SwiftNIO), for tests and development.
        .library(name: "WebPubSubEmulator", targets: ["WebPubSubEmulator"]),
        .executable(name: "webpubsub-emulator", targets: ["webpubsub-emulator"]),
        .executable(name: "webpubsub-demo", targets: ["webpubsub-demo"]),
        .executable(name: "webpubsub-bench", targets: ["webpubsub-bench"]),
        .executable(name: "autobahn-client", targets: ["autobahn-client"]),
        // A terminal client for a hub (the `wscat` habit).
        .executable(name: "webpubsub", targets: ["webpubsub-cli"]),
        // Integrations, each behind its trait: swift-metrics counters and timers; a ServiceLifecycle Service.
        .library(name: "WebPubSubMetrics", targets: ["WebPubSubMetrics"]),
        .library(name: "WebPubSubServiceLifecycle", targets: ["WebPubSubServiceLifecycle"]),
    ],
    traits: [
        .trait(name: "Emulator", description: "The SwiftNIO emulator, the executables and their dependencies (SwiftNIO, swift-argument-parser)."),
        .trait(name: "Metrics", description: "The WebPubSubMetrics product (swift-metrics)."),
        .trait(name: "ServiceLifecycle", description: "The WebPubSubServiceLifecycle product (swift-service-lifecycle)."),
        .default(enabledTraits: ["Emulator", "Metrics", "ServiceLifecycle"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CSSL",
            path: "Modules/CSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "WebSocket",
            dependencies: [
                "CSSL",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WebPubSub",
            dependencies: [
                "WebSocket",
                "CSSL",  // HMAC-SHA256 for WebPubSubClientCredential's tokens
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WebPubSubEmulator",
            dependencies: [
                "CSSL",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio", condition: emulatorOnly),
                .product(name: "NIOPosix", package: "swift-nio", condition: emulatorOnly),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: emulatorOnly),
                .product(name: "NIOWebSocket", package: "swift-nio", condition: emulatorOnly),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio", condition: emulatorOnly),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "webpubsub-emulator",
            dependencies: [
                "WebPubSubEmulator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: emulatorOnly),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "autobahn-client",
            dependencies: [
                "WebSocket",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: emulatorOnly),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "webpubsub-cli",
            dependencies: [
                "WebPubSub",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: emulatorOnly),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WebPubSubMetrics",
            dependencies: ["WebPubSub", .product(name: "Metrics", package: "swift-metrics", condition: metricsOnly)],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WebPubSubServiceLifecycle",
            dependencies: [
                "WebPubSub",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: lifecycleOnly),
            ],
            swiftSettings: swiftSettings
        ),
        // The Docs/Integrations.md daemon example (run by WebPubSubServiceLifecycleTests).
        .executableTarget(
            name: "webpubsub-lifecycle-example",
            dependencies: [
                "WebPubSub", "WebPubSubServiceLifecycle",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: lifecycleOnly),
            ],
            swiftSettings: swiftSettings
        ),
        // Runs webpubsub-emulator as a process for the demo and the benchmark (Foundation only).
        .target(
            name: "EmulatorLauncher",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "webpubsub-demo",
            dependencies: [
                "WebPubSub",
                "EmulatorLauncher",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: emulatorOnly),
            ],
            swiftSettings: swiftSettings
        ),
        // Counts the benchmark process's heap allocations (its own malloc family in front of glibc's).
        .target(name: "CAllocCounter"),
        .executableTarget(
            name: "webpubsub-bench",
            dependencies: [
                "WebPubSub",
                "EmulatorLauncher",
                "CAllocCounter",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser", condition: emulatorOnly),
            ],
            swiftSettings: swiftSettings
        ),
        // Shared by the test targets: starting and stopping real peer processes.
        .target(
            name: "TestSupport",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebSocketTests",
            dependencies: ["WebSocket", "CSSL", "TestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebPubSubEmulatorTests",
            dependencies: ["WebPubSubEmulator", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebPubSubCLITests",
            dependencies: ["webpubsub-cli", "EmulatorLauncher", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebPubSubMetricsTests",
            dependencies: [
                "WebPubSubMetrics", "WebPubSub", "WebPubSubEmulator", "TestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics", condition: metricsOnly),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebPubSubServiceLifecycleTests",
            dependencies: [
                "WebPubSubServiceLifecycle", "WebPubSub", "WebPubSubEmulator", "TestSupport", "webpubsub-lifecycle-example",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: lifecycleOnly),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebPubSubTests",
            dependencies: ["WebPubSub", "WebPubSubEmulator", "WebSocket", "TestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
