// swift-tools-version:6.1
import PackageDescription

// One module per layer; data flows guest ring → port → switch → port → ring.
//   CVhostShim / CURing   C: only what Swift cannot reach (CMSG macros, ioctl numbers, liburing)
//   VhostSystem           thin typed syscall wrappers (eventfd, memfd, mmap, unix sockets with SCM_RIGHTS)
//   URing                 io_uring event loop (control plane and datapath sleep/wake)
//   VhostUser             the vhost-user wire protocol: framing, payload codecs, feature bits
//   Virtio                guest memory, split virtqueues (device side), descriptor chains, virtio-net header
//   VALESwitch            the embedded VALE-compatible learning switch and its port abstraction
//   CNetmap / Netmap      the netmap user ABI (declared once, in C): names, ring views, control requests, syncs
//   DataPath              every switch port (virtio device, netmap kernel port, TAP host port on io_uring
//                         fixed buffers) and the switch worker thread that runs them
//   VhostNetmapBackend    the control plane: vhost-user devices, the daemon, its control socket
//   vhost-netmap          the command line
//   CLibvirt / CLibXML2 / LibvirtIntegration / vhost-netmap-libvirt   libvirt through its C API
//                         (`vhost-netmap libvirt watch|attach` execs this binary: the daemon never loads libvirt)
//   PacketGenerator / pkt-gen   netmap pkt-gen's options and output over netmap, AF_PACKET, TAP, vhost-user
// The three data-path modules (Virtio, VALESwitch, DataPath) skip Swift's dynamic exclusivity
// checks: their rings and ports are used by one switch worker thread under the switch lock, and the
// checks cost ~40% of a 64-byte packet's time (measured with perf; see docs/architecture.md).
// Control code keeps them. Cross-module optimisation lets small helpers (headers, segment cursors,
// ring indices, netmap ring views) inline across the Virtio → switch → port boundaries.
let datapathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"]),
]
let inlinableSettings: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"])]

let package = Package(
    name: "vhost-netmap",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vhost-netmap", targets: ["vhost-netmap"]),
        .executable(name: "pkt-gen", targets: ["pkt-gen"]),
        .executable(name: "vhost-netmap-libvirt", targets: ["vhost-netmap-libvirt"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        .target(name: "CVhostShim", cSettings: [.define("_GNU_SOURCE")]),
        .systemLibrary(name: "CURing", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        .target(name: "VhostSystem", dependencies: [
            "CVhostShim",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "URing", dependencies: [
            "CURing", "CVhostShim",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "VhostUser", dependencies: [
            "VhostSystem",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "Virtio", dependencies: [
            "VhostSystem", "CVhostShim",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: datapathSettings),
        .target(name: "VALESwitch", dependencies: ["Virtio", "VhostSystem"], swiftSettings: datapathSettings),
        .target(name: "CNetmap"),
        .target(name: "Netmap", dependencies: [
            "CNetmap", "VhostSystem",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: inlinableSettings),
        .target(name: "DataPath", dependencies: [
            "VALESwitch", "Virtio", "Netmap", "URing", "VhostSystem",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: datapathSettings),
        .target(name: "VhostNetmapBackend", dependencies: [
            "VhostUser", "Virtio", "VALESwitch", "URing", "VhostSystem", "DataPath", "Netmap",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "vhost-netmap", dependencies: [
            "VhostNetmapBackend", "Netmap", "VALESwitch", "VhostSystem", .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        .systemLibrary(name: "CLibXML2", pkgConfig: "libxml-2.0", providers: [.apt(["libxml2-dev"])]),
        .target(name: "LibvirtIntegration", dependencies: ["CLibvirt", "CLibXML2", "CVhostShim", "VhostNetmapBackend", "VhostSystem"]),
        .executableTarget(name: "vhost-netmap-libvirt", dependencies: [
            "LibvirtIntegration", "VhostNetmapBackend", "VhostSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "PacketGenerator", dependencies: [
            "CVhostShim", "Netmap", "VhostSystem", "VhostUser", "Virtio",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .executableTarget(name: "pkt-gen", dependencies: ["PacketGenerator"]),
        .target(name: "TestSupport", dependencies: ["Netmap", "CNetmap", "VhostSystem"], path: "Tests/TestSupport"),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "VhostSystem", "TestSupport"]),
        .testTarget(name: "PacketGeneratorTests", dependencies: ["PacketGenerator"]),
        .testTarget(name: "NetmapTests", dependencies: ["Netmap", "CNetmap", "DataPath", "VALESwitch", "Virtio", "VhostSystem", "TestSupport"]),
        .testTarget(name: "URingTests", dependencies: ["URing", "VhostSystem"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "VhostSystem", "TestSupport"]),
        .testTarget(name: "LibvirtIntegrationTests", dependencies: ["LibvirtIntegration", "VhostNetmapBackend"]),
        .testTarget(name: "VALESwitchTests", dependencies: ["VALESwitch", "Virtio", "VhostSystem", "TestSupport"]),
        // Fuzz targets (scripts/fuzz.sh builds them with libFuzzer; a plain build replays files).
        .target(name: "CFuzzDriver", path: "Tests/Fuzz/CFuzzDriver"),
        .executableTarget(name: "FuzzFraming", dependencies: [
            "CFuzzDriver", "VhostNetmapBackend", "VALESwitch", "VhostSystem", "VhostUser",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/Fuzz/FuzzFraming"),
        .executableTarget(name: "FuzzChainWalker", dependencies: ["CFuzzDriver", "Virtio", "VhostSystem"], path: "Tests/Fuzz/FuzzChainWalker"),
        .executableTarget(name: "FuzzNames", dependencies: ["CFuzzDriver", "Netmap", "VhostNetmapBackend"], path: "Tests/Fuzz/FuzzNames"),
        .executableTarget(name: "FuzzPktGenOptions", dependencies: ["CFuzzDriver", "PacketGenerator"], path: "Tests/Fuzz/FuzzPktGenOptions"),
        .executableTarget(name: "FuzzControl", dependencies: [
            "CFuzzDriver", "VhostNetmapBackend", "URing", .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/Fuzz/FuzzControl"),
        .executableTarget(name: "FuzzMemoryTable", dependencies: ["CFuzzDriver", "Virtio", "VhostSystem"], path: "Tests/Fuzz/FuzzMemoryTable"),
        .executableTarget(name: "FuzzNetmapRing", dependencies: ["CFuzzDriver", "DataPath", "Netmap", "VALESwitch", "Virtio"], path: "Tests/Fuzz/FuzzNetmapRing"),
        .executableTarget(name: "FuzzDomainXML", dependencies: ["CFuzzDriver", "LibvirtIntegration", "VhostNetmapBackend"], path: "Tests/Fuzz/FuzzDomainXML"),
        .executableTarget(name: "FuzzRXWriter", dependencies: ["CFuzzDriver", "DataPath", "VALESwitch", "Virtio", "VhostSystem"], path: "Tests/Fuzz/FuzzRXWriter"),
        .testTarget(name: "BackendTests", dependencies: [
            "VhostNetmapBackend", "VhostUser", "Virtio", "VALESwitch", "VhostSystem", "TestSupport", "DataPath", "Netmap",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
