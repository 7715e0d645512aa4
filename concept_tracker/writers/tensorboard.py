"""A thin TensorBoard writer: lazy, main-process only, and never fatal to training.

Wraps ``torch.utils.tensorboard.SummaryWriter``:

- the event file is opened on the first write, so building a tracker creates nothing;
- off global rank 0 every call does nothing;
- a value that cannot be logged is dropped with one warning per tag, never an exception; an
  ``OSError`` (a full disk, a folder gone) is the event file's, not the value's: one warning
  for the whole writer, also when flushing or closing fails;
- an existing ``SummaryWriter`` (for example a Lightning ``TensorBoardLogger.experiment``)
  can be passed in; it is flushed but not closed, since its owner closes it.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from ..distributed import is_main_process

F = TypeVar("F", bound=Callable[..., Any])


def _main_process_only(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: TensorBoardWriter, *args: Any, **kwargs: Any) -> Any:
        if is_main_process():
            return method(self, *args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]


class TensorBoardWriter:
    """Scalars, histograms, figures, text and a custom layout for one run.

    Args:
        log_dir: directory of the event file (created on the first write).
        writer: an open ``SummaryWriter`` to write into instead; it is not closed by
            :meth:`close`.
    """

    def __init__(self, log_dir: str | os.PathLike, writer: SummaryWriter | None = None) -> None:
        self.log_dir = str(log_dir)
        self._writer = writer
        self._owned = writer is None
        self._warned: set[str] = set()
        self._layout_written = False

    @property
    def writer(self) -> SummaryWriter:
        """The underlying ``SummaryWriter``, opened on first use."""
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def _drop(self, tag: str, err: Exception) -> None:
        if isinstance(err, OSError):
            tag = "the event file"  # the disk or the folder failed, not this value
            message = (
                f"concept_tracker could not write TensorBoard events to {self.log_dir!r} ({err!r}); values "
                "are dropped while it fails. Training goes on."
            )
        else:
            message = f"concept_tracker could not log {tag!r} ({err!r}); the value is dropped."
        if tag not in self._warned:
            self._warned.add(tag)
            warnings.warn(message, stacklevel=3)

    @_main_process_only
    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (a number or a one-element tensor)."""
        try:
            self.writer.add_scalar(tag, float(value), global_step=step)
        except Exception as err:  # a bad value must not stop training
            self._drop(tag, err)

    def scalars(self, values: dict[str, Any], step: int) -> None:
        """Log ``{tag: value}`` scalars at one step."""
        for tag, value in values.items():
            self.scalar(tag, value, step)

    @_main_process_only
    def histogram(self, tag: str, values: Tensor, step: int) -> None:
        """Log a histogram of ``values`` (any shape, flattened)."""
        try:
            self.writer.add_histogram(tag, values.detach().cpu().reshape(-1), global_step=step)
        except Exception as err:
            self._drop(tag, err)

    @_main_process_only
    def png(self, tag: str, png: bytes, step: int) -> None:
        """Log an image given as PNG bytes (a figure drawn by ``writers.render``)."""
        try:
            width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
            image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
            # What add_image does once it has encoded its array; the PNG is encoded already.
            self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        except Exception as err:
            self._drop(tag, err)

    @_main_process_only
    def text(self, tag: str, markdown: str, step: int) -> None:
        """Log markdown text (TensorBoard renders tables)."""
        try:
            self.writer.add_text(tag, markdown, global_step=step)
        except Exception as err:
            self._drop(tag, err)

    @_main_process_only
    def layout(self, layout: dict[str, dict[str, list[Any]]]) -> None:
        """Write the custom-scalars layout; later calls on this writer are ignored."""
        if self._layout_written:
            return
        try:
            self.writer.add_custom_scalars(layout)
            self._layout_written = True
        except Exception as err:
            self._drop("custom_scalars_layout", err)

    @_main_process_only
    def flush(self) -> None:
        """Push pending events to disk (no-op before the first write)."""
        if self._writer is not None:
            try:
                self._writer.flush()
            except OSError as err:
                self._drop("flush", err)

    @_main_process_only
    def close(self) -> None:
        """Flush, and close the event file if this object opened it."""
        if self._writer is None:
            return
        try:
            if self._owned:
                writer, self._writer = self._writer, None
                # A later write opens a fresh event file, which needs its own layout.
                self._layout_written = False
                writer.close()
            else:
                self._writer.flush()
        except OSError as err:
            self._drop("close", err)
