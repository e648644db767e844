"""quantgate flows: the steps behind the MLproject entry points and the `quantgate` CLI."""
