"""What encoding changed (rare values, unseen values, truncated lists), counted per field and split, so that
nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lit_ifm.data.schema import Field


@dataclass
class EncodingReport:
    """What encoding changed, so nothing is dropped silently."""

    rare_features: Counter = field(default_factory=Counter)  # field -> training values below min_count
    unseen_values: Counter = field(default_factory=Counter)  # (split, field) -> values mapped to the OOV id
    truncated_rows: Counter = field(default_factory=Counter)  # (split, field) -> rows with more values than slots
    multi_splits: dict = field(default_factory=dict)  # multi-valued field -> (separator, longest training row)

    def table(self, fields: list[Field] | tuple[Field, ...],
              evaluated: list[str] | tuple[str, ...] = ("validation", "test")) -> list[str]:
        """The schema as a table, one line per field: its kind (a multi-valued field's separator and longest
        training row), slots, known values, and what encoding changed: distinct training values below ``min_count``,
        values of the ``evaluated`` splits unseen in training (both mapped to the out-of-vocabulary id), rows with
        more values than slots (truncated).

        >>> report = EncodingReport(multi_splits={"tags": ("|", 4)})
        >>> report.unseen_values[("test", "user")] = 2
        >>> report.truncated_rows[("train", "tags")] = 1
        >>> print("\\n".join(report.table([Field("user", "categorical", 5, 1, 4), Field("tags", "multi", 7, 3, 11)])))
        field  kind                            slots  values  below min_count  OOV validation  OOV test  truncated rows
        user   categorical                         1       4                0               0         2               -
        tags   multi, split on '|', longest 4      3       6                0               0         0         train 1
        (below min_count: training values; OOV: others unseen in training; all read as the field's out-of-vocabulary id)
        """
        header = ["field", "kind", "slots", "values", "below min_count", *(f"OOV {split}" for split in evaluated),
                  "truncated rows"]
        lines = [header]
        for item in fields:
            kind = item.kind
            if item.name in self.multi_splits:
                separator, longest = self.multi_splits[item.name]
                kind = f"multi, split on {separator!r}, longest {longest}"
            truncated = ", ".join(f"{split} {self.truncated_rows[(split, item.name)]}" for split in
                                  ("train", *evaluated) if self.truncated_rows[(split, item.name)])
            counted = [str(self.rare_features[item.name]),
                       *(str(self.unseen_values[(split, item.name)]) for split in evaluated)]
            lines.append([item.name, kind, str(item.slots),
                          "-" if item.kind == "numeric" else str(item.vocabulary_size - 1),
                          *(["-"] * len(counted) if item.kind == "numeric" else counted), truncated or "-"])
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        table = ["  ".join(value.ljust(width) if column < 2 else value.rjust(width)
                           for column, (value, width) in enumerate(zip(line, widths))).rstrip() for line in lines]
        return [*table, "(below min_count: training values; OOV: others unseen in training; all read as the field's "
                        "out-of-vocabulary id)"]

    def lines(self) -> list[str]:
        """What encoding changed, one line per kind of change and split, with counts by field."""
        lines = []
        if sum(self.rare_features.values()):
            lines.append(f"training values below min_count, mapped to out-of-vocabulary ids: {_by_field(self.rare_features)}")
        for split in dict.fromkeys(where for where, _ in self.unseen_values):
            unseen = Counter({name: n for (where, name), n in self.unseen_values.items() if where == split})
            if sum(unseen.values()):
                lines.append(f"{split} values unseen in training, mapped to out-of-vocabulary ids: {_by_field(unseen)}")
        for split in dict.fromkeys(where for where, _ in self.truncated_rows):
            cut = Counter({name: n for (where, name), n in self.truncated_rows.items() if where == split})
            if sum(cut.values()):
                lines.append(f"{split} rows with more values than slots, truncated: {_by_field(cut)}")
        return lines


def _by_field(counts: Counter) -> str:
    return f"{sum(counts.values())} ({', '.join(f'{name} {n}' for name, n in counts.items() if n)})"

