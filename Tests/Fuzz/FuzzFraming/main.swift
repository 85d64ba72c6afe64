import CFuzzDriver
import Glibc
import Logging
import VALESwitch
import VhostNetmapBackend
import VhostSystem
import VhostUser

// A front-end's byte stream into a device: framed by MessageReader as the socket delivers it
// (a message's descriptors come with its first chunk: the top two bits of that chunk's first
// byte say how many, alternately a dup of the guest memory file and an eventfd, and are then
// cleared), decoded and
// applied by VhostNetDevice, the switch run after each message. The same input is also the
// guest's memory (1 MiB memfd), so rings a message sets up read fuzzed descriptors. Nothing may
// crash, hang or fault; refusals are the expected outcome.
let quiet = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
let memorySize = 1 << 20
let guestFile = try! MemFD.make(name: "fuzz-guest", size: memorySize)
let guestView = try! MemoryMapping(descriptor: guestFile.rawValue, length: memorySize)
let vale = VALESwitch(name: "vale0")

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, count in
    guard let data else { return 0 }
    memset(guestView.base, 0, memorySize)
    memcpy(guestView.base, data, min(count, memorySize))
    let device = try! VhostNetDevice(name: "vale0:f", queuePairs: 2, vale: vale, logger: quiet, wakeWorker: {})
    defer { device.detachFromSwitch() }
    let reader = MessageReader()
    var offset = 0
    var messages = 0
    var atMessageStart = true
    while offset < count && messages < 64 {
        let n = min(reader.wantedLength, count - offset)
        guard n > 0 else { break }
        var descriptors: [OwnedDescriptor] = []
        var chunk = Array(UnsafeRawBufferPointer(start: data + offset, count: n))
        if atMessageStart {
            for k in 0..<Int(chunk[0] >> 6) {
                descriptors.append(k % 2 == 0 ? OwnedDescriptor(adopting: dup(guestFile.rawValue)) : try! EventFD.make())
            }
            // The two bits chose descriptors; the request is what is left (so SET_MEM_TABLE, ADD_MEM_REG,
            // SET_LOG_BASE and SET_INFLIGHT_FD arrive with theirs).
            chunk[0] &= 0x3f
            atMessageStart = false
        }
        do {
            if let m = try chunk.withUnsafeBytes({ b in try reader.consume(b, descriptors: descriptors) }) {
                messages += 1
                atMessageStart = true
                _ = try? device.handle(m)
                _ = vale.lock.withLock { _ in vale.runPass(budget: 64) }
            }
        } catch {
            break  // a framing error closes the connection
        }
        offset += n
    }
    return 0
})
