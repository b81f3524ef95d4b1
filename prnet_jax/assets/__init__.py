"""Data files shipped inside the package (notices in LICENSE).

* ``ict_face_model.npz``: the compact ICT-FaceKit face model (`prnet_jax.faces.ict_model`);
* ``pretrained_ict.npz``: the bundled pretrained model (`prnet_jax.nn.checkpoints.PRETRAINED`).
"""

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The absolute path of the shipped file `name`."""
  return os.path.join(DIRECTORY, name)
