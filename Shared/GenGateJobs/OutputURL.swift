/// The public URL of a generation's output, served to its owner by api-ingress.
public enum OutputURL {
    public static func make(base: String, generationID: String, index: Int) -> String {
        "\(base)/v1/generations/\(generationID)/outputs/\(index)"
    }
}
