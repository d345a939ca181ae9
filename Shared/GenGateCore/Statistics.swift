import Foundation

/// The statistics experiments are judged by. Written here because no package available to
/// GenGate has them: the normal and Student's t distributions (the t by the regularized
/// incomplete beta function, evaluated by Lentz's continued fraction as in Numerical Recipes),
/// Wilson and t confidence intervals, the two-proportion z-test, Welch's t-test, the delta
/// method for ratios, Holm's correction and sample sizes. The tests check them against SciPy.
public enum Statistics {
    // MARK: Distributions

    public static func normalCDF(_ x: Double) -> Double { 0.5 * erfc(-x / 2.0.squareRoot()) }

    /// The normal quantile: Acklam's rational approximation, refined by one Halley step (about
    /// 1e-15 relative error).
    public static func normalQuantile(_ p: Double) -> Double {
        precondition(p > 0 && p < 1, "a probability strictly between 0 and 1")
        let a = [
            -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
            -3.066479806614716e+01, 2.506628277459239e+00,
        ]
        let b = [
            -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
            -1.328068155288572e+01,
        ]
        let c = [
            -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
            4.374664141464968e+00, 2.938163982698783e+00,
        ]
        let d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
        let low = 0.02425
        var x: Double
        if p < low {
            let q = (-2 * log(p)).squareRoot()
            x =
                (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        } else if p <= 1 - low {
            let q = p - 0.5
            let r = q * q
            x =
                (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
                / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        } else {
            let q = (-2 * log(1 - p)).squareRoot()
            x =
                -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        }
        let e = normalCDF(x) - p
        let u = e * (2 * Double.pi).squareRoot() * exp(x * x / 2)
        x -= u / (1 + x * u / 2)
        return x
    }

    /// The regularized incomplete beta function I_x(a, b).
    public static func incompleteBeta(_ a: Double, _ b: Double, _ x: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let logBeta: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let logPowers: Double = a * log(x) + b * log(1 - x)
        let front = exp(logBeta + logPowers)
        // The continued fraction converges fast for x < (a + 1) / (a + b + 2); else by symmetry.
        if x < (a + 1) / (a + b + 2) { return front * betaFraction(a, b, x) / a }
        return 1 - front * betaFraction(b, a, 1 - x) / b
    }

    static func betaFraction(_ a: Double, _ b: Double, _ x: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0
        var d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...300 {
            let m = Double(m)
            var numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            h *= d * c
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let step = d * c
            h *= step
            if abs(step - 1) < 1e-15 { break }
        }
        return h
    }

    /// P(T ≤ t) for Student's t with `df` degrees of freedom.
    public static func studentTCDF(_ t: Double, df: Double) -> Double {
        let tail = 0.5 * incompleteBeta(df / 2, 0.5, df / (df + t * t))
        return t >= 0 ? 1 - tail : tail
    }

    /// The t quantile, by bisection on the CDF (monotone; 200 halvings reach the double's precision).
    public static func studentTQuantile(_ p: Double, df: Double) -> Double {
        precondition(p > 0 && p < 1, "a probability strictly between 0 and 1")
        var low = -1e6
        var high = 1e6
        for _ in 0..<200 {
            let middle = (low + high) / 2
            if studentTCDF(middle, df: df) < p { low = middle } else { high = middle }
            if high - low < 1e-13 * max(1, abs(middle)) { break }
        }
        return (low + high) / 2
    }

    // MARK: Samples

    public static func mean(_ values: [Double]) -> Double {
        values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
    }

    /// The sample variance (n − 1).
    public static func variance(_ values: [Double]) -> Double {
        guard values.count > 1 else { return .nan }
        let m = mean(values)
        return values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)
    }

    /// The `q` quantile by linear interpolation between order statistics (NumPy's default).
    public static func quantile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let position = q * Double(sorted.count - 1)
        let below = Int(position.rounded(.down))
        let above = min(below + 1, sorted.count - 1)
        return sorted[below] + (sorted[above] - sorted[below]) * (position - Double(below))
    }

