"""The native CPU kernel-gradient kernel computes the convolution's kernel gradient.

References: a float64 NumPy sum over pixels (brute force), XLA's own gradient, and the whole
model's gradients with the kernel turned off. The kernel is built with the host's C++ compiler;
without one these tests skip with that reason (CI's machines have one: .ci/run prints it).
"""

import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prnet_jax import native
from prnet_jax.nn import conv_ops
from prnet_jax.nn.model import PRNet, init_variables

from fixtures import ROOT


@pytest.fixture(scope='module')
def lanes():
  if not native.enabled_by_env():
    pytest.skip('PRNET_JAX_NATIVE=0')
  if native.find_compiler() is None:
    pytest.skip('no C++ compiler on this machine (the native kernels fall back to XLA)')
  return native.load()  # a compiler that fails is a failure, not a skip


def brute_force_kernel_grad(x, dy, kh, kw, padding):
  """dw[a, b, c, o] = sum_{n, i, j} xpad[n, i + a, j + b, c] dy[n, i, j, o] in float64."""
  x = np.asarray(x, np.float64)
  dy = np.asarray(dy, np.float64)
  (pt, pb), (pl, pr) = padding
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho, wo = dy.shape[1:3]
  dw = np.zeros((kh, kw, x.shape[-1], dy.shape[-1]))
  for a in range(kh):
    for b in range(kw):
      dw[a, b] = np.einsum('nijc,nijo->co', xp[:, a:a + ho, b:b + wo], dy)
  return dw


CASES = [  # (n, h, w, ci, co, kh, kw, padding)
    (2, 9, 7, 16, 16, 4, 4, ((1, 2), (1, 2))),      # TF SAME 4x4, vectors over co
    (2, 8, 8, 16, 32, 4, 4, ((2, 1), (2, 1))),      # stride-1 transposed conv padding, 2 vectors
    (3, 6, 5, 3, 16, 4, 4, ((1, 2), (1, 2))),       # 3 input channels (the first conv)
    (2, 8, 6, 32, 3, 4, 4, ((2, 1), (2, 1))),       # 3 output channels: vectors over ci
    (2, 5, 5, 20, 64, 2, 2, ((1, 1), (1, 1))),      # stride-2 transposed conv; ragged blocks
    (1, 6, 6, 64, 16, 2, 2, ((0, 0), (0, 0))),      # space-to-depth conv, VALID
    (2, 4, 3, 48, 16, 3, 5, ((0, 3), (2, 0))),      # non-square kernel, lopsided padding
    (1, 2, 2, 16, 16, 4, 4, ((3, 3), (3, 3))),      # windows mostly outside the image
]


@pytest.mark.slow(reason='float64 brute force')
@pytest.mark.parametrize('n,h,w,ci,co,kh,kw,padding', CASES)
def test_kernel_grad_matches_float64_brute_force_and_xla(lanes, n, h, w, ci, co, kh, kw,
                                                         padding):
  if co % lanes and ci % lanes:
    pytest.skip(f'channels {ci}/{co} not a multiple of this CPU\'s {lanes} lanes')
  r = np.random.RandomState(n * 100 + ci + co)
  x = r.randn(n, h, w, ci).astype(np.float32)
  (pt, pb), (pl, pr) = padding
  dy = r.randn(n, h + pt + pb - kh + 1, w + pl + pr - kw + 1, co).astype(np.float32)
  got = np.asarray(jax.jit(native.conv_kernel_grad, static_argnums=(2, 3))(
      x, dy, (kh, kw), padding))
  want = brute_force_kernel_grad(x, dy, kh, kw, padding)
  scale = np.sqrt(n * dy.shape[1] * dy.shape[2])  # size of a sum of that many unit products
  np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=1e-5)
  xla = np.asarray(native.xla_conv_kernel_grad(x, dy, (kh, kw), padding))
  np.testing.assert_allclose(got, xla, atol=1e-5 * scale, rtol=1e-5)


def test_kernel_grad_is_deterministic_and_parallel_split_is_shape_only(lanes):
  """Same inputs, same bits: the row split into partial sums depends on shapes only."""
  r = np.random.RandomState(0)
  x = r.randn(4, 64, 64, 16).astype(np.float32)
  dy = r.randn(4, 64, 64, 32).astype(np.float32)
  f = jax.jit(lambda x, dy: native.conv_kernel_grad(x, dy, (4, 4), ((1, 2), (1, 2))))
  a, b = np.asarray(f(x, dy)), np.asarray(f(x, dy))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, brute_force_kernel_grad(x, dy, 4, 4, ((1, 2), (1, 2))),
                             atol=1e-5 * np.sqrt(4 * 64 * 64), rtol=1e-5)


