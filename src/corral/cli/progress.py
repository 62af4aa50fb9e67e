"""Live progress of pulls and pushes, one line per layer.

On a terminal, a rich display with a bar, bytes and rate for each layer;
elsewhere, one line per status change, as the docker CLI prints without a
TTY. The image layer calls the display from its download threads, so every
update takes a lock.
"""

from __future__ import annotations

import sys
import threading

# Statuses that repeat with byte counts: shown as a bar on a terminal and
# not printed at all elsewhere.
_BUSY = frozenset({"Downloading", "Extracting", "Pushing", "Verifying Checksum"})


class LayerDisplay:
    def __init__(self, *, quiet: bool = False, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tty = self.stream.isatty() and not quiet
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}
        self._tasks: dict[str, int] = {}
        self._progress = None

    def __enter__(self) -> LayerDisplay:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.fields[layer]}:"), TextColumn("{task.description:<20}"),
                BarColumn(bar_width=30), DownloadColumn(), TransferSpeedColumn(),
                console=Console(file=self.stream), transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        """A line outside the per-layer display ("Digest: ...")."""
        if self.quiet:
            return
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(text, highlight=False, markup=False)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def __call__(self, layer: str, status: str, current: int | None = None,
                 total: int | None = None) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._progress is not None:
                self._update_bar(layer, status, current, total)
            elif status not in _BUSY and self._last.get(layer) != status:
                self.stream.write(f"{layer}: {status}\n")
                self.stream.flush()
            self._last[layer] = status

    def _update_bar(self, layer: str, status: str, current: int | None,
                    total: int | None) -> None:
        task = self._tasks.get(layer)
        if task is None:
            task = self._progress.add_task(status, layer=layer, total=total, start=True)
            self._tasks[layer] = task
        fields: dict = {"description": status}
        if total is not None:
            fields["total"] = total
        if current is not None:
            fields["completed"] = current
        elif status not in _BUSY and total is None:
            task_total = self._progress.tasks[task].total
            if task_total:
                fields["completed"] = task_total
        self._progress.update(task, **fields)
