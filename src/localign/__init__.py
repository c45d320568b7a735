"""localign: localized image-text representation learning for chest radiographs.

One interface for the methods of local mutual-information maximization (Liao et al., MICCAI 2021),
LoVT (Müller et al., ECCV 2022) and LIMITR (Dawidowicz et al., ICCV 2023), with the ConVIRT, CLIP
and GLoRIA baselines, identical encoders, downstream evaluation and report figures.

Subpackages mirror the architecture:

- :mod:`localign.data`     SynthCXR, real-dataset preparation, manifests, tokenization, preprocessing, datasets
- :mod:`localign.models`   encoders, heads, alignment modules, the method registry
- :mod:`localign.losses`   objectives as pure functions over tensors
- :mod:`localign.metrics`  metrics as pure functions over arrays (R@K, AUROC, Dice, mAP, rank)
- :mod:`localign.train`    the pretraining engine (single process and DDP)
- :mod:`localign.eval`     phrase grounding, downstream protocols, statistics and tables
- :mod:`localign.viz`      figure functions returning matplotlib figures
"""

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto (which transformers' hub utilities import) warns "IProgress not found" inside Jupyter
# kernels without ipywidgets, with the machine path of tqdm, and falls back to the text bar; that is
# the choice localign.progress makes silently. The warning only ever reached the book's pages.
_warnings.filterwarnings("ignore", message="IProgress not found")