FORWARD_CASES = [  # (kind, n, h, w, ci, co, kh, kw, padding)
    ('small_co', 2, 9, 70, 16, 3, 4, 4, ((2, 1), (2, 1))),   # PRNet's 16 -> 3 output layer
    ('small_co', 2, 8, 8, 3, 3, 4, 4, ((2, 1), (2, 1))),     # 3 -> 3
    ('small_co', 3, 5, 33, 5, 1, 3, 2, ((0, 1), (1, 0))),    # odd sizes, one channel, tails
    ('small_co', 1, 4, 4, 2, 4, 4, 4, ((3, 3), (3, 3))),     # mostly padding, 4 channels
    ('few_ci', 2, 9, 37, 3, 16, 4, 4, ((1, 2), (1, 2))),     # the first conv (3 -> 16)
    ('few_ci', 2, 6, 30, 3, 32, 4, 4, ((1, 2), (1, 2))),     # 2 vectors of outputs
    ('few_ci', 1, 5, 9, 1, 64, 2, 3, ((0, 0), (2, 1))),      # 4 vectors, non-square kernel
]


def brute_force_conv(x, w, padding):
  x = np.pad(np.asarray(x, np.float64), ((0, 0), *padding, (0, 0)))
  w = np.asarray(w, np.float64)
  kh, kw = w.shape[:2]
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  return sum(np.einsum('nijc,co->nijo', x[:, a:a + ho, b:b + wo], w[a, b])
             for a in range(kh) for b in range(kw))


@pytest.mark.parametrize('kind,n,h,w,ci,co,kh,kw,padding', FORWARD_CASES)
def test_forward_kernels_match_float64_brute_force(lanes, kind, n, h, w, ci, co, kh, kw,
                                                   padding):
  if kind == 'few_ci' and (co % lanes or ci >= lanes):
    pytest.skip(f'{ci} -> {co} channels do not suit this CPU\'s {lanes} lanes')
  r = np.random.RandomState(ci * 10 + co)
  x = r.randn(n, h, w, ci).astype(np.float32)
  kernel = r.randn(kh, kw, ci, co).astype(np.float32)
  got = np.asarray(jax.jit(native.conv_forward, static_argnums=(2, 3))(
      x, kernel, padding, kind))
  want = brute_force_conv(x, kernel, padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5 * np.sqrt(kh * kw * ci), rtol=1e-5)


def test_forward_kind_rules(lanes):
  x16, x3 = jnp.zeros((1, 8, 8, 16)), jnp.zeros((1, 8, 8, 3))
  single = jax.device_count() == 1
  assert native.forward_kind(x16, (4, 4, 16, 3)) == ('small_co' if single else None)
  assert native.forward_kind(x3, (4, 4, 3, 3)) == ('small_co' if single else None)
  assert native.forward_kind(x3, (4, 4, 3, lanes)) == ('few_ci' if single else None)
  assert native.forward_kind(x16, (4, 4, 16, 16)) is None        # XLA's is as fast
  assert native.forward_kind(x3.astype(jnp.bfloat16), (4, 4, 3, 3)) is None


def test_use_for_rules(lanes):
  x32 = jnp.zeros((2, 64, 64, 16), jnp.float32)  # 8192 output pixels at stride 1
  assert native.use_for(x32, (4, 4, 16, 16)) == (jax.device_count() == 1)
  assert not native.use_for(x32, (4, 4, 16, 16), out_pixels=native.MIN_REDUCTION_PIXELS - 1)
  assert not native.use_for(x32.astype(jnp.bfloat16), (4, 4, 16, 16))
  with jax.enable_x64(True):
    assert not native.use_for(jnp.zeros((2, 64, 64, 16), jnp.float64), (4, 4, 16, 16))
  assert not native.use_for(x32, (4, 4, 256, 256))       # large kernels: XLA is faster
  assert not native.use_for(jnp.zeros((2, 64, 64, 3)), (4, 4, 3, 3))   # no vector width


