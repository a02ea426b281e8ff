"""How a share of weights is written on screen: never a rounded 0.0 % for a model that is pruned."""


def share(x: float) -> str:
    """0 -> "0.0%"; otherwise enough decimals that a pruned model never reads as dense (0.03 % stays 0.030%)."""
    if x <= 0:
        return "0.0%"
    if x < 0.001:
        return f"{x:.3%}" if x >= 0.00001 else "<0.001%"
    if x < 0.01:
        return f"{x:.2%}"
    return f"{x:.1%}"