    /// Wilson's score interval for a proportion.
    public static func wilson(successes: Int, trials: Int, confidence: Double = 0.95) -> (Double, Double) {
        guard trials > 0 else { return (.nan, .nan) }
        let z = normalQuantile(1 - (1 - confidence) / 2)
        let n = Double(trials)
        let p = Double(successes) / n
        let centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        let half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)).squareRoot()
        return (centre - half, centre + half)
    }

    /// The t interval for a mean.
    public static func meanInterval(_ values: [Double], confidence: Double = 0.95) -> (Double, Double) {
        guard values.count > 1 else { return (.nan, .nan) }
        let n = Double(values.count)
        let half = studentTQuantile(1 - (1 - confidence) / 2, df: n - 1) * (variance(values) / n).squareRoot()
        let m = mean(values)
        return (m - half, m + half)
    }

    // MARK: Tests

    /// A test's statistic and two-sided p-value.
    public struct Outcome: Sendable, Equatable {
        public var statistic: Double
        public var pValue: Double
        /// Degrees of freedom, for t-tests.
        public var df: Double?
    }

    /// The two-proportion z-test with a pooled proportion.
    public static func twoProportion(_ x1: Int, _ n1: Int, _ x2: Int, _ n2: Int) -> Outcome? {
        guard n1 > 0, n2 > 0 else { return nil }
        let pooled = Double(x1 + x2) / Double(n1 + n2)
        let se = (pooled * (1 - pooled) * (1 / Double(n1) + 1 / Double(n2))).squareRoot()
        let difference = Double(x1) / Double(n1) - Double(x2) / Double(n2)
        guard se > 0 else { return Outcome(statistic: 0, pValue: difference == 0 ? 1 : 0) }
        let z = difference / se
        return Outcome(statistic: z, pValue: 2 * normalCDF(-abs(z)))
    }

    /// Welch's unequal-variances t-test (as `scipy.stats.ttest_ind(equal_var=False)`).
    public static func welch(_ a: [Double], _ b: [Double]) -> Outcome? {
        guard a.count > 1, b.count > 1 else { return nil }
        let va = variance(a) / Double(a.count)
        let vb = variance(b) / Double(b.count)
        let difference = mean(a) - mean(b)
        guard va + vb > 0 else { return Outcome(statistic: 0, pValue: difference == 0 ? 1 : 0, df: nil) }
        let t = difference / (va + vb).squareRoot()
        let df = (va + vb) * (va + vb) / (va * va / Double(a.count - 1) + vb * vb / Double(b.count - 1))
        return Outcome(statistic: t, pValue: 2 * studentTCDF(-abs(t), df: df), df: df)
    }

    /// A ratio of sums (Σ numerator / Σ denominator over the same units) and its variance by the
    /// delta method.
    public static func ratio(_ numerator: [Double], _ denominator: [Double]) -> (value: Double, variance: Double)? {
        let n = Double(numerator.count)
        guard numerator.count > 1, numerator.count == denominator.count else { return nil }
        let meanX = mean(numerator)
        let meanY = mean(denominator)
        guard meanY > 0 else { return nil }
        let r = meanX / meanY
        var covariance = 0.0
        for (x, y) in zip(numerator, denominator) { covariance += (x - meanX) * (y - meanY) }
        covariance /= n - 1
        let v = (variance(numerator) - 2 * r * covariance + r * r * variance(denominator)) / (n * meanY * meanY)
        return (r, max(0, v))
    }

    /// The z-test of two ratios by their delta-method variances.
    public static func ratioTest(_ a: (value: Double, variance: Double), _ b: (value: Double, variance: Double))
        -> Outcome
    {
        let se = (a.variance + b.variance).squareRoot()
        guard se > 0 else { return Outcome(statistic: 0, pValue: a.value == b.value ? 1 : 0) }
        let z = (a.value - b.value) / se
        return Outcome(statistic: z, pValue: 2 * normalCDF(-abs(z)))
    }

    /// Holm's step-down correction: each p-value adjusted for the family it is in.
    public static func holm(_ pValues: [Double]) -> [Double] {
        let order = pValues.indices.sorted { pValues[$0] < pValues[$1] }
        var adjusted = [Double](repeating: 1, count: pValues.count)
        var running = 0.0
        for (rank, index) in order.enumerated() {
            running = max(running, min(1, Double(pValues.count - rank) * pValues[index]))
            adjusted[index] = running
        }
        return adjusted
    }

    // MARK: Sample sizes

    /// Units per group a two-sided two-proportion test at `alpha` needs to find `p1` ≠ `p2` with
    /// `power`; nil when they are equal.
    public static func sampleSize(proportions p1: Double, _ p2: Double, alpha: Double, power: Double = 0.8)
        -> Int?
    {
        guard p1 != p2 else { return nil }
        let za = normalQuantile(1 - alpha / 2)
        let zb = normalQuantile(power)
        let average = (p1 + p2) / 2
        let top = za * (2 * average * (1 - average)).squareRoot() + zb * (p1 * (1 - p1) + p2 * (1 - p2)).squareRoot()
        return count(top * top / ((p1 - p2) * (p1 - p2)))
    }

    /// Units per group a two-sided test of means at `alpha` needs to find a difference of
    /// `difference` with standard deviation `sd` with `power`; nil for no difference.
    public static func sampleSize(difference: Double, sd: Double, alpha: Double, power: Double = 0.8) -> Int? {
        guard difference != 0, sd.isFinite else { return nil }
        let z = normalQuantile(1 - alpha / 2) + normalQuantile(power)
        return count(2 * z * z * sd * sd / (difference * difference))
    }

    /// A sample size as a count; nil past a billion (a difference too small to be worth finding,
    /// or a rounding error) or when it is not a number.
    static func count(_ size: Double) -> Int? {
        guard size.isFinite, size <= 1e9 else { return nil }
        return Int(size.rounded(.up))
    }
}
