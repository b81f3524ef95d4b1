"""face3d's `BFM.mat` without MATLAB: a line-by-line port of face3d's `generate.m`.

    python -m prnet_jax.faces.bfm_generate SRC OUT

SRC holds the downloads face3d's instructions list, in face3d's layout (`raw/`, `3ddfa/`,
`stn/`) or all in one folder:

  raw/01_MorphableModel.mat          the Basel Face Model 2009 (from the University of Basel)
  3ddfa/model_info.mat               3DDFA: trimIndex, tri, keypoints, symlist(_tri), segbin(_tri)
  3ddfa/Model_Expression.mat         3DDFA: mu_exp, w_exp, sigma_exp
  3ddfa/Model_tri_mouth.mat          3DDFA: tri_mouth
  stn/BFM_UV.mat                     3DMMasSTN: UV of the 53,490 BFM vertices (an already
                                     trimmed 53,215-row copy, as 3DDFA_V2 ships, is accepted)
  optional, for BFM_info.mat: 3ddfa/Model_face_contour_trimed.mat, Modelplus_nose_hole.mat,
  Modelplus_parallel.mat (HPEN); and vertex_code.mat / pncc_code.mat (copied as pncc_code.mat)

OUT receives what `generate.m` writes to `Out/`: `BFM.mat` (struct `model`), `BFM_UV.mat`
(`UV`), and `BFM_info.mat` (struct `model_info`) when its optional inputs are there. The
`prnet_300wlp` and `aflw2000_3d` builders read `BFM.mat` + `BFM_UV.mat`, or SRC directly.

Values keep their MATLAB classes (files are read with `mat_dtype=True`, so indices stored as
uint16 are the doubles MATLAB computes with). `generate.m` removes inner-mouth triangles with
`setdiff(all_ind, bad_ind)`, where `bad_ind` is the UV repair's vertex list (10032, ...) rather
than `ind_bad = 38`; no triangle has such an index, so none is removed. The port does the same,
so its output equals the files face3d's users have.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Optional

import numpy as np


RAW = ('raw', '01_MorphableModel.mat')
MODEL_INFO = ('3ddfa', 'model_info.mat')
EXPRESSION = ('3ddfa', 'Model_Expression.mat')
TRI_MOUTH = ('3ddfa', 'Model_tri_mouth.mat')
UV_STN = ('stn', 'BFM_UV.mat')
CONTOUR = ('3ddfa', 'Model_face_contour_trimed.mat')
NOSE_HOLE = ('3ddfa', 'Modelplus_nose_hole.mat')
PARALLEL = ('3ddfa', 'Modelplus_parallel.mat')
PNCC = (('3ddfa', 'vertex_code.mat'), ('3ddfa', 'pncc_code.mat'))  # the later one wins

# generate.m's UV repair: three vertices (1-based, trimmed) get the mean of their neighbours.
UV_BAD = (10032, 10155, 10280)
UV_ROUNDS = ((10033, 10158), (10534, 10157, 10661), (10916, 10286))
# generate.m's added inner-mouth triangles (1-based, one per row).
TRI_MOUTH_ADD = np.array([[6420, 6542, 6664], [6420, 6294, 6167], [6167, 6297, 6420],
                          [6167, 6297, 6296], [6167, 6296, 6295], [6167, 6295, 6039],
                          [6168, 6295, 6039]], np.float64)


class BfmInputError(ValueError):
  """An input of generate.m is missing or malformed; the message names the file."""


def find(src: str, where: tuple[str, str]) -> Optional[str]:
  """`src/<folder>/<name>` (face3d's layout) or `src/<name>`; None if neither exists."""
  for path in (os.path.join(src, *where), os.path.join(src, where[1])):
    if os.path.isfile(path):
      return path
  return None


def has_raw_bfm(src: str) -> bool:
  return find(src, RAW) is not None


def _load(src: str, where: tuple[str, str], fields: tuple[str, ...]) -> dict:
  from scipy import io as sio
  path = find(src, where)
  if path is None:
    raise BfmInputError(f'{os.path.join(src, *where)}: file not found (face3d\'s BFM '
                         f'inputs; see python -m prnet_jax.faces.bfm_generate --help)')
  with open(path, 'rb') as f:
    head = f.read(128)
  if b'MATLAB 7.3' in head:
    raise BfmInputError(f'{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 or take the '
                         f'original download')
  try:
    data = sio.loadmat(path, mat_dtype=True)
  except Exception as e:  # scipy raises ValueError/TypeError/... for truncated files
    raise BfmInputError(f'{path}: cannot read .mat ({e})') from e
  missing = [k for k in fields if k not in data]
  if missing:
    raise BfmInputError(f'{path}: lacks fields {missing}')
  return {k: v for k, v in data.items() if not k.startswith('__')}


def _check_rows(path_hint: str, name: str, array: np.ndarray, rows: int) -> None:
  if array.shape[0] < rows:
    raise BfmInputError(f'{path_hint}: {name} has {array.shape[0]} rows, the trim index '
                         f'needs {rows}')


def generate(src: str) -> tuple[dict, Optional[dict], np.ndarray]:
  """face3d's generate.m on the files in `src` -> (model, model_info or None, UV).

  model: the fields of `BFM.mat`'s struct in generate.m's order; model_info: `BFM_info.mat`'s
  struct (None when its optional inputs are missing); UV: (53215, 2)."""
  # %% load raw BFM models
  raw = _load(src, RAW, ('shapeMU', 'shapePC', 'shapeEV', 'texMU', 'texPC', 'texEV'))
  # 1. load bfm information. trim
  info = _load(src, MODEL_INFO, ('trimIndex', 'tri', 'keypoints', 'symlist', 'symlist_tri',
                                 'segbin', 'segbin_tri'))
  trim = info['trimIndex'].reshape(-1).astype(np.int64)  # 1-based
  trim_f = np.stack([3 * trim - 2, 3 * trim - 1, 3 * trim]).T.reshape(-1) - 1  # 0-based rows
  raw_path = find(src, RAW)
  for k in ('shapeMU', 'shapePC', 'texMU', 'texPC'):
    _check_rows(raw_path, k, raw[k], 3 * int(trim.max()))
  model = {'shapeMU': raw['shapeMU'][trim_f, :], 'shapePC': raw['shapePC'][trim_f, :],
           'shapeEV': raw['shapeEV'], 'texMU': raw['texMU'][trim_f, :],
           'texPC': raw['texPC'][trim_f, :], 'texEV': raw['texEV'], 'tri': info['tri'],
           'kpt_ind': info['keypoints']}
  model_info = {'kpt_ind': info['keypoints'], 'trimIndex': info['trimIndex'],
                'symlist': info['symlist'], 'symlist_tri': info['symlist_tri'],
                'segbin': info['segbin'][trim - 1, :].T, 'segbin_tri': info['segbin_tri'].T}
  # 2. load expression
  exp = _load(src, EXPRESSION, ('mu_exp', 'w_exp', 'sigma_exp'))
  if exp['mu_exp'].shape[0] != model['shapeMU'].shape[0]:
    raise BfmInputError(f'{find(src, EXPRESSION)}: mu_exp has {exp["mu_exp"].shape[0]} rows, '
                         f'the trimmed shape {model["shapeMU"].shape[0]}')
  model.update(expMU=exp['mu_exp'], expPC=exp['w_exp'], expEV=exp['sigma_exp'])
  # 3. load mouth tri
  tri_mouth = _load(src, TRI_MOUTH, ('tri_mouth',))['tri_mouth']
  model['tri_mouth'] = tri_mouth
  model_info['tri_mouth'] = tri_mouth
  # 4.-6. face contour, nose hole, parallel (HPEN): BFM_info.mat only
  extras = [(CONTOUR, ('face_contour', 'face_contour_line', 'face_contour_front',
                       'face_contour_front_line')),
            (NOSE_HOLE, ('nose_hole', 'nose_hole_right', 'nose_hole_left')),
            (PARALLEL, ('parallel', 'parallel_face_contour'))]
  have_extras = all(find(src, where) for where, _ in extras)
  if have_extras:
    for where, fields in extras:
      data = _load(src, where, fields)
      model_info.update({k: data[k] for k in fields})
  # %% load 3DMMasSTN UV coords
  uv_all = _load(src, UV_STN, ('UV',))['UV']
  if uv_all.shape[0] == trim.size:  # already trimmed (3DDFA_V2's copy)
    uv = uv_all.T.copy()
  else:
    _check_rows(find(src, UV_STN), 'UV', uv_all, int(trim.max()))
    uv = uv_all[trim - 1, :].T.copy()
  # modify bad vers
  for bad, ring in zip(UV_BAD, UV_ROUNDS):
    uv[:, bad - 1] = uv[:, np.array(ring) - 1].mean(axis=1)
  model_info['uv_coords'] = uv.T
  # modify tri mouth (see the module docstring for setdiff(all_ind, bad_ind))
  keep = np.setdiff1d(np.arange(1, tri_mouth.shape[1] + 1), UV_BAD)
  tm_inner = np.concatenate([tri_mouth[:, keep - 1], TRI_MOUTH_ADD.T.astype(tri_mouth.dtype)],
                            axis=1)
  model_info['tri_mouth'] = tm_inner
  model['tri_mouth'] = tm_inner
  return model, (model_info if have_extras else None), uv.T.copy()


def write(src: str, out: str) -> list[str]:
  """Runs `generate` on `src` and saves face3d's files in `out`; returns the paths written."""
  from scipy import io as sio
  inputs = [find(src, w) for w in (RAW, MODEL_INFO, EXPRESSION, TRI_MOUTH, UV_STN)]
  for name in ('BFM.mat', 'BFM_UV.mat', 'BFM_info.mat'):
    target = os.path.abspath(os.path.join(out, name))
    if any(i and os.path.abspath(i) == target for i in inputs):
      raise BfmInputError(f'{target}: is an input; writing {name} there would replace it '
                           f'(choose another output folder)')
  model, model_info, uv = generate(src)
  os.makedirs(out, exist_ok=True)
  written = []

  def save(name, payload):
    path = os.path.join(out, name)
    sio.savemat(path, payload, do_compression=True)
    written.append(path)

  save('BFM.mat', {'model': model})
  if model_info is not None:
    save('BFM_info.mat', {'model_info': model_info})
  save('BFM_UV.mat', {'UV': uv})
  for where in PNCC:
    path = find(src, where)
    if path:
      shutil.copyfile(path, os.path.join(out, 'pncc_code.mat'))
      if os.path.join(out, 'pncc_code.mat') not in written:
        written.append(os.path.join(out, 'pncc_code.mat'))
  return written


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                              epilog=__doc__.split('\n\n', 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('src', help="folder with the downloads (face3d's raw/, 3ddfa/, stn/ or flat)")
  p.add_argument('out', help='folder for BFM.mat, BFM_UV.mat (and BFM_info.mat)')
  a = p.parse_args(argv)
  try:
    written = write(a.src, a.out)
  except BfmInputError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  for path in written:
    print(f'wrote {path}')
  if not any(w.endswith('BFM_info.mat') for w in written):
    print("BFM_info.mat not written: it needs the HPEN files (Model_face_contour_trimed.mat, "
          "Modelplus_nose_hole.mat, Modelplus_parallel.mat); the builders do not.")
  return 0


if __name__ == '__main__':
  sys.exit(main())
