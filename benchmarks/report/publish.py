"""``archbench publish``: experiments, claims and studies into ledger/, by name or by kind.

A bare name is looked up among the experiments, claims and studies of params.yaml; a name that is more
than one of them must be given with ``--experiment``, ``--claim`` or ``--study``. Every record is built
(and so checked) before any is written, so a refusal leaves ledger/ as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError

KINDS = ("experiment", "claim", "study")
ARTICLE = {"experiment": "an experiment", "claim": "a claim", "study": "a study"}


def known(params: dict[str, Any]) -> dict[str, set[str]]:
    from benchmarks.core.params import experiment_names

    return {"experiment": set(experiment_names(params)),
            "claim": set(params.get("claims") or {}) | set(params.get("full_claims") or {}),
            "study": set(params.get("studies") or {}) | set(params.get("full_studies") or {})}


def resolve(params: dict[str, Any], names: list[str], explicit: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(kind, name) for every bare name and every --experiment/--claim/--study, in the order given."""
    table = known(params)
    chosen: list[tuple[str, str]] = []
    for name in names:
        kinds = [k for k in KINDS if name in table[k]]
        if not kinds:
            raise ArchbenchError(f"cannot publish '{name}': it is no experiment, claim or study of params.yaml; "
                                 f"`archbench list` names them")
        if len(kinds) > 1:
            raise ArchbenchError(f"cannot publish '{name}': it is both {' and '.join(ARTICLE[k] for k in kinds)}; say "
                                 f"which with " + " or ".join(f"--{k} {name}" for k in kinds))
        chosen.append((kinds[0], name))
    for kind in KINDS:
        for name in explicit.get(kind) or []:
            if name not in table[kind]:
                raise ArchbenchError(f"cannot publish {kind} '{name}': params.yaml defines no such {kind} (known: "
                                     f"{', '.join(sorted(table[kind])) or 'none'})")
            chosen.append((kind, name))
    if not chosen:
        raise ArchbenchError("nothing to publish: name an experiment, a claim or a study (e.g. `archbench publish "
                             "words_lstm`, `archbench publish --claim long_lag`)")
    return chosen


def publish_all(params: dict[str, Any], names: list[str], explicit: dict[str, list[str]], results_dir: Path,
                project_dir: Path = Path("."), allow_missing: bool = False) -> list[str]:
    """Build every record, then write them; returns one line per record written. ``allow_missing``: publish an
    experiment's current seeds although some are missing or stale (ledger.check_complete)."""
    from benchmarks.core.params import experiment_from_params, settings
    from benchmarks.core.provenance import code_hash
    from benchmarks.report.ledger import build_record, ledger_dir_for, publish
    from benchmarks.report.publish_claims import claim_record, publish_claim
    from benchmarks.report.publish_studies import publish_study, study_record
    from benchmarks.run.results import data_hash

    data_dir = settings(params)["data_dir"]
    built: list[tuple[str, str, dict[str, Any]]] = []
    for kind, name in resolve(params, names, explicit):
        if kind == "claim":
            built.append((kind, name, claim_record(params, name, results_dir, data_dir)))
        elif kind == "study":
            built.append((kind, name, study_record(params, name, project_dir, data_dir)))
        else:  # checked here (config, code and data); publish() builds it again as it writes
            exp = experiment_from_params(params, name)
            built.append((kind, name, build_record(exp, results_dir, code_hash(exp), data_hash(exp, data_dir),
                                                   allow_missing)))
    ledger, lines = ledger_dir_for(results_dir), []
    for kind, name, record in built:
        if kind == "experiment":
            path = publish(params, name, results_dir, allow_missing=allow_missing)
            lines.append(f"published {name} -> {path} (and {path.parent / 'metrics' / path.name}); commit ledger/ to share it")
        elif kind == "claim":
            path = publish_claim(record, ledger)
            lines.append(f"published claim {name} ({record['outcome'] or 'not judged'}) -> {path}; commit it")
        else:
            path = publish_study(record, ledger)
            lines.append(f"published study {name} (best {record['metric']} {record['best']['value']:.4g}) -> {path}; "
                         f"commit it")
    return lines
