"""Licences of the data sources and the base model, and whether they allow the run's intended use.

The table covers common licences; each entry says whether commercial use is allowed and which conditions
travel with a model trained on the material. It is a first check that names the reason, not legal advice:
`warn` means "allowed, with conditions you must meet", `refuse` means "this use is not allowed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Licence:
    name: str
    family: str  # permissive | attribution | share-alike | non-commercial | no-derivatives | copyleft | rail | terms
    commercial: bool
    conditions: str = ""


_P = "permissive"
TABLE: dict[str, Licence] = {
    "apache-2.0": Licence("Apache-2.0", _P, True, "keep the licence and NOTICE file"),
    "mit": Licence("MIT", _P, True, "keep the copyright and licence notice"),
    "bsd-2-clause": Licence("BSD-2-Clause", _P, True, "keep the copyright and licence notice"),
    "bsd-3-clause": Licence("BSD-3-Clause", _P, True, "keep the notice; no endorsement by the authors' names"),
    "cc0-1.0": Licence("CC0-1.0", _P, True),
    "unlicense": Licence("Unlicense", _P, True),
    "cc-by-4.0": Licence("CC-BY-4.0", "attribution", True, "credit the source"),
    "cc-by-3.0": Licence("CC-BY-3.0", "attribution", True, "credit the source"),
    "cc-by-sa-4.0": Licence("CC-BY-SA-4.0", "share-alike", True,
                            "credit the source; adaptations must be shared under CC-BY-SA (whether a trained "
                            "model is an adaptation is unsettled)"),
    "cc-by-sa-3.0": Licence("CC-BY-SA-3.0", "share-alike", True, "credit the source; share adaptations alike"),
    "cc-by-nd-4.0": Licence("CC-BY-ND-4.0", "no-derivatives", True,
                            "no adaptations may be shared; a fine-tuned model may count as one"),
    "cc-by-nc-4.0": Licence("CC-BY-NC-4.0", "non-commercial", False, "non-commercial use only; credit the source"),
    "cc-by-nc-3.0": Licence("CC-BY-NC-3.0", "non-commercial", False, "non-commercial use only; credit the source"),
    "cc-by-nc-sa-4.0": Licence("CC-BY-NC-SA-4.0", "non-commercial", False,
                               "non-commercial use only; share adaptations alike"),
    "cc-by-nc-nd-4.0": Licence("CC-BY-NC-ND-4.0", "non-commercial", False,
                               "non-commercial use only; no adaptations may be shared"),
    "gpl-2.0": Licence("GPL-2.0", "copyleft", True, "distributed derivatives must be GPL with source"),
    "gpl-3.0": Licence("GPL-3.0", "copyleft", True, "distributed derivatives must be GPL with source"),
    "lgpl-3.0": Licence("LGPL-3.0", "copyleft", True, "modified library code must stay LGPL"),
    "agpl-3.0": Licence("AGPL-3.0", "copyleft", True,
                        "derivatives offered over a network must be AGPL with source"),
    "openrail": Licence("OpenRAIL", "rail", True, "the use restrictions must be passed on to every user"),
    "openrail-m": Licence("OpenRAIL-M", "rail", True, "the use restrictions must be passed on to every user"),
    "creativeml-openrail-m": Licence("CreativeML-OpenRAIL-M", "rail", True, "the use restrictions must be passed on"),
    "bigscience-openrail-m": Licence("BigScience-OpenRAIL-M", "rail", True, "the use restrictions must be passed on"),
    "llama2": Licence("Llama 2 Community License", "terms", True,
                      "acceptable use policy; a licence from Meta above 700M monthly users"),
    "llama3": Licence("Llama 3 Community License", "terms", True,
                      "acceptable use policy; 'Built with Llama'; model names start with 'Llama'; "
                      "a licence from Meta above 700M monthly users"),
    "gemma": Licence("Gemma Terms of Use", "terms", True,
                     "prohibited use policy; pass the terms on with the model or its derivatives"),
}
_ALIASES = {"apache 2.0": "apache-2.0", "apache2": "apache-2.0", "apache license 2.0": "apache-2.0",
            "apache software license": "apache-2.0", "mit license": "mit", "bsd": "bsd-3-clause",
            "bsd-3": "bsd-3-clause", "cc0": "cc0-1.0", "cc-by": "cc-by-4.0", "cc-by-sa": "cc-by-sa-4.0",
            "cc-by-nc": "cc-by-nc-4.0", "cc-by-nc-sa": "cc-by-nc-sa-4.0", "gpl": "gpl-3.0", "gplv3": "gpl-3.0",
            "gpl-3.0-or-later": "gpl-3.0", "gpl-2.0-or-later": "gpl-2.0", "agpl": "agpl-3.0",
            "agpl-3.0-or-later": "agpl-3.0", "llama3.1": "llama3", "llama3.2": "llama3", "llama3.3": "llama3",
            "llama 3": "llama3", "llama 2": "llama2", "gemma terms of use": "gemma"}


def lookup(name: str | None) -> Licence | None:
    if not name:
        return None
    key = re.sub(r"\s+", " ", name.strip().lower())
    key = _ALIASES.get(key, key)
    return TABLE.get(key) or TABLE.get(key.replace(" ", "-"))


def verdict(name: str | None, use: str, what: str) -> dict[str, Any]:
    """{"source", "licence", "verdict": ok|warn|refuse, "reason"} for one source under `use`."""
    lic = lookup(name)
    out: dict[str, Any] = {"source": what, "licence": name, "use": use}
    if name is None:
        return {**out, "verdict": "warn", "reason": f"no licence declared for {what}; you cannot tell whether "
                f"{use} use is allowed"}
    if lic is None:
        return {**out, "verdict": "warn", "reason": f"'{name}' is not in lftrain's licence table; check its terms "
                f"for {use} use yourself"}
    out["family"] = lic.family
    if use == "commercial" and not lic.commercial:
        return {**out, "verdict": "refuse", "reason": f"{lic.name} forbids commercial use ({lic.conditions})"}
    if lic.family in ("permissive", "attribution"):
        return {**out, "verdict": "ok", "reason": lic.conditions or "no conditions"}
    if use == "research" and lic.family in ("non-commercial", "copyleft"):
        return {**out, "verdict": "ok", "reason": lic.conditions}
    return {**out, "verdict": "warn", "reason": f"{lic.name}: {lic.conditions}"}


def model_licence_metadata(model_dir: Path, spec: str | None = None) -> dict[str, Any]:
    """What the base model says about its own licence: its model card's `license:` front matter, and for
    `pkg:` models the package's declared licence. Empty when neither says anything."""
    found: dict[str, Any] = {}
    card = Path(model_dir) / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                front = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
            if isinstance(front, dict) and front.get("license"):
                found["model_card"] = str(front["license"])
                if front.get("datasets"):
                    found["trained_on"] = [str(d) for d in front["datasets"]][:50]
    if spec and spec.startswith("pkg:"):
        pkg = package_licence(spec[4:].split("/", 1)[0])
        if pkg:
            found["package"] = pkg
    return found


