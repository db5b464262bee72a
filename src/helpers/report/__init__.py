"""Figures outside the notebooks come from the notebooks: ``python -m helpers report``.

A tool (it imports the library, nothing imports it). ``make notebooks`` runs each notebook
canonically, then copies its run's ``metrics.json`` into ``notebooks/metrics/<stem>.json``
(:mod:`.collect`), a committed snapshot with papermill's run time and the notebook's section
names. From those files :mod:`.documents` rewrites the generated blocks of ``README.md`` and
``docs/instructor.md``, the text between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``
(:mod:`.blocks`): the notebook tables, section timings, each notebook's figures and the claims
scorecard (:mod:`.scorecard`). ``--check`` (:mod:`.check`, run by ``make lint``) names the
first figure that differs, so a committed figure cannot drift from the run it came from.
"""

from __future__ import annotations


class ReportError(Exception):
    """A metrics file or a document the report cannot use; the message is one line to fix it."""
