"""The UV assets a run uses, by name: the embedded face model's or an official uv-data folder.

    uv_assets_for('procedural', 64)                 # derived from the embedded procedural model
    uv_assets_for('ict', 256)                       # derived from the ICT model (the ICT world)
    uv_assets_for('ict_bfm68', 256)                 # ... in the layout fitted to BFM-68
    uv_assets_for('official', 256)                  # PRNet's official uv-data (shipped)
    uv_assets_for('PRNet/Data/uv-data', 256)        # ... or any folder in its format

Training, evaluation and prediction all resolve `config.uv_assets` (or `--uv_assets`) here.
"""

from __future__ import annotations

import os

from prnet_jax import assets as shipped
from prnet_jax.faces import ict_face
from prnet_jax.faces.face_model import derive_uv_assets
from prnet_jax.faces.procedural_face import procedural_face_model
from prnet_jax.faces.uv_assets import AssetError, UVAssets, load_uv_assets

PROCEDURAL = 'procedural'
ICT = 'ict'
# PRNet's official uv-data (the BFM layout, 256 px), shipped in the package.
OFFICIAL = 'official'
OFFICIAL_FOLDER = shipped.path('official_uv_data')
# The layouts derived from an embedded face model (by name, at any resolution).
DERIVED = (PROCEDURAL, *ict_face.LAYOUTS)


def uv_assets_for(name: str, resolution: int) -> UVAssets:
  """Loss weights, landmark pixels and mesh of `resolution`-px position maps for `name`:
  'procedural' (the embedded procedural face model: `synthetic_faces` default/small/tiny),
  'ict' / 'ict_bfm68' (the ICT position-map model in its two layouts: `synthetic_faces/ict*`,
  `synthetic_faces/ict_bfm68*`), 'official' (PRNet's uv-data, shipped: the official network
  and 300W-LP) or an official-format uv-data folder. Raises AssetError naming the problem."""
  if name == PROCEDURAL:
    return derive_uv_assets(procedural_face_model(), resolution)
  if name in ict_face.LAYOUTS:
    return derive_uv_assets(ict_face.face_model(name), resolution)
  if name == OFFICIAL:
    name = OFFICIAL_FOLDER
  if not name:
    raise AssetError(f'no UV assets given: set config.uv_assets (or --uv_assets) to '
                     f'"{OFFICIAL}" (PRNet\'s uv-data: 300W-LP and the official weights), to '
                     f'"{PROCEDURAL}" for models trained on the procedural synthetic faces or to '
                     f'"{ICT}" for the ICT world')
  if not os.path.isdir(name):
    raise AssetError(f'{name}: UV assets folder not found (expected "{PROCEDURAL}", "{ICT}", '
                     f'"{OFFICIAL}" or a uv-data folder such as PRNet/Data/uv-data)')
  assets = load_uv_assets(name)
  if assets.resolution != resolution:
    raise AssetError(f'{name}: the UV assets are for {assets.resolution} px maps, the model '
                     f'is {resolution} px')
  return assets
