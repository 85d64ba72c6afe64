import ArgumentParser
import FoundationEssentials
import Glibc
import VhostSystem
import Netmap
import VhostNetmapBackend

/// vale-ctl's job for both switches: on the kernel's VALE through NIOCCTRL, on the embedded
/// switch through the running daemon's control socket. Same options, same listing format
/// ("NAME bridge B port P").
struct Vale: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage VALE switches and ports (vale-ctl), kernel or embedded.",
        discussion: """
          -l [NAME]           list ports (all, or one switch/port)
          -a valeX:IF         attach: kernel, a NIC or persistent port;
                              embedded, a vhost-user port (the --port syntax)
          --host valeX:IF     attach with host rings (kernel, vale-ctl -h);
                              embedded, a TAP host port
          -d valeX:IF         detach
          -n IF / -r IF       create / remove a persistent VALE interface (kernel)
          -p / -P valeX:IF    polling on / off for an attached NIC (kernel)

        The switch is the kernel's when /dev/netmap is usable (--switch auto), else the \
        daemon's.
        """,
        helpNames: [.long]
    )

    @Option(name: .customShort("a"), help: "Attach.") var attach: String?
    @Option(name: .customLong("host"), help: "Attach with host rings (kernel) or as a host port (embedded).") var attachHost: String?
    @Option(name: .customShort("d"), help: "Detach.") var detach: String?
    @Option(name: .customShort("n"), help: "Create a persistent VALE interface (kernel).") var newInterface: String?
    @Option(name: .customShort("r"), help: "Remove a persistent VALE interface (kernel).") var removeInterface: String?
    @Option(name: .customShort("p"), help: "Polling on (kernel).") var pollingOn: String?
    @Option(name: .customShort("P"), help: "Polling off (kernel).") var pollingOff: String?
    @Flag(name: .customShort("l"), help: "List ports.") var list = false
    @Argument(help: "For -l: a switch or port to list.") var listName: String?
    @Option(name: .customLong("switch"), help: "auto, kernel or embedded.") var switchMode: SwitchMode = .auto
    /// The daemon's control socket (embedded switch).
    @OptionGroup var control: ControlSocketOption

    func run() throws {
        let kernel: Bool
        switch switchMode {
        case .kernel: kernel = true
        case .embedded: kernel = false
        case .auto: kernel = NetmapAvailability.probe().isAvailable
        }
        let actions = [attach, attachHost, detach, newInterface, removeInterface, pollingOn, pollingOff].compactMap { $0 }.count + (list ? 1 : 0)
        guard actions == 1 else { throw ValidationError("give exactly one of -l, -a, --host, -d, -n, -r, -p, -P") }
        if kernel { try runKernel() } else { try runEmbedded() }
    }

    func runKernel() throws {
        do {
            if list {
                for p in try NetmapControl.listVALE(listName ?? "") { print("\(p.name) bridge \(p.bridge) port \(p.port)") }
            } else if let a = attach {
                print("ok attached \(a) port \(try NetmapControl.attach(a, hostRings: false))")
            } else if let a = attachHost {
                print("ok attached \(a) port \(try NetmapControl.attach(a, hostRings: true))")
            } else if let d = detach {
                try NetmapControl.detach(d); print("ok detached \(d)")
            } else if let n = newInterface {
                try NetmapControl.newInterface(n); print("ok created \(n)")
            } else if let r = removeInterface {
                try NetmapControl.deleteInterface(r); print("ok removed \(r)")
            } else if let p = pollingOn {
                try NetmapControl.setPolling(p, enabled: true); print("ok polling on \(p)")
            } else if let p = pollingOff {
                try NetmapControl.setPolling(p, enabled: false); print("ok polling off \(p)")
            }
        } catch {
            Posix.printError("error: \(error)\n")
            throw ExitCode(1)
        }
    }

    func runEmbedded() throws {
        let command: String
        if list { command = "list \(listName ?? "")" }
        else if let a = attach { command = "attach \(a)" }
        else if let a = attachHost { command = "attach-host \(a)" }
        else if let d = detach { command = "detach \(d)" }
        else { throw ValidationError("-n, -r, -p and -P need the netmap kernel module (the embedded switch has no persistent interfaces or polling threads)") }
        let answer = try controlAnswer(command, control: control.path)
        if answer.hasPrefix("error:") {
            Posix.printError(answer)
            throw ExitCode(1)
        }
        print(answer, terminator: "")
    }
}

/// What an operator needs to know before using the kernel path.
struct KernelCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel-check",
        abstract: "Report whether the netmap kernel module is usable: module, device, API, pools, switches.")

    func run() throws {
        var problems: [String] = []
        let loaded = FileManager.default.fileExists(atPath: "/sys/module/netmap")
        print("module:      \(loaded ? "loaded (/sys/module/netmap)" : "not loaded")")
        if !loaded { problems.append("load it: modprobe netmap (install it from upstream first: see kernel/README.md)") }
        let availability = NetmapAvailability.probe()
        switch availability {
        case .available(let memory):
            print("device:      \(NetmapControl.devicePath) opens; API \(NetmapControl.apiVersion) accepted")
            print("global memory: \(memory / 1_048_576) MiB")
            switch Result(catching: { () throws(NetmapControl.Failure) in try NetmapControl.globalPoolsInfo() }) {
            case .success(let pools):
                print("pools:       if \(pools.interfaces.total)×\(pools.interfaces.size) B, ring \(pools.rings.total)×\(pools.rings.size) B, buf \(pools.buffers.total)×\(pools.buffers.size) B")
            case .failure(let error):
                print("pools:       \(error)")
            }
            if let ports = try? NetmapControl.listVALE() {
                print("VALE ports:  \(ports.isEmpty ? "none" : "")")
                for p in ports { print("  \(p.name) bridge \(p.bridge) port \(p.port)") }
            }
        case .noDevice(let why), .apiMismatch(let why), .failed(let why):
            print("device:      \(why)")
            problems.append(why)
        }
        let parameters = "/sys/module/netmap/parameters"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: parameters) {
            let wanted = ["buf_num", "buf_size", "ring_num", "ring_size", "if_num", "priv_buf_num", "priv_ring_num", "priv_ring_size", "admode"]
            for n in names.sorted() where wanted.contains(n) {
                let v = (try? String(contentsOfFile: "\(parameters)/\(n)", encoding: .utf8))?.trimmingWhitespace ?? "?"
                print("param \(n) = \(v)")
            }
        }
        if problems.isEmpty {
            print("ok: the kernel path is usable (vhost-netmap serve --switch kernel)")
        } else {
            print("not usable: \(problems.joined(separator: "; "))")
            print("vhost-netmap will use its embedded switch (--switch auto)")
            throw ExitCode(1)
        }
    }
}
