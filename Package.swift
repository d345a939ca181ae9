// swift-tools-version:6.0
import PackageDescription

/// GenGate: a self-hosted gateway for AI generation jobs.
/// `Shared/` holds the libraries the services share, one per concern; `Services/` holds one
/// folder per executable. Services never import each other.
let package = Package(
    name: "GenGate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "gengate", targets: ["gengate"]),
        .executable(name: "api-ingress", targets: ["api-ingress"]),
        .executable(name: "dispatcher", targets: ["dispatcher"]),
        .executable(name: "poller", targets: ["poller"]),
        .executable(name: "uploader", targets: ["uploader"]),
        .executable(name: "monitor", targets: ["monitor"]),
        .executable(name: "provider-sim", targets: ["provider-sim"]),
        .executable(name: "gengate-bench", targets: ["gengate-bench"]),
        // The Swift client of GenGate's HTTP API, for applications.
        .library(name: "GenGateClient", targets: ["GenGateClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.25.0"),
    ],
    targets: [
        // C shims
        .systemLibrary(
            name: "CZeroMQ",
            path: "Shared/CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        .systemLibrary(
            name: "CVips",
            path: "Shared/CVips",
            pkgConfig: "vips",
            providers: [.apt(["libvips-dev"])]
        ),
        // Fixed-argument wrappers over libvips' variadic C API, which Swift cannot call.
        .target(name: "CGenGateVips", dependencies: ["CVips"], path: "Shared/CGenGateVips"),

        // Shared libraries
        .target(
            name: "GenGateCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            path: "Shared/GenGateCore"
        ),
        .target(
            name: "GenGateBus",
            dependencies: ["CZeroMQ", "GenGateCore"],
            path: "Shared/GenGateBus"
        ),
        .target(
            name: "GenGateStore",
            dependencies: ["GenGateCore", .product(name: "GRDB", package: "GRDB.swift")],
            path: "Shared/GenGateStore"
        ),
        // The PostgreSQL backend of the store, for several hosts.
        .target(
            name: "GenGatePostgres",
            dependencies: [
                "GenGateCore", "GenGateStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Shared/GenGatePostgres"
        ),
        .target(
            name: "GenGateObjects",
            dependencies: [
                "GenGateCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Shared/GenGateObjects"
        ),
        .target(
            name: "GenGateProviders",
            dependencies: [
                "GenGateCore", "GenGateObjects",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Shared/GenGateProviders"
        ),
        // Simulators of the providers' real HTTP APIs, for tests and for trying GenGate without keys.
        .target(
            name: "GenGateProviderSim",
            dependencies: [
                "GenGateCore", "GenGateProviders", "GenGateObjects",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Shared/GenGateProviderSim"
        ),
        // Image inputs: checking them (sniffed format, header, a full decode) and preparing them
        // for a provider (libvips), off the cooperative pool and bounded in memory.
        .target(
            name: "GenGateImages",
            dependencies: [
                "CGenGateVips", "GenGateCore", "GenGateObjects",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Shared/GenGateImages"
        ),
        .target(
            name: "GenGateJobs",
            dependencies: [
                "GenGateCore", "GenGateStore", "GenGateProviders", "GenGateObjects",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/GenGateJobs"
        ),
        // What the monitor makes of the event stream and the store: windows of figures, alert
        // rules, and alert delivery (webhook, Slack, email).
        .target(
            name: "GenGateMonitoring",
            dependencies: [
                "GenGateCore", "GenGateStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Shared/GenGateMonitoring"
        ),
        .target(
            name: "GenGateClient",
            dependencies: [
                "GenGateCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Shared/GenGateClient"
        ),
        .target(
            name: "GenGateRuntime",
            dependencies: [
                "GenGateCore", "GenGateBus", "GenGateStore", "GenGatePostgres", "GenGateObjects", "GenGateProviders",
                "GenGateJobs",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Shared/GenGateRuntime"
        ),
        // Input images in the job engine (where they are kept, how a submission prepares them):
        // apart from GenGateJobs and GenGateRuntime so that only the processes that handle
        // images (api-ingress, the dispatcher) link libvips and the hundred libraries it loads.
        .target(
            name: "GenGateImageInputs",
            dependencies: [
                "GenGateCore", "GenGateStore", "GenGateProviders", "GenGateObjects", "GenGateImages", "GenGateJobs",
                "GenGateRuntime",
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Shared/GenGateImageInputs"
        ),

        // Executables
        .executableTarget(
            name: "api-ingress",
            dependencies: [
                "GenGateRuntime", "GenGateImages", "GenGateImageInputs",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Services/api-ingress"
        ),
        .executableTarget(
            name: "dispatcher", dependencies: ["GenGateRuntime", "GenGateImageInputs"], path: "Services/dispatcher"),
        .executableTarget(name: "poller", dependencies: ["GenGateRuntime"], path: "Services/poller"),
        .executableTarget(name: "uploader", dependencies: ["GenGateRuntime"], path: "Services/uploader"),
        .executableTarget(
            name: "monitor",
            dependencies: [
                "GenGateRuntime", "GenGateMonitoring", "GenGateObjects", "GenGateStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Services/monitor"
        ),
        .executableTarget(
            name: "gengate",
            dependencies: [
                "GenGateRuntime", "GenGateProviderSim", "GenGateClient", "GenGateObjects",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Services/gengate"
        ),

        .executableTarget(
            name: "provider-sim",
            dependencies: [
                "GenGateProviderSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Services/provider-sim"
        ),

        .target(name: "GenGateLocalPorts", path: "Shared/GenGateLocalPorts"),

        // Benchmarks
        .executableTarget(
            name: "gengate-bench",
            dependencies: [
                "GenGateCore",
                "GenGateBus",
                "GenGateImages",
                "GenGateLocalPorts",
                "GenGateObjects",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/gengate-bench"
        ),

        // Tests
        .testTarget(name: "GenGateCoreTests", dependencies: ["GenGateCore"]),
        .testTarget(name: "GenGateBusTests", dependencies: ["GenGateBus"]),
        .testTarget(
            name: "GenGateStoreTests",
            dependencies: [
                "GenGateStore", "GenGatePostgres", "GenGateLocalPorts", .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .testTarget(
            name: "GenGateProvidersTests",
            dependencies: [
                "GenGateProviders", "GenGateObjects", "GenGateProviderSim",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "GenGateJobsTests",
            dependencies: ["GenGateJobs", "GenGateStore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .testTarget(
            name: "GenGateMonitoringTests",
            dependencies: [
                "GenGateMonitoring", "GenGateStore", "GenGateCore", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "GenGateRuntimeTests", dependencies: ["GenGateRuntime", "GenGateObjects"]),
        .testTarget(name: "GenGateImagesTests", dependencies: ["GenGateImages", "GenGateCore", "GenGateObjects"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "GenGateCore",
                "GenGateMonitoring",
                "GenGateClient",
                "GenGateLocalPorts",
                "GenGateBus",
                "GenGateStore",
                "GenGateProviders",
                "GenGateObjects",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ]
)
