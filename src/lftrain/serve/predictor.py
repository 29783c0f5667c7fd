"""Predictions for request inputs, computed exactly as `lft predict` computes them for rows of a file.

Request inputs become a table with the recipe's column names and go through the task's own validation
(`Task.extract`), encoding, batched inference (`evaluation.inference.infer_logits`), the stored temperature and the
task's prediction format (`predictions`): a served prediction is the row `lft predict` writes, minus `row`.
"""

from __future__ import annotations

import logging
from typing import Any

from lftrain.data.examples import Examples
from lftrain.errors import DataError, InputError

log = logging.getLogger("lftrain")


class Predictor:
    """A loaded run of a task served through POST /predict alone (every task but chat models), predicting for
    request inputs."""

    def __init__(self, loaded, *, max_batch: int, temperature: bool = True) -> None:
        from lftrain.evaluation.evidence import stored_temperature

        self.loaded, self.task, self.max_batch = loaded, loaded.task, max_batch
        self.temperature = stored_temperature(loaded.model_dir) if temperature else 1.0
        self.normalize = loaded.recipe.data.normalize_whitespace

    def column(self, name: str) -> str | None:
        """The recipe's column for a request field (`text` -> task.text, ...); None when the run has none."""
        return getattr(self.task.config, name, None)

    def examples(self, inputs: list[Any]) -> Examples:
        """The request's inputs (strings or input models) validated into examples, as `lft predict` reads rows.
        Raises InputError naming the input and field."""
        rows = [self._row(i, item) for i, item in enumerate(inputs)]
        try:
            ex = self._extract(rows)
        except DataError as exc:
            raise InputError(self._explain(exc, self._culprit(rows, exc))) from None
        if len(ex) != len(inputs):  # an input skipped (task.on_bad_file: skip): answer for all or none
            raise InputError(f"{len(inputs) - len(ex)} of the inputs could not be read (not a decodable file?)")
        return ex

    def _extract(self, rows: list[dict[str, Any]]) -> Examples:
        from lftrain.data.readers import Table

        columns = sorted({c for row in rows for c in row})
        table = Table("request", columns, rows, list(range(len(rows))), [None] * len(rows))
        return self.task.extract(table, normalize=self.normalize, with_labels=False)

    def _culprit(self, rows: list[dict[str, Any]], exc: DataError) -> int | None:
        """Which input an error is about: the row it names, else (an undecodable image says no row) the first
        input that fails alone."""
        if exc.row is not None or len(rows) == 1:
            return exc.row if exc.row is not None else 0
        for i, row in enumerate(rows):
            try:
                self._extract([row])
            except DataError:
                return i
        return None

    def _row(self, i: int, item: Any) -> dict[str, Any]:
        row = {}
        # the validated values themselves (model_dump would turn decoded image bytes back into base64)
        fields = {"text": item} if isinstance(item, str) else {k: v for k, v in item if v is not None}
        for name, value in fields.items():
            column = self.column(name)
            if column is None:
                raise InputError(f"inputs.{i}.{name}: this {self.task.config.type} run reads no {name} "
                                 f"(task.{name} is not set)")
            row[column] = value
        return row

    def _explain(self, exc: DataError, index: int | None) -> str:
        """The task's message about a bad input, naming `inputs.N.field` instead of table rows and columns."""
        message = str(exc).split(": ", 1)[-1] if (exc.file or exc.row is not None or exc.column) else str(exc)
        names = ("text", "text_pair", "tokens", "question", "context", "image", "audio")
        fields = {self.column(n): n for n in names if self.column(n) is not None}
        where = f"inputs.{index}" if index is not None else "inputs"
        if exc.column or len(fields) == 1:  # an image or clip: its one field
            where += f".{fields.get(exc.column, exc.column) if exc.column else next(iter(fields.values()))}"
        return f"{where}: {message}"

    def __call__(self, parts: list[Examples]) -> list[list[dict[str, Any]] | Exception]:
        """Predictions for the examples of several requests: one forward pass per `max_batch` rows of those with
        the same fields (token classification takes words or text); a failing group is retried request by request,
        so a request that breaks the model fails alone."""
        results: list[Any] = [None] * len(parts)
        groups: dict[tuple, list[int]] = {}
        for i, ex in enumerate(parts):
            groups.setdefault(tuple(sorted(ex.fields)), []).append(i)
        for members in groups.values():
            try:
                self._group(parts, members, results)
            except Exception as exc:  # noqa: BLE001
                if len(members) == 1:
                    results[members[0]] = exc
                    continue
                for i in members:
                    try:
                        self._group(parts, [i], results)
                    except Exception as alone:  # noqa: BLE001
                        results[i] = alone
        return results

    def _group(self, parts: list[Examples], members: list[int], results: list) -> None:
        together = Examples.concat("request", [parts[i] for i in members])
        preds = self.predict(together)
        start = 0
        for i in members:
            results[i] = preds[start:start + len(parts[i])]
            start += len(parts[i])

    def predict(self, ex: Examples) -> list[dict[str, Any]]:
        """What `lftrain.api.predict` gives for these rows (without `row`), computed in batches of `max_batch`."""
        rows = self.task.predict_rows(self.loaded, ex)  # tasks that decode (speech recognition) answer themselves
        if rows is not None:
            return [{k: v for k, v in row.items() if k != "row"} for row in rows]
        logits, encoded = self.loaded.logits(ex, batch_size=self.max_batch)
        return self.task.predictions(logits / self.temperature, encoded, ex)