def package_licence(module: str) -> str | None:
    """The licence an installed package declares (License-Expression, License, or a licence classifier)."""
    dists = metadata.packages_distributions().get(module.replace("-", "_"), [])
    for dist in dists:
        md = metadata.metadata(dist)
        value = md.get("License-Expression") or md.get("License")
        if value and len(value) < 80:
            return f"{dist}: {value}"
        classifiers = [c.rsplit("::", 1)[-1].strip() for c in md.get_all("Classifier") or [] if "License ::" in c]
        if classifiers:
            return f"{dist}: {classifiers[0]}"
    return None


def check_licences(recipe, sources: dict[str, Any], model_meta: dict[str, Any]) -> dict[str, Any]:
    """Verdicts for every data source and the base model under `output.intended_use`."""
    use = recipe.output.intended_use
    declared = recipe.data.licence
    rows = []
    for role, src in sources.items():
        name = (declared.get(role) if isinstance(declared, dict) else declared) or src.get("card_licence")
        rows.append({**verdict(name, use, f"data '{role}' ({src['path']})"),
                     **({"package_licence": src["package_licence"]} if src.get("package_licence") else {})})
    model_name = recipe.model.licence or model_meta.get("model_card")
    model_row = verdict(model_name, use, f"base model ({recipe.model.path})")
    model_row["declared_in"] = "recipe" if recipe.model.licence else ("model card" if model_name else None)
    model_row["metadata"] = model_meta
    rows.append(model_row)
    worst = "refuse" if any(r["verdict"] == "refuse" for r in rows) else (
        "warn" if any(r["verdict"] == "warn" for r in rows) else "ok")
    return {"intended_use": use, "verdict": worst, "sources": rows}
