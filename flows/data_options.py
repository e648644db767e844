"""The dataset options every step that reads data takes, as click options and MLproject
parameters with the same names and defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import click


@dataclass(frozen=True)
class DataOptions:
    text_column: str = "text"
    label_column: str = "label"
    labels: str = ""  # "a,b,c" or a names file; "" = labels.txt beside the data, else sorted train labels
    dedupe: bool = False

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`quantgate.data.load_dataset`."""
        return asdict(self)

    def changed(self) -> dict:
        """Only the options that differ from the defaults (what `main` passes on, so runs with
        default options keep their reuse digest)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def mlproject_params(self) -> dict[str, str]:
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in self.changed().items()}


def data_options(func):
    """Add --text-column, --label-column, --labels and --dedupe/--no-dedupe to a command."""
    d = DataOptions()
    for opt in reversed(
        [
            click.option("--text-column", default=d.text_column, show_default=True, help="Column holding the text."),
            click.option(
                "--label-column",
                default=d.label_column,
                show_default=True,
                help="Column holding the label: a name, or an integer id into the label names.",
            ),
            click.option(
                "--labels",
                default=d.labels,
                help="The label list in logit order: a,b,c or a names file (one a line). "
                "Default: labels.txt beside the data, else the training split's labels, sorted.",
            ),
            click.option(
                "--dedupe",
                type=click.BOOL,
                default=d.dedupe,
                show_default=True,
                is_flag=False,
                flag_value=True,
                help="Drop texts repeated across splits (train keeps its copy) instead of refusing the data.",
            ),
        ]
    ):
        func = opt(func)
    return func


def pop_data_options(options: dict) -> DataOptions:
    """Take the data options out of a command's keyword arguments."""
    return DataOptions(**{f.name: options.pop(f.name) for f in fields(DataOptions)})
