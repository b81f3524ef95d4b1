"""TFDS builders of prnet-jax. Importing this package registers them with TFDS.

  synthetic_faces  the embedded synthetic face world (no downloads)
  prnet_300wlp     300W-LP + BFM -> position-map ground truth (manual download)
  aflw2000_3d      AFLW2000-3D evaluation set (manual download; dense maps with BFM)
  florence         views rendered from the Florence (MICC) scans (manual download)

Build one: `python -m datasets.build synthetic_faces/small --data_dir=~/tensorflow_datasets`.
"""

import importlib.util

if importlib.util.find_spec('tensorflow_datasets') is None:
  raise ModuleNotFoundError(
      'datasets/ (the TFDS builders) needs the `train` extra, which is not installed: pip '
      'install -r requirements.txt, or pip install "prnet-jax[train]"', name='tensorflow_datasets')

from datasets import (  # noqa: E402
    aflw2000_3d,  # noqa: F401
    florence,  # noqa: F401
    prnet_300wlp,  # noqa: F401
    synthetic_faces,  # noqa: F401
)
