"""The tqdm progress bar every module of localign uses.

``tqdm.auto`` picks the notebook widget inside a Jupyter kernel, but when ipywidgets is missing it
prints ``TqdmWarning: IProgress not found`` (with the machine path of tqdm) into the cell that first
imports it, whether or not a bar is ever shown. Here the widget bar is used only when ipywidgets is
installed (``pip install .[lab]``); otherwise the plain text bar, which works everywhere.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]
