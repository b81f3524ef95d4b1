r"""The ICT-FaceKit morphable face model (USC Institute for Creative Technologies, MIT licence):
import from its original `.obj` files, and the compact copy shipped inside the package.

    python -m prnet_jax.faces.ict_model --source=PATH/FaceXModel.tar.xz   # or the unpacked folder
    model = ict_model.load()                                        # the shipped copy

The original (`FaceXModel`: `generic_neutral_mesh.obj`, `identity000..099.obj`, 53 expression
`.obj` files with ARKit names, `vertex_indices.json`) is 387 MB of text. ICT's identity and
expression shapes are whole meshes; a shape *mode* is its difference from the neutral mesh, and
vertices = neutral + sum_k w_k * mode_k, identity weights ~ N(0, 1) (ICT's own sampler),
expression weights in [0, 1].

Units: centimetres (the neutral's outer eye corners are 8.9 apart, the head and neck 34 tall).
Model space: y up, z towards the viewer (the face looks along +z), x towards the face's left.

What the shipped copy keeps (`prnet_jax/assets/ict_face_model.npz`, under 10 MB), and why:
* every geometry part a renderer of faces needs: face, head and neck, mouth socket, eye
  sockets, gums and tongue, teeth, eyeballs; not ICT's lacrimal fluid, eye blend and eye
  occlusion films (they need Unreal Engine's transparent shaders; drawn opaque they hide the
  eyes) nor the eyelash strips (alpha-textured cards);
* the neutral mesh in float32; the 53 expression modes and the first `IDENTITY_COMPONENTS`
  identity modes (ICT orders them by variance; the first 40 carry most of it: the import
  prints the fraction) as float16 deltas (centimetres; float16's spacing is under 0.002 cm at
  the largest deltas, a thousandth of a pixel at 256 px);
* quads split into triangles; ICT's UV coordinates per triangle corner (its UV layout has
  seams), for textures; the 68 landmark vertices (Multi-PIE / iBUG order, from ICT's README);
  the parts' vertex ranges; each identity mode's RMS size.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import tarfile
from typing import Iterator, Optional, Sequence

import numpy as np

from prnet_jax import assets

SHIPPED = assets.path('ict_face_model.npz')
IDENTITY_COMPONENTS = 40

# ICT's parts: (name, first vertex, end vertex) in the original numbering (its README).
PARTS = (('face', 0, 9409), ('head_and_neck', 9409, 11248), ('mouth_socket', 11248, 13294),
         ('eye_socket_left', 13294, 13678), ('eye_socket_right', 13678, 14062),
         ('gums_and_tongue', 14062, 17039), ('teeth', 17039, 21451),
         ('eyeball_left', 21451, 23021), ('eyeball_right', 23021, 24591),
         ('lacrimal_fluid_left', 24591, 24795), ('lacrimal_fluid_right', 24795, 24999),
         ('eye_blend_left', 24999, 25023), ('eye_blend_right', 25023, 25047),
         ('eye_occlusion_left', 25047, 25199), ('eye_occlusion_right', 25199, 25351),
         ('eyelashes_left', 25351, 26035), ('eyelashes_right', 26035, 26719))
KEPT_PARTS = ('face', 'head_and_neck', 'mouth_socket', 'eye_socket_left', 'eye_socket_right',
              'gums_and_tongue', 'teeth', 'eyeball_left', 'eyeball_right')
NUM_VERTICES = 26719
# The 68 Multi-PIE / iBUG landmark vertices, 0-based (ICT-FaceKit README, "Facial Landmarks").
LANDMARKS = (1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608,
             3272, 4088, 3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978,
             4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511,
             3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346,
             6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966)


class ICTModelError(ValueError):
  """The ICT files are missing or malformed; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class ICTModel:
  """The kept parts of the ICT face model (vertex indices renumbered over the kept parts).

  Attributes:
    neutral: (V, 3) float32, centimetres.
    identity_modes: (Ki, V, 3) float32 deltas; weights ~ N(0, 1).
    identity_rms: (Ki,) RMS vertex displacement of each identity mode (cm).
    expression_modes: (Ke, V, 3) float32 deltas; weights in [0, 1].
    expression_names: (Ke,) ARKit names, `_L` / `_R` for the face's left / right.
    triangles: (T, 3) int32, counter-clockwise seen from outside.
    triangle_uv: (T, 3, 2) float32 ICT's UV coordinates of each triangle corner, v up.
    landmarks: (68,) int32 vertex indices, iBUG-68 order.
    parts: {name: (first vertex, end vertex)} over the kept numbering.
  """
  neutral: np.ndarray
  identity_modes: np.ndarray
  identity_rms: np.ndarray
  expression_modes: np.ndarray
  expression_names: tuple[str, ...]
  triangles: np.ndarray
  triangle_uv: np.ndarray
  landmarks: np.ndarray
  parts: dict[str, tuple[int, int]]

  def vertices(self, identity: Optional[np.ndarray] = None,
               expression: Optional[np.ndarray] = None) -> np.ndarray:
    """(V, 3) float32 vertices for identity weights (Ki',) and expression weights (Ke,)."""
    v = self.neutral.astype(np.float32)
    if identity is not None:
      w = np.asarray(identity, np.float32)
      v = v + np.tensordot(w, self.identity_modes[:len(w)], 1)
    if expression is not None:
      v = v + np.tensordot(np.asarray(expression, np.float32), self.expression_modes, 1)
    return v

  def part(self, name: str) -> slice:
    first, end = self.parts[name]
    return slice(first, end)


