"""Checks GenGate's experiment results against SciPy on the same samples.

Usage: check_results.py FILE, where FILE holds {"samples": [...], "results": {...}} as the test
wrote them: each sample {"variant", "status", "duration", "cost", "outputs", "rating"}, and the
results as GET /v1/admin/experiments/{id}/results answers them. Every figure is recomputed here
with SciPy and NumPy (Holm's correction by its definition) and compared; any difference is
printed and the exit status is 1.
"""

import json
import math
import sys

import numpy as np
from scipy import stats

TOLERANCE = 1e-6


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def main(path):
    data = json.load(open(path))
    samples, results = data["samples"], data["results"]
    problems = []

    def check(what, ours, theirs):
        if not close(ours, theirs):
            problems.append(f"{what}: GenGate {ours}, SciPy {theirs}")

    groups = {}
    for variant in results["variants"]:
        name = variant["name"]
        mine = [s for s in samples if s["variant"] == name]
        ended = [s for s in mine if s["status"] in ("completed", "failed")]
        successes = sum(1 for s in ended if s["status"] == "completed")
        durations = np.array([s["duration"] for s in mine if s["status"] == "completed"], dtype=float)
        ratings = np.array([s["rating"] for s in mine if s["rating"] is not None], dtype=float)
        costs = np.array([s["cost"] for s in ended], dtype=float)
        outputs = np.array([s["outputs"] for s in ended], dtype=float)
        groups[name] = dict(
            n=len(ended), x=successes, durations=durations, ratings=ratings, costs=costs, outputs=outputs)

        # Success rate: Wilson's interval.
        z = stats.norm.ppf(0.975)
        n, p = len(ended), successes / len(ended)
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        check(f"{name} success rate", variant["success_rate"]["value"], p)
        check(f"{name} success rate ci low", variant["success_rate"]["ci"][0], centre - half)
        check(f"{name} success rate ci high", variant["success_rate"]["ci"][1], centre + half)

        # Durations and ratings: means with t intervals; durations' percentiles as NumPy's.
        for key, values, mean_key in (("duration_seconds", durations, "mean"), ("rating", ratings, "mean")):
            low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
            check(f"{name} {key} mean", variant[key][mean_key], values.mean())
            check(f"{name} {key} ci low", variant[key]["ci"][0], low)
            check(f"{name} {key} ci high", variant[key]["ci"][1], high)
        check(f"{name} duration p50", variant["duration_seconds"]["p50"], np.percentile(durations, 50))
        check(f"{name} duration p95", variant["duration_seconds"]["p95"], np.percentile(durations, 95))

        # Cost per successful output: a ratio of means, its variance by the delta method.
        r, v = ratio(costs, outputs)
        check(f"{name} cost per output", variant["cost_per_successful_output"]["value"], r)
        check(f"{name} cost ci low", variant["cost_per_successful_output"]["ci"][0], r - z * math.sqrt(v))
        check(f"{name} cost ci high", variant["cost_per_successful_output"]["ci"][1], r + z * math.sqrt(v))

    # Every comparison's p-value, and Holm's correction over all of them.
    raw = []
    for comparison in results["comparisons"]:
        a, b = groups[comparison["variant"]], groups[comparison["against"]]
        metric = comparison["metric"]
        if metric == "success_rate":
            pooled = (a["x"] + b["x"]) / (a["n"] + b["n"])
            se = math.sqrt(pooled * (1 - pooled) * (1 / a["n"] + 1 / b["n"]))
            zed = (a["x"] / a["n"] - b["x"] / b["n"]) / se
            p = 2 * stats.norm.sf(abs(zed))
        elif metric in ("duration", "rating"):
            key = "durations" if metric == "duration" else "ratings"
            p = stats.ttest_ind(a[key], b[key], equal_var=False).pvalue
        else:
            ra, va = ratio(a["costs"], a["outputs"])
            rb, vb = ratio(b["costs"], b["outputs"])
            p = 2 * stats.norm.sf(abs((ra - rb) / math.sqrt(va + vb)))
        raw.append(p)
        check(f"{metric} {comparison['variant']} vs {comparison['against']} p", comparison["p_value"], p)
    order = sorted(range(len(raw)), key=lambda i: raw[i])
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(raw) - rank) * raw[index]))
        comparison = results["comparisons"][index]
        check(f"{comparison['metric']} {comparison['variant']} vs {comparison['against']} adjusted",
              comparison["adjusted_p_value"], running)
        if comparison["significant"] != (running < results["alpha"]):
            problems.append(f"{comparison['metric']}: significance {comparison['significant']} at {running}")

    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"checked {len(results['variants'])} variants and {len(raw)} comparisons against SciPy")


def ratio(numerator, denominator):
    n = len(numerator)
    mx, my = numerator.mean(), denominator.mean()
    r = mx / my
    cov = np.cov(numerator, denominator, ddof=1)
    v = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * my * my)
    return r, max(0.0, v)


if __name__ == "__main__":
    main(sys.argv[1])