def test_conv_ops_gradients_use_the_native_kernel_and_agree_with_xla(lanes, monkeypatch):
  """Each fast-path conv that qualifies calls the kernel in its backward pass, with its own
  padding convention, and gives XLA's gradients."""
  if jax.device_count() != 1:
    pytest.skip('the native kernel gradient is used on a single device only')
  monkeypatch.setattr(native, 'MIN_REDUCTION_PIXELS', 0)  # small test shapes
  r = np.random.RandomState(1)
  cases = [(conv_ops.conv_same, 1, (4, 4, 16, 32)), (conv_ops.conv_same, 2, (4, 4, 16, 16)),
           (conv_ops.conv_transpose_same, 1, (4, 4, 16, 16)),
           (conv_ops.conv_transpose_same, 2, (4, 4, 16, 32))]
  for op, stride, kshape in cases:
    cin = kshape[3] if op is conv_ops.conv_transpose_same else kshape[2]
    x = jnp.asarray(r.randn(2, 8, 6, cin), jnp.float32)
    kernel = jnp.asarray(r.randn(*kshape), jnp.float32)
    probe = jnp.asarray(r.randn(*op(x, kernel, stride).shape), jnp.float32)

    def loss(x, k):
      return jnp.sum(jnp.sin(op(x, k, stride)) * probe)
    grads = {}
    for on in (True, False):
      monkeypatch.setattr(conv_ops, 'NATIVE_KERNELS', on)
      fn = jax.jit(jax.grad(loss, (0, 1)))
      hlo = fn.lower(x, kernel).as_text()
      assert (native.TARGET in hlo) == on, (op.__name__, stride)
      grads[on] = fn(x, kernel)
    for a, b in zip(grads[True], grads[False]):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@pytest.mark.slow(reason='full-model gradients')
def test_whole_model_gradients_match_with_and_without_the_native_kernel(lanes, monkeypatch):
  """Full-width PRNet at 32 px (16-512 channels): loss gradients of every parameter with the
  native kernel gradients equal XLA's to float32 round-off.

  BatchNorm uses its statistics (train=False): with batch statistics this freshly initialised
  network is ill-conditioned (even in float64, a 1e-7 relative change of the input moves some
  gradients by 5-30%), so any change of round-off would exceed any fixed tolerance; with the
  statistics the same change moves them by ~1e-6. Every convolution runs the same kernels."""
  if jax.device_count() != 1:
    pytest.skip('the native kernel gradient is used on a single device only')
  monkeypatch.setattr(native, 'MIN_REDUCTION_PIXELS', 0)  # every layer that qualifies by shape
  model = PRNet(resolution=32, width=16, bn_momentum=0.9)
  variables = jax.jit(lambda k: init_variables(model, k))(jax.random.key(0))
  r = np.random.RandomState(2)
  x = jnp.asarray(r.rand(2, 32, 32, 3), jnp.float32)
  target = jnp.asarray(r.rand(2, 32, 32, 3) * 32, jnp.float32)

  def loss(params):
    y = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                    train=False)
    return jnp.mean((y - target) ** 2)
  grads = {}
  for on in (True, False):
    monkeypatch.setattr(conv_ops, 'NATIVE_KERNELS', on)
    fn = jax.jit(jax.grad(loss))
    assert (native.TARGET in fn.lower(variables['params']).as_text()) == on
    grads[on] = fn(variables['params'])
  flat_on = jax.tree_util.tree_leaves_with_path(grads[True])
  flat_off = jax.tree_util.tree_leaves(grads[False])
  assert len(flat_on) == len(flat_off) > 50
  for (path, a), b in zip(flat_on, flat_off):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5 * float(jnp.max(jnp.abs(b))) + 1e-12,
                               err_msg=jax.tree_util.keystr(path))


def test_a_failing_compiler_is_reported_and_xla_takes_over(tmp_path):
  """A broken compiler gives a NativeBuildError naming the source file and the compiler's
  message; in a fresh process the convolutions still run (XLA's gradient) after one warning."""
  bad = tmp_path / 'bad-c++'
  bad.write_text('#!/bin/sh\necho "bad-c++: this compiler is broken" >&2\nexit 1\n')
  bad.chmod(0o755)
  env = dict(os.environ, CXX=str(bad), PRNET_JAX_CACHE=str(tmp_path / 'cache'),
             PYTHONPATH=ROOT)
  code = '''
import jax, jax.numpy as jnp
from prnet_jax import native
from prnet_jax.nn import conv_ops
try:
  native.build()
except native.NativeBuildError as e:
  assert 'conv_kernels.cc' in str(e) and 'this compiler is broken' in str(e), e
  print('BUILD ERROR OK')
x = jnp.ones((2, 64, 64, 16)); k = jnp.ones((4, 4, 16, 16))
g = jax.grad(lambda k: jnp.sum(conv_ops.conv_same(x, k, 1)))(k)
print('GRAD', float(g.sum()))
'''
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'BUILD ERROR OK' in out.stdout
  assert 'using XLA convolution gradients instead' in out.stderr
  assert out.stderr.count('using XLA convolution gradients instead') == 1
  # sum over the kernel of sum_{pixels in range} 1: every tap sees some of the 64x64 ones.
  total = float(out.stdout.split('GRAD')[1])
  assert total == brute_force_kernel_grad(np.ones((2, 64, 64, 16)), np.ones((2, 64, 64, 16)),
                                          4, 4, ((1, 2), (1, 2))).sum()


