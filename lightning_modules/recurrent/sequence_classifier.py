"""Many-to-one sequence classification: the recurrent net reads a whole sequence, the class is read off
its last output. With the long-lag data (datamodules/long_lag.py) this is the LSTM-vs-Elman experiment:
the answer depends only on the first step, so the gradient that reaches it decides what can be learned.

Beside accuracy the test epoch reports ``test/grad_norm_first`` and ``test/grad_norm_last``: the norm of
d loss_i / d x_{i,t} at the first and the last step, per example, averaged over the first
``grad_batches`` test batches. Their ratio is the vanishing-gradient measure of Hochreiter (1991) and
Bengio et al. (1994): how much of the error signal survives the trip back over ``lag`` steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.classification import ClassificationModule
from lightning_modules.recurrent.stack import StackedRNN


# Adam rescales each parameter's step by its own gradient history, so a vanishing but consistent signal
# (e.g. on the input weights of the class markers, which only the first step uses) still moves its
# weights: with Adam an Elman net solved lag 60 in 2 of 3 seeds (10 epochs), so compare success rates
# over seeds. "sgd" (momentum 0.9) is the plain-gradient setting of the 1997 LSTM paper.
OPTIMIZERS = ("adam", "sgd")


class RecurrentClassifierNet(nn.Module):
    """StackedRNN -> last top-layer output -> linear map to class logits."""

    def __init__(self, input_size: int, num_classes: int, cell: str, hidden_size: int, num_layers: int,
                 dropout: float, forget_bias: float, impl: str = "auto") -> None:
        super().__init__()
        self.rnn = StackedRNN(cell, input_size, hidden_size, num_layers, dropout=dropout, forget_bias=forget_bias,
                              impl=impl)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # x [batch, T, input]; every sequence of a batch has the same length (no padding here).
        out, _ = self.rnn(x)  # [batch, T, hidden]
        return self.head(out[:, -1])  # logits [batch, num_classes]


def input_grad_norms(net: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example ``||d loss_i / d x_{i,0}||`` and ``||d loss_i / d x_{i,T-1}||``, each [batch].

    The loss is summed over the batch so each example's gradient is its own, not divided by the batch
    size. Lightning evaluates under ``torch.inference_mode``, where no graph is recorded and tensors
    made inside cannot join one; this leaves inference mode, turns grad on, and differentiates a fresh
    copy of the inputs only (``autograd.grad`` with ``inputs=x``, so no parameter .grad is touched).
    """
    # cuDNN's RNN backward runs only in training mode, and the model is in eval mode here: off for this
    # measurement (a no-op on the CPU).
    with torch.inference_mode(False), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        x = x.clone().requires_grad_(True)  # [batch, T, input], a normal tensor even if x was an inference one
        loss = F.cross_entropy(net(x), y.clone(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # [batch, T, input]
    return grad[:, 0].norm(dim=-1).detach(), grad[:, -1].norm(dim=-1).detach()


class SequenceClassifier(ClassificationModule):
    """One label per sequence from the last step; cross-entropy, Adam; accuracy and input-gradient norms."""

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
        lr: float = 3e-3,
        optimizer: str = "adam",
        grad_batches: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        for name, value, low in (("input_size", input_size, 1), ("num_classes", num_classes, 2),
                                 ("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                                 ("grad_batches", grad_batches, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.save_hyperparameters()
        self.net = RecurrentClassifierNet(input_size, num_classes, cell, hidden_size, num_layers, dropout, forget_bias,
                                          impl)
        self.init_accuracy(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)  # batches [batch, T, input], [batch]
        if batch_idx < self.hparams.grad_batches:
            x, y = batch
            first, last = input_grad_norms(self.net, x, y)  # [batch] each
            # Logged with batch_size: the epoch value is the per-example mean over the measured batches.
            self.log("test/grad_norm_first", first.mean(), on_epoch=True, batch_size=len(y), sync_dist=True)
            self.log("test/grad_norm_last", last.mean(), on_epoch=True, batch_size=len(y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def metric_settings(self) -> dict[str, str]:
        return {
            "acc": "top-1 at the last step, test split",
            "loss_unit": "nats per sequence (cross-entropy)",
            "grad_norm": f"mean over examples of ||d loss_i / d x_t|| (summed loss) at t = first and last step, "
            f"first {self.hparams.grad_batches} test batches, model in eval mode",
        }
