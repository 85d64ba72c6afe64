import Logging

extension Logger {
    /// This logger with one more metadata entry: what its lines concern (`port`, `switch`, ...).
    public func with(_ key: String, _ value: String) -> Logger {
        var logger = self
        logger[metadataKey: key] = .string(value)
        return logger
    }
}
