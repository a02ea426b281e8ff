"""LRP weight relevance (paper Eq. 8): R_W = W * dT/dW where the backward pass follows
LRP rules (AttnLRP or CP-LRP from lxt) instead of the plain chain rule.

Under lxt's Gradient x Input formulation, relevance is gradient times input once the
non-linear operations (norms, gates, softmax) are given LRP rules; for a linear layer
the relevance of weight w_ij summed over tokens is exactly w_ij times its gradient. So
the accumulation is the gradient scorer's; the runner applies the rules around it
(`lrp_rules` in the registry entry).
"""

from core.attribution.scorers.gradient import accumulate, finish, finish_units

__all__ = ["accumulate", "finish", "finish_units"]
