"""Engine CPU per record as the mapping grows (#23: "flat from 10,000 to 100,000 couplings"), on the real
clients (Azurite + simulators, the engine in this process, as ``bench.engine_runs``).

Two points on the same stack, fresh tables and simulators:

- **small**: ``small`` records per side, created and coupled by a full sync into an empty mapping, then a full
  sync of those ``2 small`` existing couplings;
- **large**: ``large - small`` more per side created and coupled (not measured), then ``small`` more per side
  created and coupled by a full sync next to the ``2 (large - small)`` couplings, then a full sync of all
  ``2 large`` existing couplings.

A full sync visits every record, so the large create phase also re-visits every earlier coupling; its figure
per new record is net of those re-visits (the re-visits cost what the large existing phase costs per record).
The figures are ratios large ÷ small of the same run (``bench/report.py``).
"""

from __future__ import annotations

from typing import Any

from bench.engine_runs import BC_ENTITY, BC_PREFIX, DV_ENTITY, DV_PREFIX, Phase, engine_sync
from bench.env import BenchEnv


def net_create_ms(create: Phase, revisited: int, existing_ms: float) -> float:
    """CPU ms per new record of a create phase, net of the ``revisited`` couplings it examined on the way
    (each at ``existing_ms``, the existing phase's cost per record)."""
    new = create.records
    return (create.cpu_seconds * 1000 - revisited * existing_ms) / new if new else 0.0


async def _seeded_sync(env: BenchEnv, n: int, tag: str, name: str, revisits: int) -> Phase:
    await env.bc_sim.seed(BC_ENTITY, n, f"{BC_PREFIX}{tag}-")
    await env.dv_sim.seed(DV_ENTITY, n, f"{DV_PREFIX}{tag}-")
    return await engine_sync(env, name, full=True, records=2 * n + revisits)


async def growth_scenario(env: BenchEnv, small: int, large: int) -> dict[str, Any]:
    """The two points; ``small`` and ``large`` are records per side (couplings = 2 ×)."""
    s_create = await _seeded_sync(env, small, "g0", "create + couple into an empty mapping", 0)
    s_existing = await engine_sync(env, f"existing, {2 * small} couplings", full=True, records=2 * small)
    await _seeded_sync(env, large - 2 * small, "g1", "grow (not measured)", 2 * small)
    before = 2 * (large - small)
    l_create = await _seeded_sync(env, small, "g2", f"create + couple next to {before} couplings", before)
    l_existing = await engine_sync(env, f"existing, {2 * large} couplings", full=True, records=2 * large)
    s_ex_ms = s_existing.cpu_seconds * 1000 / s_existing.records
    l_ex_ms = l_existing.cpu_seconds * 1000 / l_existing.records
    # The create phases' denominators are the new records only; the large one also re-visited ``before``.
    s_create.records, l_create.records = 2 * small, 2 * small
    small_net = net_create_ms(s_create, 0, s_ex_ms)
    large_net = net_create_ms(l_create, before, l_ex_ms)
    return {
        "small": small,
        "large": large,
        "phases": [p.as_json() for p in (s_create, s_existing, l_create, l_existing)],
        "existingMsPerRecord": {"small": round(s_ex_ms, 4), "large": round(l_ex_ms, 4)},
        "createNetMsPerRecord": {"small": round(small_net, 4), "large": round(large_net, 4)},
        "existingEntitiesPerRecord": {
            "small": round(s_existing.per_record("entitiesRead"), 3),
            "large": round(l_existing.per_record("entitiesRead"), 3),
        },
        "createTableOpsPerNewRecord": {
            "small": round(s_create.per_record("tableOps"), 4),
            "large": round(l_create.per_record("tableOps"), 4),
        },
    }


FLAT = 1.3  # large ÷ small CPU per record: "flat" allows this much (the box's run-to-run spread is ~1.5x on
# absolute times, much less on a ratio within one run)


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.report import _fig  # the report's figure shape (report imports this module)

    g = r.get("growth")
    if not g:
        return []
    out = []
    small, large = 2 * g["small"], 2 * g["large"]
    measured = (
        ("existingMsPerRecord", "full sync of existing couplings, ms/record"),
        ("createNetMsPerRecord", "full sync create + couple, ms per new record net of re-visits"),
    )
    for key, what in measured:
        v = g[key]
        ratio = round(v["large"] / v["small"], 2) if v["small"] else None
        out.append(_fig(f"Flatness {small:,} → {large:,} couplings: {what} (large ÷ small)", ratio, f"≤ {FLAT}",
                        lambda x: x <= FLAT, f"{v['small']} → {v['large']} ms"))  # fmt: skip
    e = g["existingEntitiesPerRecord"]
    out.append(_fig(f"Flatness: entities read per record, existing couplings at {large:,}", e["large"], "report",
                    None, f"at {small:,}: {e['small']}"))  # fmt: skip
    t = g["createTableOpsPerNewRecord"]
    out.append(_fig(f"Flatness: table ops per new record, create + couple next to {large - small:,} couplings",
                    t["large"], "report", None, f"into an empty mapping: {t['small']}"))  # fmt: skip
    return out
