"""An MLflow logger whose run can be resumed under changed code.

MLflow params are write-once: logging ``git_commit`` again after a new commit, or a model argument whose
code default changed, raises "Changing param values is not allowed", so a killed run could not resume once
the code moved on. Here a resumed run keeps the values it started with as params; every value that differs
now goes to a tag ``changed_on_resume.<key>`` = "<old> -> <new>", so the run says what changed mid-way.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

# Lightning's MLFlowLogger stores str(value)[:250]; the comparison must see the same strings.
PARAM_CHARS = 250


class ResumableMLFlowLogger(MLFlowLogger):
    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        flat = {k: _one_line(v) for k, v in _flatten_dict(_convert_params(params)).items()}
        logged = self.experiment.get_run(self.run_id).data.params
        changed = {k: v for k, v in flat.items() if k in logged and logged[k] != v}
        for key, value in changed.items():
            self.experiment.set_tag(self.run_id, f"changed_on_resume.{key}", f"{logged[key]} -> {value}")
        fresh = {k: v for k, v in flat.items() if k not in logged}
        if fresh:
            super().log_hyperparams(fresh)


def _one_line(value: Any) -> str:
    """A param as one line: control characters (a vocabulary's end-of-word newline) are shown escaped."""
    text = str(value)
    if any(ch in text for ch in "\n\r\t"):
        text = text.encode("unicode_escape").decode("ascii")
    return text[:PARAM_CHARS]
