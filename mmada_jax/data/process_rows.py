"""One process's rows of the global batches of a grain dataset (``make_dataset(shard="batch")``)."""

from __future__ import annotations

import grain


class ProcessRows(grain.MapDataset):
    """Process ``index``'s rows of the global batches of ``parent``.

    The parent's elements come in groups of ``per_process * count`` (one global batch; a trailing
    partial group is dropped); each group is ``micro_batches`` micro-batches of ``count`` blocks of
    ``per_process / micro_batches`` rows. Element ``i`` of this dataset is row ``i`` of the
    concatenation of block ``index`` of every micro-batch of every global batch, so batching it by
    ``per_process`` gives this process's part of each global batch, micro-batch by micro-batch.
    Random access; indices past the end continue into the parent's next epochs, as grain's
    slices do.
    """

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, per_process: int, index: int, count: int, micro_batches: int = 1):
        super().__init__(parent)
        if per_process < 1 or micro_batches < 1 or per_process % micro_batches:
            raise ValueError(f"{per_process} rows per process are not a positive multiple of {micro_batches} "
                             f"micro-batches")
        if not 0 <= index < count:
            raise ValueError(f"process index {index} not in [0, {count})")
        self._per, self._index, self._count = per_process, index, count
        self._block = per_process // micro_batches       # rows of one micro-batch on this process
        self._global = per_process * count               # rows of one global batch
        self._parent_length = len(parent)
        self._length = (self._parent_length // self._global) * per_process

    def __len__(self) -> int:
        return self._length

    def _parent_index(self, i: int) -> int:
        epoch, i = divmod(i, self._length) if self._length else (0, i)
        step, row = divmod(i, self._per)
        micro, k = divmod(row, self._block)
        return (epoch * self._parent_length + step * self._global
                + (micro * self._count + self._index) * self._block + k)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._parent_index(index)]

    def _getitems(self, indices):
        return self._parent._getitems([self._parent_index(i) for i in indices])  # noqa: SLF001

    def __str__(self) -> str:
        return f"ProcessRows(process {self._index} of {self._count}, {self._per} rows of each global batch)"