# ---------------------------------------------------------------------------- reading .obj

def _parse_obj(text: bytes, name: str, with_faces: bool):
  """(vertices (V, 3) float64, faces: list of (vertex indices, uv indices) or None,
  uv (U, 2) or None) of one ICT .obj file."""
  verts, uvs, faces = [], [], []
  for line in text.splitlines():
    if line.startswith(b'v '):
      verts.append(line[2:])
    elif with_faces and line.startswith(b'vt '):
      uvs.append(line[3:])
    elif with_faces and line.startswith(b'f '):
      corners = [c.split(b'/') for c in line.split()[1:]]
      faces.append(([int(c[0]) - 1 for c in corners], [int(c[1]) - 1 for c in corners]))
  try:
    v = np.array(b' '.join(verts).split(), np.float64).reshape(-1, 3)
    uv = np.array(b' '.join(uvs).split(), np.float64).reshape(-1, 2) if with_faces else None
  except ValueError as e:
    raise ICTModelError(f'{name}: malformed vertex lines ({e})') from e
  if len(v) != NUM_VERTICES:
    raise ICTModelError(f'{name}: {len(v)} vertices, the ICT topology has {NUM_VERTICES}')
  return v, (faces if with_faces else None), uv


def read_files(source: str, names: Sequence[str]) -> dict[str, bytes]:
  """{name: bytes} of the named files of the FaceXModel folder or the FaceXModel.tar.xz archive
  (one pass through the archive). Raises ICTModelError naming what is missing."""
  if os.path.isdir(source):
    out = {}
    for name in names:
      path = os.path.join(source, name)
      if not os.path.isfile(path):
        raise ICTModelError(f'{path}: missing (expected the unpacked ICT FaceXModel folder)')
      with open(path, 'rb') as f:
        out[name] = f.read()
    return out
  if not os.path.isfile(source):
    raise ICTModelError(f'{source}: no such folder or archive (give the FaceXModel folder or '
                        f'FaceXModel.tar.xz of ICT-FaceKit)')
  wanted, out = set(names), {}
  try:
    with tarfile.open(source, mode='r|*') as archive:  # streaming: xz is read once
      for member in archive:
        name = os.path.basename(member.name)
        if member.isfile() and name in wanted:
          out[name] = archive.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ICTModelError(f'{source}: not a readable tar archive ({e})') from e
  missing = sorted(wanted - set(out))
  if missing:
    raise ICTModelError(f'{source}: {len(missing)} files missing from the archive, e.g. '
                        f'{missing[:3]}')
  return out


def _kept_vertices() -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
  ranges = {name: (a, b) for name, a, b in PARTS}
  old = np.concatenate([np.arange(*ranges[name]) for name in KEPT_PARTS])
  parts, start = {}, 0
  for name in KEPT_PARTS:
    a, b = ranges[name]
    parts[name] = (start, start + b - a)
    start += b - a
  return old, parts


