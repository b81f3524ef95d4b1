"""Data files shipped inside the package (notices in LICENSE).

* ``ict_face_model.npz``: the compact ICT-FaceKit face model (`prnet_jax.faces.ict_model`);
* ``ict_landmarks_bfm68.npz``, ``ict_landmarks_bfm68_skin.npz``: the benchmark's 68 landmarks on
  the ICT surface for the 'ict' and 'ict_bfm68' layouts (`prnet_jax.faces.landmark_calibration`);
* ``ict_landmark_taps.npz``: how the 'ict' layout's maps are read for the 68 landmarks (the jaw
  from the face pixels around it: `prnet_jax.faces.landmark_taps`);
* ``pretrained_ict.npz``: the bundled pretrained model (`prnet_jax.nn.checkpoints.PRETRAINED`);
* ``official_uv_data/``: PRNet's official uv-data, unchanged (UV assets 'official',
  `prnet_jax.faces.catalog`).
"""

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The absolute path of the shipped file `name`."""
  return os.path.join(DIRECTORY, name)
