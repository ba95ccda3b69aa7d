"""Restamp a finished study whose base experiment has since taken values only for the keys the study searches.

A study's stamp (spec.definition_hash) is what its trials' values depend on. Stamps written before the base's
searched keys were left out of it change when the base takes the study's best (``latent_dim: 16`` after
``gan_latent``), so such a study reads as stale though nothing its trials ran changed. ``archbench tune NAME
--restamp-from OLD_PARAMS`` proves the stored stamp is the definition in OLD_PARAMS (the params.yaml the study ran
under, e.g. ``git show <commit>:params.yaml``), that OLD_PARAMS and today's params.yaml define the same study
under the current form, and only then writes the current stamp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError


def restamp(params: dict[str, Any], name: str, old_params: dict[str, Any], project_dir: Path) -> str:
    """Write the current stamp on study ``name``; returns it. One-line errors when the proof does not hold."""
    import optuna

    from benchmarks.core.params import experiment_from_params
    from benchmarks.study.spec import definition_hash, legacy_definition_hash, study_config
    from benchmarks.study.storage import shown_url, storage_url

    conf, old_conf = study_config(params, name), study_config(old_params, name)
    base = experiment_from_params(params, conf["experiment"])
    old_base = experiment_from_params(old_params, old_conf["experiment"])
    digest, old_digest = definition_hash(conf, base), definition_hash(old_conf, old_base)
    if old_digest != digest:
        raise ArchbenchError(f"cannot restamp study {name}: the old params define it differently from params.yaml "
                             f"beyond the searched keys ({old_digest} vs {digest}); rerun it under a new name")
    url = storage_url(params, project_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise ArchbenchError(f"cannot restamp study {name}: {shown_url(url)} holds no study of that name") from None
    stored = study.user_attrs.get("definition_hash")
    if stored == digest:
        return digest
    if stored not in (legacy_definition_hash(old_conf, old_base), old_digest):
        raise ArchbenchError(f"cannot restamp study {name}: its stamp {stored} is not the definition in the old "
                             f"params; give the params.yaml it ran under (git show <commit>:params.yaml)")
    study.set_user_attr("definition_hash", digest)
    study.set_user_attr("restamped_from", stored)
    return digest