def import_ict(source: str, identity_components: int = IDENTITY_COMPONENTS,
               progress: bool = True) -> tuple[ICTModel, np.ndarray]:
  """Reads ICT's original files: (the kept model in float32, every identity mode's RMS)."""
  if progress:
    print(f'reading {source} ...', flush=True)
  config_name = 'vertex_indices.json'
  config_bytes = read_files(source, [config_name])[config_name]
  try:
    config = json.loads(config_bytes)
    names = list(config['expressions'])
    landmarks = [int(i) for i in config['idx_to_landmark_verts']]
  except (KeyError, ValueError, TypeError) as e:
    raise ICTModelError(f'{source}: {config_name}: {e}') from e
  if tuple(landmarks) != LANDMARKS:
    raise ICTModelError(f'{source}: {config_name} landmarks differ from ICT\'s README')
  id_files = [f'identity{i:03d}.obj' for i in range(100)]
  ex_files = [f'{n}.obj' for n in names]
  files = read_files(source, ['generic_neutral_mesh.obj'] + id_files + ex_files)
  neutral, faces, uv = _parse_obj(files.pop('generic_neutral_mesh.obj'),
                                  'generic_neutral_mesh.obj', True)
  old, parts = _kept_vertices()
  new_index = np.full(NUM_VERTICES, -1, np.int64)
  new_index[old] = np.arange(len(old))
  tris, tri_uv = [], []
  for vi, ti in faces:
    if min(new_index[vi]) < 0:
      continue  # a face of a dropped part
    for k in range(1, len(vi) - 1):  # fan-split quads (and any polygon)
      tris.append(new_index[[vi[0], vi[k], vi[k + 1]]])
      tri_uv.append(uv[[ti[0], ti[k], ti[k + 1]]])

  def modes(file_names: Sequence[str]) -> Iterator[np.ndarray]:
    for i, name in enumerate(file_names):
      if progress and (i % 25 == 24 or i + 1 == len(file_names)):
        print(f'  parsed {i + 1}/{len(file_names)} ({name})', flush=True)
      v, _, _ = _parse_obj(files.pop(name), name, False)  # pop: memory freed as we go
      yield (v - neutral)[old]

  identity = np.stack(list(modes(id_files)))
  rms = np.sqrt((identity ** 2).sum(-1).mean(-1))
  expression = np.stack(list(modes(ex_files)))
  model = ICTModel(
      neutral=neutral[old].astype(np.float32),
      identity_modes=identity[:identity_components].astype(np.float32),
      identity_rms=rms[:identity_components].astype(np.float32),
      expression_modes=expression.astype(np.float32), expression_names=tuple(names),
      triangles=np.asarray(tris, np.int32), triangle_uv=np.asarray(tri_uv, np.float32),
      landmarks=new_index[landmarks].astype(np.int32), parts=parts)
  return model, rms


# ----------------------------------------------------------------------- the shipped copy

def save(model: ICTModel, path: str) -> None:
  """Writes the compact copy: float16 modes and UVs, uint16 triangles, zip-compressed."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buf = io.BytesIO()
  np.savez_compressed(
      buf, neutral=model.neutral.astype(np.float32),
      identity_modes=model.identity_modes.astype(np.float16),
      identity_rms=model.identity_rms.astype(np.float32),
      expression_modes=model.expression_modes.astype(np.float16),
      expression_names=np.array(model.expression_names),
      triangles=model.triangles.astype(np.uint16),
      triangle_uv=model.triangle_uv.astype(np.float16),
      landmarks=model.landmarks.astype(np.int32),
      part_names=np.array(list(model.parts)),
      part_ranges=np.array(list(model.parts.values()), np.int32))
  with open(path, 'wb') as f:
    f.write(buf.getvalue())


def load(path: str = SHIPPED) -> ICTModel:
  """The compact ICT model (default: the copy shipped in the package)."""
  try:
    with np.load(path) as d:
      return ICTModel(
          neutral=d['neutral'].astype(np.float32),
          identity_modes=d['identity_modes'].astype(np.float32),
          identity_rms=d['identity_rms'].astype(np.float32),
          expression_modes=d['expression_modes'].astype(np.float32),
          expression_names=tuple(str(n) for n in d['expression_names']),
          triangles=d['triangles'].astype(np.int32),
          triangle_uv=d['triangle_uv'].astype(np.float32),
          landmarks=d['landmarks'].astype(np.int32),
          parts={str(n): (int(a), int(b)) for n, (a, b) in zip(d['part_names'],
                                                              d['part_ranges'])})
  except (OSError, KeyError, ValueError) as e:
    raise ICTModelError(f'{path}: not a readable compact ICT model ({e})') from e


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description='Import the ICT-FaceKit face model from its .obj files.')
  p.add_argument('--source', required=True,
                 help='the unpacked FaceXModel folder or FaceXModel.tar.xz of ICT-FaceKit')
  p.add_argument('--output', default=SHIPPED, help='the compact .npz to write')
  p.add_argument('--identity_components', type=int, default=IDENTITY_COMPONENTS)
  a = p.parse_args(argv)
  try:
    model, rms = import_ict(a.source, a.identity_components)
  except ICTModelError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  save(model, a.output)
  kept = float((rms[:a.identity_components] ** 2).sum() / (rms ** 2).sum())
  print(f'wrote {a.output} ({os.path.getsize(a.output) / 2 ** 20:.1f} MiB): '
        f'{len(model.neutral)} vertices, {len(model.triangles)} triangles, '
        f'{a.identity_components} of 100 identity modes ({100 * kept:.1f}% of the identity '
        f'variance), {len(model.expression_names)} expressions')
  return 0


if __name__ == '__main__':
  sys.exit(main())
