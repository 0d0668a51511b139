"""The example tabular model and its ONNX export.

The model normalises its raw (encoded) input itself, with mean/std buffers taken from the training
matrix, so the exported ONNX graph consumes exactly what `FeatureEncoder.encode_table` produces.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

ONNX_OPSET = 17
OUTPUT_NAME = "score"


class TabularModel(nn.Module):
    """Normalisation -> MLP (ReLU, dropout) -> one logit; `forward` returns probabilities, shape (N,)."""

    def __init__(self, width: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.width = int(width)
        self.hidden = [int(h) for h in hidden]
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        layers: list[nn.Module] = []
        prev = width
        for h in self.hidden:
            if h < 1:
                raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.mlp = nn.Sequential(*layers)

    def set_normalisation(self, x: np.ndarray) -> None:
        """Set the input normalisation from the training matrix (columns with std 0 are left as is)."""
        x = np.asarray(x, dtype=np.float64)
        mean = np.nanmean(x, axis=0) if len(x) else np.zeros(self.width)
        std = np.nanstd(x, axis=0) if len(x) else np.ones(self.width)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp((x - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """Probabilities (N,); `logits=True` gives the raw logits, for the training loss (through DDP)."""
        out = self.logits(x)
        return out if logits else torch.sigmoid(out)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Probabilities for a float32 matrix, in eval mode, without gradients."""
    inner = getattr(model, "module", model)
    device = next(inner.parameters()).device
    was_training = inner.training
    inner.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(np.ascontiguousarray(x[start : start + batch_size]), dtype=torch.float32)
            out.append(inner(batch.to(device)).cpu().numpy())
    inner.train(was_training)
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def export_onnx(model: nn.Module, width: int, input_name: str = "features", opset: int = ONNX_OPSET) -> bytes:
    """The model as one self-contained ONNX file: input `input_name` (N, width) float32, output "score" (N,).

    Uses the TorchScript-based exporter (`dynamo=False`), which still works in torch 2.13 (it warns
    that it is deprecated) and needs only the `onnx` package, not onnxscript.
    """
    inner = copy.deepcopy(getattr(model, "module", model)).cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            inner,
            (torch.zeros(2, width, dtype=torch.float32),),
            buf,
            dynamo=False,
            input_names=[input_name],
            output_names=[OUTPUT_NAME],
            dynamic_axes={input_name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    return buf.getvalue()
