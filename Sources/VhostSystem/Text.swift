extension StringProtocol {
    /// The text without leading and trailing whitespace (spaces, tabs, CR, LF and the rest of
    /// Unicode's whitespace): what Foundation's trimmingCharacters(in:) did, without Foundation.
    public var trimmingWhitespace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[first...last])
        return String(out)
    }
}
