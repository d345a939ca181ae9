extension Duration {
    /// The duration in seconds, fractions included (`Duration` gives whole seconds and
    /// attoseconds apart).
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
