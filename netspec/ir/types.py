"""Tensor types: a shape in NCHW order whose batch dimension may be the symbol 'N'."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

BATCH = "N"  # the symbolic batch dimension


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int | str, ...]  # (batch, C, H, W) for images, (batch, features) after flatten
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batch(self) -> int | str:
        return self.shape[0]

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape without the batch dimension."""
        return tuple(self.shape[1:])  # type: ignore[arg-type]

    @property
    def c(self) -> int:
        return self.shape[1]  # type: ignore[return-value]

    @property
    def h(self) -> int:
        return self.shape[2]  # type: ignore[return-value]

    @property
    def w(self) -> int:
        return self.shape[3]  # type: ignore[return-value]

    def with_batch(self, batch: int | str) -> "TensorType":
        return TensorType((batch,) + self.dims, self.dtype)

    def with_dims(self, *dims: int) -> "TensorType":
        return TensorType((self.batch,) + tuple(dims), self.dtype)

    def numel(self, batch: int = 1) -> int:
        """Element count, with a symbolic batch taken as `batch`."""
        b = batch if isinstance(self.batch, str) else self.batch
        return b * prod(self.dims)

    def __str__(self) -> str:
        return "×".join(str(d) for d in self.shape)

    def dims_str(self) -> str:
        return "×".join(str(d) for d in self.dims)
