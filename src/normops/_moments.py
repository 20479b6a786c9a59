"""Chan's pairwise combination of per-channel moments: the count, mean and M2 =
sum((x - mean)^2) of two disjoint sets of values give those of their union exactly (no
E[x^2] - E[x]^2). Precise BN pools batches with it; synchronized BN pools ranks.

Plain arithmetic operators only, so it runs on the arrays of any library."""


def combine(count_a, mean_a, m2_a, count_b, mean_b, m2_b):
    """(count, mean, m2) of the union of the sets a and b. With count_a = 0 the result is
    b's bitwise (mean_a and m2_a are then ignored, as zeros); count_b = 0 returns a."""
    if count_b == 0:
        return count_a, mean_a, m2_a
    total = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / total)
    m2 = m2_a + m2_b + delta * delta * (count_a * count_b / total)
    return total, mean, m2
