"""The rounds' schedule: each round keeps (1 - rate) of what the one before kept, down to the size goals (parameters, and
MACs where --keep-macs sets a goal); as many rounds as the smaller goal needs."""

from __future__ import annotations

from toolchain.config import PruneConfig, rounds_to


def _shrink_fraction(config: PruneConfig, r: int) -> float:
    return (1 - config.rate) ** r


def round_target(config: PruneConfig, r: int) -> float:
    """Fraction of the dense parameters round r keeps."""
    return max(config.keep_params, _shrink_fraction(config, r))


def round_mac_target(config: PruneConfig, r: int) -> float | None:
    """Fraction of the dense MACs round r may keep: MACs shrink at the parameters' pace down to keep_macs; None without a
    MAC goal."""
    if config.keep_macs >= 1:
        return None
    return max(config.keep_macs, _shrink_fraction(config, r))


def n_rounds(config: PruneConfig) -> int:
    return max(rounds_to(g, config.rate) for g in (config.keep_params, config.keep_macs))
