"""The memory plan as text: the verdict, one row per component, the step time and the changes that would fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only read here; memory.check renders its plan
    from lftrain.plan.memory import MemoryPlan


def _size(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def verdict(plan: MemoryPlan) -> str:
    where = "GPU memory" if plan.device == "cuda" else "RAM"
    if plan.available_mb is None:
        return f"memory plan: {_size(plan.total_mb)} needed ({where} available unknown)"
    fits = "fits" if plan.fits else "does not fit"
    return f"memory plan: {_size(plan.total_mb)} needed, {_size(plan.available_mb)} {where} free — {fits}"


def render(plan: MemoryPlan) -> str:
    """A compact table, e.g. `memory plan: 31.2 GB needed, 22.1 GB free — does not fit`, a row per component
    (MB and share of the peak), the step time, and `would fit: adaptation.quantize: nf4 → 7.9 GB` lines."""
    lines = [verdict(plan)]
    rows = [(name, mb) for name, mb in plan.components.items() if mb >= 0.05 or name == "runtime"]
    width = max(len(name) for name, _ in rows)
    for name, mb in rows:
        share = 100 * mb / plan.total_mb if plan.total_mb else 0.0
        lines.append(f"  {name:<{width}}  {mb:>10,.1f} MB  {share:4.0f}%")
    if plan.step_seconds is not None:
        rate = plan.tokens_per_step / plan.step_seconds if plan.step_seconds > 0 else 0.0
        lines.append(f"  step: ~{plan.step_seconds:.2f} s per optimiser step ({plan.tokens_per_step:,} tokens, "
                     f"~{rate:,.0f} tokens/s; measured on one block)")
    lines += [f"  note: {note}" for note in plan.notes]
    if plan.fits is False:
        fitting = [(c, mb) for c, mb in plan.suggestions if plan.available_mb is None or mb <= plan.available_mb]
        lines += [f"would fit: `{change}` → {_size(mb)}" for change, mb in fitting]
        if not fitting:
            closest = "".join(f"; closest: `{c}` → {_size(mb)}" for c, mb in plan.suggestions[:1])
            lines.append(f"no change planned fits (a smaller model, or more memory){closest}")
    return "\n".join(lines)
