"""The sections every report ends with, from one walk over provenance: what the spec
changed against the paper (deviations) and every value the paper leaves open
(assumptions), from the configurations, the snapshot selection, the study's options and the
study's own additions."""

from __future__ import annotations

from typing import Any

from medtl.experiments.spec import Experiment


def provenance_sections(experiment: Experiment, groups: dict[str, dict[str, dict[str, Any]]],
                        selection: dict[str, Any], *, deviations: list[str],
                        assumptions: list[str]) -> list[str]:
    """Markdown: '## Deviations from the paper' and '## Assumptions'.

    `groups`: option group -> protocol values (`medtl.config.protocol_values`), each marked
    `assumed` or `set_by_user`; `selection`: the runs' snapshot selection with provenance."""
    devs = list(experiment.deviations())
    for group, values in groups.items():
        for key, value in sorted(values.items()):
            if value.get("set_by_user"):
                default = value["default"]
                origin = default.get("source") or f"assumed: {default.get('assumed', '')}"
                devs.append(f"{_label(group, key)} = {value['value']!r} (default "
                            f"{default['value']!r}; {origin})")
    devs += deviations
    lines = ["", "## Deviations from the paper (set by the spec)", ""]
    lines += [f"- {d}" for d in _unique(devs)] or ["- none"]

    found: dict[str, str] = {}
    for cfg in experiment.configurations:
        for key, reason in cfg.assumptions().items():
            found.setdefault(f"`{key}`", reason)
    notes = [f"- {k}: {v}" for k, v in sorted(found.items())]
    if "assumed" in selection:
        notes.append(f"- snapshot selection `{selection['value']}`: {selection['assumed']}")
    for group, values in groups.items():
        notes += [f"- {_label(group, key)} = {value['value']!r}: {value['assumed']}"
                  for key, value in sorted(values.items()) if "assumed" in value]
    notes += [f"- {a}" for a in assumptions]
    lines += ["", "## Assumptions (values the paper leaves open)", ""]
    lines += _unique(notes) or ["- none"]
    return lines


def _label(group: str, key: str) -> str:
    """`dataset` + `seed` -> dataset `seed`; `adapter` + `snake.kappa` -> adapter.snake `kappa`."""
    section, _, leaf = key.rpartition(".")
    return f"{group}.{section} `{leaf}`" if section else f"{group} `{key}`"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
