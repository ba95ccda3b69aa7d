"""Parent runs that group nested ones in the MLflow UI: a claim's cell-seeds sit under one run named ``claim:NAME``
(as a study's trials sit under ``study:NAME``, see study/tune.py), so the runs list shows one row per claim that
opens onto its cells instead of every cell-seed in one flat list.

A claim's parent is only a folder: it is created FINISHED (nothing to leave RUNNING when a worker dies), found
again by its tags by every later worker and rerun, and carries the claim's statement as its note.
"""

from __future__ import annotations

from typing import Any


def claim_parent_tags(name: str, statement: str, opts: Any) -> dict[str, str]:
    """{"mlflow.parentRunId": id} of claim ``name``'s parent run (made on first use) in the suite's experiment."""
    from mlflow.tracking import MlflowClient

    from benchmarks.run.tracking import artifact_location, ensure_tracking_store, tracking_uri

    uri = tracking_uri(opts.project_dir)
    ensure_tracking_store(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(opts.mlflow_experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(opts.mlflow_experiment,
                                                                   artifact_location=artifact_location(opts.project_dir))
    found = client.search_runs([exp_id], filter_string=f"tags.`archbench.role` = 'claim' and tags.`archbench.claim` = '{name}'",
                               max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return {"mlflow.parentRunId": found[0].info.run_id}
    run = client.create_run(exp_id, run_name=f"claim:{name}",
                            tags={"archbench.role": "claim", "archbench.claim": name, "mlflow.note.content": statement})
    client.set_terminated(run.info.run_id, "FINISHED")
    return {"mlflow.parentRunId": run.info.run_id}
