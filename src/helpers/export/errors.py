"""The one error of the export: input the user must fix (a folder, a model, an architecture)."""


class ExportError(ValueError):
    """A source cannot be exported as asked; the message names what and where."""
