"""Sphinx configuration of the course website (``make site``).

The source folder is the repository's root, so the README, the instructor's guide and the
notebooks keep their paths and their links between each other work on the site as they do
on GitHub; only the files named in ``include_patterns`` become pages. The notebooks are
rendered with the outputs they were committed with (``nb_execution_mode = "off"``). The
table of contents, each lesson's "run it" box and the check for blank widget outputs are
added by the local extension ``course_site`` (this folder).
"""

import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent
sys.path.insert(0, str(SITE))

project = "finetune-course"
author = "the finetune-course team"
html_title = "finetune-course"

extensions = ["myst_nb", "course_site"]
root_doc = "README"  # the landing page; index.html sends a visitor there
include_patterns = [
    "README.md",
    "docs/*.md",
    "notebooks/[0-9][0-9]_*.ipynb",
    "data/samples/README.md",
    "site/*.md",
]
# Folders no page lives in are not even walked (include_patterns alone would walk .venv).
exclude_patterns = [
    path.name
    for path in SITE.parent.iterdir()
    if path.is_dir() and path.name not in ("docs", "notebooks", "data", "site")
] + ["site/_build", "site/_templates"]

nb_execution_mode = "off"  # the committed outputs, as the canonical run left them
nb_merge_streams = True  # one block per stream, with carriage returns applied
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN: the site works offline
myst_heading_anchors = 3  # GitHub's anchors (README.md#the-claims-scorecard)
myst_enable_extensions = ["colon_fence"]

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "use_download_button": True,
    "show_toc_level": 2,
}
templates_path = ["_templates"]
html_additional_pages = {"index": "redirect.html"}
html_last_updated_fmt = None
