"""prnet_jax: PRNet (Feng et al., ECCV 2018) in JAX/Flax.

The package follows the data path, each sub-package importing only those above it in this list:

    native, runtime, assets   C++ CPU kernels, process settings, shipped files
    geometry                  pose, crops, rasterisation, ICP
    faces | data | nn         face models and UV assets | files, records, input pipeline,
                              augmentation | the network, loss, sharding, model checkpoints
    worlds | evaluation       synthetic face worlds | metrics, evaluators, reports
    training                  the train loop and its checkpoints
    serving                   predictor, detectors, outputs, CLI, applications, demo, export

The names most programs need are importable from here (loaded on first use, so importing the
package stays cheap and changes nothing in the process; the optional XLA:CPU settings are in
`prnet_jax.runtime`, which ``launch.py`` applies):

    from prnet_jax import Predictor, write_outputs
    faces = Predictor.from_pretrained().predict('photo.jpg')
"""

import importlib

# name -> module that defines it
_EXPORTS = {
    'Predictor': 'prnet_jax.serving.inference',
    'Face': 'prnet_jax.serving.inference',
    'PredictError': 'prnet_jax.serving.inference',
    'write_outputs': 'prnet_jax.serving.outputs',
    'load_photo': 'prnet_jax.data.image_io',
    'PRNet': 'prnet_jax.nn.model',
    'ModelConfig': 'prnet_jax.nn.model',
    'load_variables': 'prnet_jax.nn.checkpoints',
    'uv_assets_for': 'prnet_jax.faces.catalog',
    'train_and_evaluate': 'prnet_jax.training.train',
    'evaluate': 'prnet_jax.evaluation.evaluate',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
