"""One seed of one experiment, as the steps it takes: prepare, open tracking, fit, record, publish, close.

The numbers are made by ``run/fit.py`` (seeding, the Trainer, fit and test); everything here carries them, and
in an order that keeps them safe whatever fails around the run:

1. ``prepare``: every check that needs no data, then the data, the model and the fingerprint (config, data
   and code hashes). A seed that already finished under this fingerprint is not trained again: ``finish_again``
   writes its results from ``done.json``.
2. ``choose_start``: its own last checkpoint, or another run's (``--continue-from``, ``continues:``), which must
   hold this model's weights.
3. ``open_tracking``: the MLflow run (the same one when resuming), through a ``TrackerLink`` that keeps writes in
   an outbox while the server is down; earlier runs' outboxes are sent first.
4. ``fit``: ``fit_and_test``, with a watch that fences every checkpoint and value against a lost lease.
5. ``record``: the result and its provenance in ``done.json``; from here the numbers are safe on disk.
6. ``publish``: results/<exp>/seeds/seed_N (atomically; ``result.json`` last).
7. ``close_tracking``: tags, checkpoints and result.json to MLflow, the run FINISHED, the outbox sent.

When a step fails, ``stopped`` decides what the failure means (see its table): only a failure of the numbers
themselves marks the run FAILED and drops its checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import FULL, DiskFullError, atomic_write_text, errno_in_chain
from benchmarks.core.params import Experiment
from benchmarks.run.leases import LeaseLost
from benchmarks.run.resumable_logger import describe_experiment, make_logger
from benchmarks.run.run_state import (DONE, Fingerprint, check_checkpoint, check_compatible, continued_checkpoint,
                                      discard_checkpoints, finished, remove_temporaries, resume_point, write_done,
                                      write_fingerprint)
from benchmarks.run.tracker_link import TrackerLink, TrackerUnreachable, flush_outboxes
from benchmarks.run.train import RunOptions, is_global_zero, seed_state_dir, validate_run
from lightning_modules.contracts import model_settings


class SeedRun:
    def __init__(self, exp: Experiment, seed: int, opts: RunOptions) -> None:
        from benchmarks.run.tracking import tracking_uri

        self.exp, self.seed, self.opts = exp, seed, opts
        self.rank0 = is_global_zero()
        self.state = seed_state_dir(exp, seed, opts)
        self.uri = tracking_uri(opts.project_dir)
        self.link: TrackerLink | None = None
        self.logger: Any = None
        self.run_id: str | None = None
        self.fitting = False  # True once fit has begun: a failure from there on is one of the numbers
        self.safe = False  # True once done.json holds the numbers

    @property
    def again(self) -> str:
        return f"`archbench train {self.exp.name} --seed {self.seed}`"

    def fence(self, what: str = "anything") -> None:
        if self.rank0 and self.opts.lease is not None:
            self.opts.lease.check(what)

    # ---- the steps -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.prepare()
        done = finished(self.state, self.fp) if self.opts.resume else None
        if done is not None:
            return self.finish_again(done)
        self.choose_start()
        try:
            self.open_tracking()  # from the moment its run exists, a failure closes it (see stopped)
            fitted = self.fit()
            done = self.record(fitted)
            self.publish(done)
            self.close_tracking(done)
        except BaseException as exc:
            instead = self.stopped(exc)
            if instead is None:
                raise
            raise instead from None
        finally:
            if self.link is not None:
                self.link.close()
        return returned(done)

    def prepare(self) -> None:
        import torch

        from benchmarks.core.provenance import code_hash
        from benchmarks.run.fit import seed_and_build

        self.cpu_started = time.process_time()  # data and model building count too (run/compute.py)
        self.args = validate_run(self.exp, self.opts)
        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
        self.dm, self.model = seed_and_build(self.exp, self.seed, self.opts.data_dir, self.opts.datamodule,
                                             self.opts.model_overrides)
        self.fp = Fingerprint(self.exp.config_hash(), self.dm.content_hash(), code_hash(self.exp))
        # Trainable parameters, so models of "comparable size" can be checked rather than assumed.
        self.n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def choose_start(self) -> None:
        """The checkpoint this seed starts from (its own last one, or another run's), and the options it implies."""
        opts, exp = self.opts, self.exp
        run_id_file = self.state / "run_id"
        self.previous_run = run_id_file.read_text().strip() if self.rank0 and run_id_file.is_file() else None
        if self.rank0:
            resume_from = resume_point(self.state, self.fp, opts.resume, exp.name)
        else:  # rank 0 has already decided and cleared; the other ranks follow what is on disk
            last = self.state / "ckpt" / "last.ckpt"
            resume_from = str(last) if opts.resume and last.is_file() else None
        if resume_from is None and opts.continue_from is None and exp.continues:
            opts = replace(opts, continue_from=continued_checkpoint(exp, self.seed, opts))
        if resume_from is None and opts.continue_from is not None:
            ckpt = Path(opts.continue_from)
            if not ckpt.is_file():
                raise ArchbenchError(f"--continue-from {ckpt}: no such checkpoint; pass a run's ckpt/last.ckpt "
                                     f"(under {opts.state_dir / 'runs'}) or drop the option")
            check_checkpoint(ckpt, exp.name)
            check_compatible(ckpt, self.model, exp.name)
            resume_from = str(ckpt)
            opts = replace(opts, tags=opts.tags | {"continued_from": resume_from})
        self.resume_from, self.opts = resume_from, opts
        self.resumes_own = resume_from is not None and opts.continue_from is None

    def open_tracking(self) -> None:
        from benchmarks.core.provenance import git_commit
        from benchmarks.run.resumable_logger import LinkedClient
        from benchmarks.run.tracking import ensure_tracking_store

        self.commit = git_commit(self.opts.project_dir)
        self.link = TrackerLink(self.uri, self.opts.outbox(), f"{self.exp.name}.seed{self.seed}",
                                fence=(lambda: self.fence("a tracked value")) if self.opts.lease else None)
        if not self.rank0:
            self.logger = make_logger(self.exp, self.seed, self.opts, None, self.commit, self.link)
            return
        flush_outboxes(self.opts.outbox(), self.uri)  # what earlier runs could not send: the next contact is now
        write_fingerprint(self.state, self.fp)
        if not self.resumes_own and self.previous_run:
            # A killed run that will not be resumed (killed before its first checkpoint, or its state no longer
            # matches) is closed as KILLED, never left RUNNING.
            LinkedClient(self.link).end_run(self.previous_run, "KILLED")
        self.link.retried(ensure_tracking_store, self.uri)  # two jobs on a fresh checkout race to create it
        own = self.previous_run if self.resumes_own else None
        self.logger = make_logger(self.exp, self.seed, self.opts, own, self.commit, self.link)
        self.run_id = self.logger.run_id
        self.fence("its MLflow run id")
        atomic_write_text(self.state / "run_id", self.run_id)
        # The MLflow UI opens on the experiment: say what it holds (once; later runs leave it as it is).
        describe_experiment(self.logger.experiment, self.logger.experiment_id)
        if self.opts.on_run_created is not None:
            self.opts.on_run_created(self.run_id)
        self.log_hyperparams()

    def log_hyperparams(self) -> None:
        from benchmarks.run.tracking import flatten, package_versions

        # The model's own arguments reach MLflow through Lightning (save_hyperparameters); these are the rest.
        extra = {f"exp.{k}": v for k, v in flatten(self.exp.as_dict()).items() if not k.startswith("model_args.")}
        self.logger.log_hyperparams(extra | {"seed": self.seed, "data_hash": self.fp.data_hash, "git_commit": self.commit,
                                             "code_hash": self.fp.code_hash, "config_hash": self.fp.config_hash,
                                             "parameters": self.n_params} | package_versions())

    def fit(self) -> Any:
        from benchmarks.run.compute import CpuClock
        from benchmarks.run.fit import fit_and_test
        from benchmarks.run.watch import RunWatch

        watch = RunWatch(self.fence if self.opts.lease else None, self.link)
        self.clock = CpuClock(self.state, resumed=self.resumes_own, started=self.cpu_started)
        self.fitting = True
        return fit_and_test(self.exp, self.seed, self.model, self.dm, self.args, self.state, self.logger,
                            self.resume_from, extra_callbacks=[self.clock, *self.opts.extra_callbacks, watch],
                            monitor=self.opts.monitor, progress_bar=self.opts.progress_bar,
                            divergence_ratio=self.opts.divergence_ratio, skip_test=self.opts.skip_test)

    def record(self, fitted: Any) -> dict[str, Any]:
        """The result (what DVC hashes) and its provenance, in done.json: from here the numbers are safe."""
        import torch

        from benchmarks.core.provenance import lock_state, machine

        args, exp, fp = self.args, self.exp, self.fp
        result = {
            "experiment": exp.name, "seed": self.seed, "metrics": fitted.metrics, "stopped_by": fitted.stopped_by,
            "epochs": fitted.epochs, "steps": fitted.steps,
            "budget": {k: args.get(k) for k in ("max_epochs", "max_steps", "max_time")},
            "config_hash": fp.config_hash, "code_hash": fp.code_hash, "data_hash": fp.data_hash,
            "settings": {"data_hash": fp.data_hash, "data": self.dm.describe(), "config_hash": fp.config_hash,
                         "parameters": self.n_params} | model_settings(self.model),
        }
        provenance = {"run_id": self.run_id, "tracking_uri": self.uri, "git_commit": self.commit,
                      "dvc_lock": lock_state(self.opts.project_dir), "machine": machine(torch.get_num_threads()),
                      "device": str(self.model.device), "fit_s": fitted.fit_s, "cpu_s": self.clock.total(),
                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        done = {"result": result, "provenance": provenance, "fingerprint": fp.__dict__, "run_id": self.run_id,
                "checkpoints": {"best": fitted.best_path, "last": fitted.last_path}, "tracked": False}
        if self.rank0:
            self.fence("its result")
            write_done(self.state, done)
            self.safe = True
        return done

    def publish(self, done: dict[str, Any]) -> None:
        from benchmarks.run.results import write_seed_results

        if self.rank0 and self.opts.results_dir is not None:
            self.fence("its result files")
            write_seed_results(self.opts.results_dir / self.exp.name, self.state, done["checkpoints"]["best"],
                               done["result"], done["provenance"])

    def close_tracking(self, done: dict[str, Any]) -> None:
        from benchmarks.run.resumable_logger import LinkedClient

        if not self.rank0 or self.link is None:
            return
        client, run_id = LinkedClient(self.link), done["run_id"]
        self.link.holding = True  # the whole closing sequence goes out, or waits in the outbox, in one piece
        try:
            client.set_tag(run_id, "stopped_by", done["result"]["stopped_by"])
            for path in (done["checkpoints"]["best"], done["checkpoints"]["last"]):
                if path:
                    client.log_artifact(run_id, path, "checkpoints")
            client.log_dict(run_id, done["result"] | {"provenance": done["provenance"]}, "result.json")
            client.set_terminated(run_id, "FINISHED")
        finally:
            self.link.holding = False
        hint = ("the results are safe on disk; the next archbench run sends the rest (and closes the MLflow run) once "
                "the server answers")
        self.link.finish(hint=hint)
        self.log_model(done, hint)
        write_done(self.state, done | {"tracked": True})

    def log_model(self, done: dict[str, Any], hint: str) -> None:
        """The best checkpoint as an MLflow Model (run/model_logging.py), once the run's own writes are sent: it
        talks to MLflow on its own, so it is retried within the window like a read, and redone by the next run of
        this seed (done.json's ``tracked`` stays false) when the server stays away."""
        from benchmarks.run.model_logging import log_seed_model

        try:
            self.link.retried(log_seed_model, self.exp, self.seed, done["checkpoints"]["best"], done["run_id"],
                              self.uri, self.opts.tags)
        except TrackerUnreachable:
            raise self.link.give_up(hint) from None

    def finish_again(self, done: dict[str, Any]) -> dict[str, Any]:
        """A seed that finished training earlier (its results not yet written, or asked for again): its results
        and, if the tracker did not get them, its tracking, from done.json, with no training."""
        if not self.rank0:
            return returned(done)
        print(f"archbench: {self.exp.name} seed {self.seed} already trained under this config, data and code "
              f"({self.state / DONE}); writing its results from there (--restart trains it again)", flush=True)
        self.run_id = done["run_id"]
        self.link = TrackerLink(self.uri, self.opts.outbox(), f"{self.exp.name}.seed{self.seed}",
                                fence=(lambda: self.fence("a tracked value")) if self.opts.lease else None)
        try:
            flush_outboxes(self.opts.outbox(), self.uri)
            self.publish(done)
            if not done.get("tracked"):
                self.close_tracking(done)
        finally:
            self.link.close()
        return returned(done)

    # ---- when a step fails -------------------------------------------------------------------------------
    def stopped(self, exc: BaseException) -> BaseException | None:
        """What a failure means for the run; returns the one-line error to raise instead, or None to re-raise.

        | failure                               | MLflow run      | checkpoints |
        | lost lease                            | left to the new holder          |
        | tracker outage past the window        | KILLED (outbox) | kept        |
        | Ctrl-C, SIGTERM, full disk            | KILLED          | kept        |
        | anything after done.json              | KILLED          | kept        |
        | a pruned trial                        | KILLED          | dropped     |
        | anything else (divergence, a bug)     | FAILED          | dropped     |
        | ... before fit began                  | FAILED          | kept        |
        """
        if not self.rank0:
            return None
        if isinstance(exc, LeaseLost) or (self.opts.lease is not None and not self.opts.lease.held()):
            return exc if isinstance(exc, LeaseLost) else None
        remove_temporaries(self.state)
        full = errno_in_chain(exc, FULL)
        if isinstance(exc, TrackerUnreachable) and self.link is not None:
            if self.safe:
                return None  # the closing sequence (FINISHED last) waits in the outbox
            self.link.drop_after_checkpoint()
            self._end("KILLED")
            return self.link.give_up(f"checkpoints kept in {self.state / 'ckpt'}; {self.again} resumes in the same "
                                     f"MLflow run once the server answers, and sends what waits")
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or full is not None or self.safe:
            self._end("KILLED")
            if full is not None and not isinstance(exc, DiskFullError):
                # Lightning writes a checkpoint through a temporary file elsewhere (fsspec's /tmp), so the error's
                # own file name may not be the folder that is full.
                named = Path(full.filename).resolve() if isinstance(full.filename, str) else None
                ours = [p.resolve() for p in (self.state, self.opts.results_dir) if p is not None]
                where = named if named and any(named.is_relative_to(p) for p in ours) else self.state / "ckpt"
                return DiskFullError(where, self._checkpoint_size(), f"checkpoints kept; {self.again} resumes")
            return None
        self._end("KILLED" if is_pruned(exc) else "FAILED")
        if self.fitting:
            discard_checkpoints(self.state)  # a failed run leaves nothing that a later run would resume
        return None

    def _end(self, status: str) -> None:
        from benchmarks.run.resumable_logger import LinkedClient

        if self.run_id is None or self.link is None:
            return
        try:
            LinkedClient(self.link).set_terminated(self.run_id, status)
        except TrackerUnreachable:
            pass  # the status waits in the outbox, sent on the next contact

    def _checkpoint_size(self) -> int:
        """What a checkpoint of this run takes: the last one written, else the weights and Adam's two moments."""
        last = self.state / "ckpt" / "last.ckpt"
        if last.is_file():
            return last.stat().st_size
        return 3 * sum(p.numel() * p.element_size() for p in self.model.parameters())


# ---- helpers ----------------------------------------------------------------------------------------------
def returned(done: dict[str, Any]) -> dict[str, Any]:
    """What run_seed returns: the result, with the run id, provenance and timing."""
    result, prov = done["result"], done["provenance"]
    return result | {"run_id": done["run_id"], "provenance": prov,
                     "timing": {"fit_s": prov.get("fit_s"), "epochs": result["epochs"], "device": prov.get("device")}}


def is_pruned(exc: BaseException) -> bool:
    from optuna.exceptions import TrialPruned

    return isinstance(exc, TrialPruned)
