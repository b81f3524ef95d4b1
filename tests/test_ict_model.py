"""The ICT-FaceKit model: the compact copy shipped in the package against ICT's original files
(where ../shared is present), and what the shipped copy is without them."""

import os

import numpy as np
import pytest

from prnet_jax.faces import ict_model


@pytest.fixture(scope='module')
def shipped():
  return ict_model.load()


def test_the_shipped_copy_loads_without_the_originals(shipped):
  m = shipped
  v = len(m.neutral)
  assert os.path.getsize(ict_model.SHIPPED) < 10 * 2 ** 20
  assert list(m.parts) == list(ict_model.KEPT_PARTS)
  ends = [b for _, b in m.parts.values()]
  assert [a for a, _ in m.parts.values()] == [0] + ends[:-1] and ends[-1] == v == 24591
  assert m.identity_modes.shape == (ict_model.IDENTITY_COMPONENTS, v, 3)
  assert m.expression_modes.shape == (53, v, 3) and len(m.expression_names) == 53
  assert {'jawOpen', 'eyeBlink_L', 'eyeBlink_R', 'mouthSmile_L', 'mouthPucker'} <= set(
      m.expression_names)
  assert m.triangles.min() >= 0 and m.triangles.max() < v
  assert m.triangle_uv.shape == m.triangles.shape + (2,)
  # Identity modes come largest first (ICT's PCA order; their RMS over the kept vertices
  # decreases up to 1%).
  assert np.all(np.diff(m.identity_rms) <= 0.01 * m.identity_rms[:-1])
  assert m.identity_rms[0] > 10 * m.identity_rms[-1]
  # The 68 landmarks are face vertices; units are centimetres: the outer eye corners are ~9
  # apart, the nose tip (30) on the mid-line in front, the right eye (36) at -x.
  face = m.part('face')
  assert np.all((m.landmarks >= face.start) & (m.landmarks < face.stop))
  lm = m.neutral[m.landmarks]
  assert 8 < np.linalg.norm(lm[36] - lm[45]) < 10
  assert abs(lm[30, 0]) < 1e-3 and lm[30, 2] > m.neutral[face, 2].max() - 0.05
  assert lm[36, 0] < 0 < lm[45, 0]
  # Faces are wound counter-clockwise seen from outside: the front of the face faces +z.
  t = m.triangles[(m.triangles < face.stop).all(1)]
  n = np.cross(m.neutral[t[:, 1]] - m.neutral[t[:, 0]], m.neutral[t[:, 2]] - m.neutral[t[:, 0]])
  cheeks = np.abs(m.neutral[t].mean(1)[:, 0]) < 4
  assert np.mean(n[cheeks, 2] > 0) > 0.8
  # Weights move the mesh: an open jaw moves the chin down.
  jaw = np.zeros(53)
  jaw[m.expression_names.index('jawOpen')] = 1.0
  assert m.vertices(expression=jaw)[m.landmarks[8], 1] < lm[8, 1] - 1.0
  assert m.vertices(np.ones(3))[0].shape == (3,)


@pytest.mark.slow(reason='imports the original .obj files')
def test_the_shipped_copy_is_the_original_model(shipped, tmp_path):
  from conftest import shared_path
  archive = shared_path('ict-facekit', 'FaceXModel.tar.xz')
  original, rms = ict_model.import_ict(archive, progress=False)
  m = shipped
  np.testing.assert_array_equal(m.neutral, original.neutral)
  # float16 deltas: within float16's relative spacing (2^-11) of the original.
  for a, b in ((m.identity_modes, original.identity_modes),
               (m.expression_modes, original.expression_modes)):
    assert np.all(np.abs(a - b) <= 2.0 ** -11 * np.abs(b) + 1e-7)
  np.testing.assert_allclose(m.identity_rms, rms[:ict_model.IDENTITY_COMPONENTS], rtol=1e-6)
  assert m.expression_names == original.expression_names
  np.testing.assert_array_equal(m.triangles, original.triangles)
  np.testing.assert_array_equal(m.landmarks, original.landmarks)
  np.testing.assert_allclose(m.triangle_uv, original.triangle_uv, atol=2e-3)
  assert m.parts == original.parts
  # The identity modes kept carry nearly all of the variance.
  assert (rms[:ict_model.IDENTITY_COMPONENTS] ** 2).sum() / (rms ** 2).sum() > 0.97


def test_bad_sources_are_named(tmp_path, capsys):
  assert ict_model.main([f'--source={tmp_path}/none', f'--output={tmp_path}/o.npz']) == 1
  assert 'no such folder or archive' in capsys.readouterr().err
  (tmp_path / 'folder').mkdir()
  assert ict_model.main([f'--source={tmp_path / "folder"}', f'--output={tmp_path}/o.npz']) == 1
  assert 'vertex_indices.json: missing' in capsys.readouterr().err
  (tmp_path / 'junk.tar.xz').write_bytes(b'not an archive')
  assert ict_model.main([f'--source={tmp_path / "junk.tar.xz"}',
                         f'--output={tmp_path}/o.npz']) == 1
  assert 'not a readable tar archive' in capsys.readouterr().err
  with pytest.raises(ict_model.ICTModelError, match='not a readable compact ICT model'):
    ict_model.load(str(tmp_path / 'junk.tar.xz'))
  assert not os.path.exists(tmp_path / 'o.npz')
