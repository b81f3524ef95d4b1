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


def write_raw_bfm_fixture(directory, nu=105, nv=106, n_shape=16, n_exp=7, seed=0,
                          real_info=None, real_uv=None):
  """Writes the inputs of face3d's generate.m in its layout (raw/, 3ddfa/, stn/) around a
  procedural face of nu x nv vertices (>= 10,917 so that generate.m's repaired UV vertices
  exist): the raw model has 3 extra vertices for every 100 kept (trimIndex drops them), fields
  and MATLAB classes as released (shapeMU single, the rest double; segbin uint8, segbin_tri
  logical). `real_info`/`real_uv`: paths of the real model_info.mat / trimmed BFM_UV.mat to
  use instead of the procedural topology (then the geometry is random).
  Returns a dict of the arrays written, keyed by MATLAB name."""
  rng = np.random.default_rng(seed)
  if real_info:
    info = sio.loadmat(real_info, mat_dtype=True)
    info = {k: v for k, v in info.items() if not k.startswith('__')}
    trim = info['trimIndex'].reshape(-1).astype(np.int64)
    n_raw = int(trim.max())
    uv_trimmed = sio.loadmat(real_uv)['UV'] if real_uv else rng.uniform(0, 1, (trim.size, 2))
    mean_trimmed = rng.normal(0, 50, (trim.size, 3))
  else:
    src = procedural_face_model(nu, nv)
    v = src.num_vertices
    n_raw = v + 3 * (v // 100) + 1
    trim = np.sort(rng.choice(np.arange(1, n_raw + 1), v, replace=False))
    info = {'trimIndex': trim.reshape(-1, 1).astype(np.float64),
            'tri': (src.triangles.T + 1).astype(np.float64),
            'keypoints': (src.landmarks[None] + 1).astype(np.float64),
            'symlist': rng.integers(1, v + 1, (2, 50)).astype(np.float64),
            'symlist_tri': rng.integers(1, len(src.triangles), (2, 40)).astype(np.float64),
            'segbin': rng.integers(0, 2, (n_raw, 4)).astype(np.uint8),
            'segbin_tri': rng.integers(0, 2, (len(src.triangles), 4)).astype(bool)}
    uv_trimmed = src.uv.astype(np.float64)
    mean_trimmed = src.mean.astype(np.float64)
  v = trim.size
  # The raw model: trimmed vertices at trimIndex, the others junk.
  mean_raw = rng.normal(0, 1e4, (n_raw, 3))
  mean_raw[trim - 1] = mean_trimmed
  uv_raw = rng.uniform(5, 6, (n_raw, 2))  # far outside [0, 1]: a wrong row shows
  uv_raw[trim - 1] = uv_trimmed
  uv_raw[trim[[10031, 10154, 10279]] - 1] = -7.0  # generate.m repairs these three
  raw = {'shapeMU': mean_raw.reshape(-1, 1).astype(np.float32),
         'shapePC': rng.normal(0, 1, (3 * n_raw, n_shape)),
         'shapeEV': rng.uniform(1, 2, (n_shape, 1)),
         'texMU': rng.uniform(0, 255, (3 * n_raw, 1)).astype(np.float32),
         'texPC': rng.normal(0, 1, (3 * n_raw, 3)), 'texEV': np.ones((3, 1)),
         'tl': rng.integers(1, n_raw, (20, 3)).astype(np.float64),
         'segbin': rng.integers(0, 2, (n_raw, 4)).astype(np.uint8)}  # model_info's wins
  cell = np.empty((1, 2), object)
  cell[0, 0] = rng.integers(1, v, (1, 5)).astype(np.float64)
  cell[0, 1] = rng.integers(1, v, (1, 3)).astype(np.float64)
  arrays = {
      'raw/01_MorphableModel.mat': raw,
      '3ddfa/model_info.mat': info,
      '3ddfa/Model_Expression.mat': {
          'mu_exp': rng.normal(0, 0.5, (3 * v, 1)), 'w_exp': rng.normal(0, 1, (3 * v, n_exp)),
          'sigma_exp': rng.uniform(1, 2, (n_exp, 1))},
      '3ddfa/Model_tri_mouth.mat': {'tri_mouth': rng.integers(1, v, (3, 114)).astype(np.float64)},
      '3ddfa/Model_face_contour_trimed.mat': {
          'face_contour': rng.integers(1, v, (1, 30)).astype(np.float64),
          'face_contour_line': rng.integers(1, v, (1, 40)).astype(np.float64),
          'face_contour_front': rng.integers(1, v, (1, 17)).astype(np.float64),
          'face_contour_front_line': rng.integers(1, v, (1, 25)).astype(np.float64)},
      '3ddfa/Modelplus_nose_hole.mat': {
          'nose_hole': rng.integers(1, v, (1, 12)).astype(np.float64),
          'nose_hole_right': rng.integers(1, v, (1, 6)).astype(np.float64),
          'nose_hole_left': rng.integers(1, v, (1, 6)).astype(np.float64)},
      '3ddfa/Modelplus_parallel.mat': {
          'parallel': cell,  # a MATLAB cell array
          'parallel_face_contour': rng.integers(1, v, (1, 17)).astype(np.float64)},
      '3ddfa/vertex_code.mat': {'vertex_code': rng.uniform(0, 1, (3, v))},
      'stn/BFM_UV.mat': {'UV': uv_raw},
  }
  for rel, fields in arrays.items():
    path = os.path.join(directory, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sio.savemat(path, fields)
  return arrays


def jax_forward(model_config, variables, images):
  """The model's jitted inference forward (what every export must compute)."""
  import jax

  from prnet_jax.nn.model import PRNet, inference_fn
  prepare, forward = inference_fn(PRNet.from_config(model_config))
  return np.asarray(jax.jit(forward)(prepare(variables), images))


def random_variables(model_config, seed):
  """Initial weights with BatchNorm statistics and affine parameters far from (0, 1): mean /
  variance or scale / bias mix-ups would show."""
  import jax

  from prnet_jax.nn.model import PRNet, init_variables
  variables = init_variables(PRNet.from_config(model_config), jax.random.key(seed))
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    key = path[-1].key
    if key in ('mean', 'bias'):
      return rng.normal(0, 0.3, x.shape).astype(np.float32)
    if key in ('var', 'scale'):
      return rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
    return np.asarray(x)
  return jax.tree_util.tree_map_with_path(perturb, variables)


# Training subprocesses (tests/train_worker.py): device counts, multi-host, kill and resume.
WORKER = os.path.join(ROOT, 'tests', 'train_worker.py')


def run_worker(*args, timeout=600, env=None):
  """Runs tests/train_worker.py with `args`; fails the test with its output if it fails."""
  r = subprocess.run([sys.executable, WORKER, *map(str, args)], cwd=ROOT, capture_output=True,
                     text=True, timeout=timeout, env=env)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r


def final_params(workdir):
  """(variables, step) of the newest checkpoint in `workdir`."""
  from prnet_jax.nn import checkpoints
  variables, _, step = checkpoints.load_variables(os.path.join(workdir, 'checkpoints'))
  return variables, step