@pytest.mark.slow(reason='native builds for other vector widths')
@pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64'), reason='x86 flags')
@pytest.mark.parametrize('flags,want_lanes', [('-march=x86-64-v3', 8), ('-march=x86-64', 4)])
def test_kernels_built_for_narrower_vectors_compute_the_same(lanes, tmp_path, flags,
                                                             want_lanes):
  """The AVX2 and SSE2 builds (8 and 4 lanes: other register blocks) run on this CPU too and
  agree with the float64 brute force."""
  tests_dir = os.path.dirname(os.path.abspath(__file__))  # for this module's references
  env = dict(os.environ, PRNET_JAX_NATIVE_FLAGS=flags, PRNET_JAX_CACHE=str(tmp_path),
             PYTHONPATH=os.pathsep.join([ROOT, tests_dir]))
  code = f'''
import numpy as np
from prnet_jax import native
from test_native import brute_force_kernel_grad, brute_force_conv
lanes = native.load()
assert lanes == {want_lanes}, lanes
r = np.random.RandomState(0)
for ci, co in ((16, 24), (3, 2 * lanes), (20, 3), (5, 64)):
  x = r.randn(2, 7, 9, ci).astype(np.float32)
  pad = ((1, 2), (2, 1))
  dy = r.randn(2, 7, 9, co).astype(np.float32)
  if ci % lanes == 0 or co % lanes == 0:
    got = np.asarray(native.conv_kernel_grad(x, dy, (4, 4), pad))
    np.testing.assert_allclose(got, brute_force_kernel_grad(x, dy, 4, 4, pad), atol=1e-4,
                               rtol=1e-5)
  w = r.randn(4, 4, ci, co).astype(np.float32)
  kind = 'small_co' if co <= 4 else 'few_ci' if ci < lanes and co % lanes == 0 else None
  if kind:
    got = np.asarray(native.conv_forward(x, w, pad, kind))
    np.testing.assert_allclose(got, brute_force_conv(x, w, pad), atol=1e-4, rtol=1e-5)
print('OK', lanes)
'''
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'OK {want_lanes}' in out.stdout


def test_an_unwritable_cache_folder_is_a_clear_build_error(tmp_path, monkeypatch):
  blocker = tmp_path / 'not-a-folder'
  blocker.write_text('a file where the cache folder should be')
  monkeypatch.setenv('PRNET_JAX_CACHE', str(blocker / 'cache'))
  with pytest.raises(native.NativeBuildError, match='PRNET_JAX_CACHE'):
    native.build(compiler=native.find_compiler() or sys.executable)


def test_cli_builds_checks_and_reports(lanes):
  out = subprocess.run([sys.executable, '-m', 'prnet_jax.native'], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout[:out.stdout.rindex('}') + 1])
  assert report['lanes'] == lanes and os.path.exists(report['library'])
  assert set(report['max_rel_diff']) == {'kernel_grad', 'forward_small_co', 'forward_few_ci'}
  assert all(v < 1e-4 for v in report['max_rel_diff'].values())
  assert out.stdout.rstrip().splitlines()[-1].startswith('OK')


def test_bad_inputs_are_named(lanes, monkeypatch):
  """No compiler, a mismatched output gradient, and shapes a kernel is not written for each
  give a message that says what is wrong."""
  monkeypatch.delenv('CXX', raising=False)
  monkeypatch.setenv('PATH', '/nonexistent')
  assert native.find_compiler() is None
  with pytest.raises(native.NativeBuildError, match='no C.. compiler found'):
    native.build()
  x = jnp.zeros((1, 8, 8, 16))
  with pytest.raises(ValueError, match='does not match input'):
    native.conv_kernel_grad(x, jnp.zeros((1, 8, 7, 16)), (4, 4), ((1, 2), (1, 2)))
  # Called directly (conv_ops never does), the kernels refuse shapes they are not written for.
  with pytest.raises(Exception, match='divisible by the vector width'):
    jax.block_until_ready(native.conv_kernel_grad(
        jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)), (4, 4), ((1, 2), (1, 2))))
  with pytest.raises(Exception, match='needs 1 to 4 output channels'):
    jax.block_until_ready(native.conv_forward(x, jnp.zeros((4, 4, 16, 5)), ((1, 2), (1, 2)),
                                              'small_co'))
