"""Test helpers: the repository's paths, the tiny training config, `launch.py` as a user runs
it, and small files in the real formats (no real data needed). Session fixtures built on them
are in conftest.py."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
from scipy import io as sio

from prnet_jax.faces.procedural_face import procedural_face_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module():
  """configs/prnet.py as a module (its `get_config(variant)`)."""
  spec = importlib.util.spec_from_file_location('prnet_config',
                                                os.path.join(ROOT, 'configs', 'prnet.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_config(data_dir=None, width=None):
  """The 'small' variant on synthetic_faces/tiny with the procedural UV assets (what the tiny
  dataset was drawn with); `width` narrows the network for the training tests."""
  c = config_module().get_config('small')
  c.dataset, c.uv_assets = 'synthetic_faces/tiny', 'procedural'
  if data_dir is not None:
    c.data_dir = str(data_dir)
  if width is not None:
    c.model.width = width
  return c


def run_launch(*args, devices=None, timeout=600):
  """`python launch.py ARGS` from the repository root, as a user runs it (on `devices` CPU
  devices when given)."""
  env = dict(os.environ)
  if devices is not None:
    env.update(JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def write_bfm_fixture(directory, nu=41, nv=46):
  """Writes face3d-schema `BFM.mat` and `BFM_UV.mat` of a coarse procedural face.

  Real schema: struct `model` with column vectors (3V x 1), PCs (3V x K), EVs (K x 1),
  MATLAB 1-based `tri` (3 x T), `tri_mouth` (3 x M) and `kpt_ind` (1 x 68); `UV` (V x 2).
  Returns (source model, paths)."""
  src = procedural_face_model(nu, nv)
  v = src.num_vertices
  exp_mu = np.random.RandomState(0).normal(0, 0.5, (3 * v, 1))
  tri = src.triangles
  mouth = tri[:2]  # stands in for tri_mouth (appended after `tri` by the loader)
  model = {
      'shapeMU': src.mean.reshape(-1, 1).astype(np.float64) - exp_mu,
      'shapePC': src.shape_basis.astype(np.float64),
      'shapeEV': src.shape_ev.reshape(-1, 1).astype(np.float64),
      'expMU': exp_mu,
      'expPC': src.exp_basis.astype(np.float64),
      'expEV': src.exp_ev.reshape(-1, 1).astype(np.float64),
      'texMU': (src.albedo.reshape(-1, 1) * 255).astype(np.float64),
      'texPC': np.zeros((3 * v, 2)), 'texEV': np.ones((2, 1)),
      'tri': (tri[2:].T + 1).astype(np.float64),
      'tri_mouth': (mouth.T + 1).astype(np.float64),
      'kpt_ind': (src.landmarks[None] + 1).astype(np.float64),
  }
  os.makedirs(directory, exist_ok=True)
  bfm = os.path.join(directory, 'BFM.mat')
  uv = os.path.join(directory, 'BFM_UV.mat')
  sio.savemat(bfm, {'model': model})
  sio.savemat(uv, {'UV': src.uv.astype(np.float64)})
  return src, bfm, uv


def write_300wlp_sample(folder, name, rng, n_shape=16, n_exp=7, image_size=450, **overrides):
  """Writes <name>.jpg + <name>.mat in the 300W-LP schema (fields, shapes, dtypes as released:
  Pose_Para 1x7 float32, Shape_Para 199x1 / Exp_Para 29x1 float64 in the real files (here sized
  for the fixture model), pt2d 2x68, roi 1x4, Tex/Color/Illum parameters)."""
  from PIL import Image
  os.makedirs(folder, exist_ok=True)
  image = (rng.uniform(0, 255, (image_size, image_size, 3))).astype(np.uint8)
  pose = np.array([[rng.uniform(-0.3, 0.3), rng.uniform(-1.2, 1.2), rng.uniform(-0.3, 0.3),
                    image_size / 2, image_size / 2, 0.0, 1.4]], np.float32)
  fields = {
      'Pose_Para': pose,
      'Shape_Para': rng.normal(0, 0.7, (n_shape, 1)),
      'Exp_Para': rng.normal(0, 0.3, (n_exp, 1)),
      'pt2d': rng.uniform(100, 350, (2, 68)),
      'roi': np.array([[100, 100, 350, 350]], np.int16),
      'Tex_Para': np.zeros((n_shape, 1)), 'Color_Para': np.zeros((1, 7), np.float32),
      'Illum_Para': np.zeros((1, 10)),
  }
  fields.update(overrides)
  Image.fromarray(image).save(os.path.join(folder, name + '.jpg'), quality=95)
  sio.savemat(os.path.join(folder, name + '.mat'), fields)
  return fields
