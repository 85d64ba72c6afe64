import Glibc

/// Runs each body on a thread of its own (pthreads, which ThreadSanitizer follows) and waits
/// for all of them.
public func runConcurrently(_ bodies: [() -> Void]) {
    final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
    let threads = bodies.map { body -> pthread_t in
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(Box(body)).toOpaque())
        precondition(rc == 0)
        return t
    }
    for t in threads { pthread_join(t, nil) }
}
