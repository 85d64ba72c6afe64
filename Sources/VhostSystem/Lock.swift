import Synchronization

#if VHOST_NETMAP_TSAN
import Glibc

/// A lock (the switch lock, and the tests' models) as ThreadSanitizer builds see it (`scripts/sanitize.sh thread` defines
/// VHOST_NETMAP_TSAN): a pthread mutex, whose acquire and release TSan tracks. The standard
/// library's Mutex waits on a raw futex, which TSan cannot see, so every access the lock orders
/// would be reported as a race.
public final class Lock<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    // Behind a pointer, not a stored property: a zero-sized Value would share its address with
    // `mutex`, and the exclusivity instrumentation would report reading `mutex` as a race.
    private let value = UnsafeMutablePointer<Value>.allocate(capacity: 1)

    public init(_ initial: Value) {
        value.initialize(to: initial)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    public func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }
}
#else
/// A lock: the standard library's Mutex (a futex).
public typealias Lock<Value> = Mutex<Value>
#endif

#if canImport(Glibc)
import Glibc
#endif

/// A mutex with separate `lock` and `unlock`, for locks taken as a set (the switch's lanes, all
/// of which the control plane holds at once) or held across calls. A pthread mutex: ThreadSanitizer
/// sees its ordering, and uncontended it costs one atomic operation each way.
public final class PosixMutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    public func lock() { pthread_mutex_lock(mutex) }

    @inline(__always)
    public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    public func withLock<Result, E: Error>(_ body: () throws(E) -> Result) throws(E) -> Result {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// `count` pthread mutexes a cache line apart in one allocation, taken by index: per-slot or
/// per-ring locks on a data path, where a class per lock would be retained on every use.
/// Freed by `deallocate()` (its owner's deinit).
public struct MutexArray: @unchecked Sendable {
    private static let stride = 64
    private let base: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        precondition(MemoryLayout<pthread_mutex_t>.size <= Self.stride)
        self.count = count
        base = .allocate(byteCount: max(count, 1) * Self.stride, alignment: Self.stride)
        for i in 0..<count { pthread_mutex_init(mutex(i), nil) }
    }

    public func deallocate() {
        for i in 0..<count { pthread_mutex_destroy(mutex(i)) }
        base.deallocate()
    }

    @inline(__always)
    private func mutex(_ i: Int) -> UnsafeMutablePointer<pthread_mutex_t> {
        (base + i &* Self.stride).assumingMemoryBound(to: pthread_mutex_t.self)
    }

    @inline(__always)
    public func lock(_ i: Int) { pthread_mutex_lock(mutex(i)) }

    @inline(__always)
    public func unlock(_ i: Int) { pthread_mutex_unlock(mutex(i)) }
}
