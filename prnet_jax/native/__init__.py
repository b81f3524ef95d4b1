"""Native CPU kernels as XLA FFI custom calls, compiled on first use with the host's compiler.

Stride-1 NHWC convolutions (``conv_kernels.cc``), each used only where measured faster than
XLA:CPU's own, only on CPU and only in float32; everywhere else, and if the library cannot be
built, XLA computes the same function (BENCHMARKS.md has the numbers):

* the kernel (weight) gradient: XLA computes it as a convolution with an output-sized window at
  60-170 GFLOP/s; the native kernel reads the NHWC arrays directly and runs at 250-330 GFLOP/s
  on the shallow, wide layers where PRNet's training time goes (``use_for``);
* the forward pass with 1-4 output channels (PRNet's 3-channel output layers; XLA 13-33
  GFLOP/s, native 50-80) or fewer input channels than the vector width (the first conv, and the
  input gradient of the 16 -> 3 layer) (``forward_kind``).

And triangle rasterisation with a z-buffer (``raster.cc``, ``rasterize``): the function of
``render.rasterize`` visiting each triangle's clipped bounding box (no window plan), used by
``render.rasterize_auto`` on CPU: ~40x faster for a 49k-triangle head at 256 px.

The library is built with ``$CXX`` (else ``c++``, ``g++`` or ``clang++``) with
``-O3 -march=native`` into ``$PRNET_JAX_CACHE`` (default ``~/.cache/prnet_jax``) under a name that
hashes the source, compiler, jaxlib version and CPU, so machines sharing a home folder do not
share binaries; a build takes ~5 s once. ``PRNET_JAX_NATIVE=0`` turns the kernels off;
``python -m prnet_jax.native`` builds them and checks each against XLA's op.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

SOURCES = tuple(pathlib.Path(__file__).with_name(n) for n in ('conv_kernels.cc', 'raster.cc'))
HEADERS = (pathlib.Path(__file__).with_name('parallel.h'),)
RASTER_TARGET = 'prnet_rasterize'
TARGET = 'prnet_conv_kernel_grad'
FORWARD_TARGETS = {'small_co': 'prnet_conv_forward_small_co', 'few_ci': 'prnet_conv_forward'}
# Kernels with more elements than this (deep layers: short reductions into large kernels) are
# left to XLA, which is faster there (measured at 16 px / 256 channels: 55-66 vs 28 ms).
MAX_KERNEL_ELEMENTS = 1 << 18
# ... and so are reductions over fewer output pixels (batch x height x width) than this
# (measured at batch 16: 16 px / 128 channels 11.5 vs 10.1 ms; 32 px 33 vs 40 ms).
MIN_REDUCTION_PIXELS = 8192
_DN = ('NHWC', 'HWIO', 'NHWC')

_lock = threading.Lock()
_state: dict = {}


class NativeBuildError(RuntimeError):
  """The native library could not be compiled or loaded."""


def enabled_by_env() -> bool:
  return os.environ.get('PRNET_JAX_NATIVE', '1').strip().lower() not in ('0', 'false', 'no')


def find_compiler() -> Optional[str]:
  for name in (os.environ.get('CXX'), 'c++', 'g++', 'clang++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_signature() -> str:
  try:
    text = pathlib.Path('/proc/cpuinfo').read_text()
    lines = [l for l in text.splitlines() if l.startswith(('flags', 'model name', 'Features'))]
    return '\n'.join(sorted(set(lines)))
  except OSError:
    return f'{platform.machine()} {platform.processor()}'


def _arch_flags() -> list[list[str]]:
  """Compiler flag sets to try in order: tuned for this CPU first, portable last;
  ``$PRNET_JAX_NATIVE_FLAGS`` replaces them (e.g. ``-march=x86-64-v3`` for AVX2 code)."""
  if os.environ.get('PRNET_JAX_NATIVE_FLAGS'):
    return [os.environ['PRNET_JAX_NATIVE_FLAGS'].split()]
  if platform.machine().lower() in ('x86_64', 'amd64'):
    return [['-march=native', '-mprefer-vector-width=512'], []]
  return [['-mcpu=native'], []]


def cache_dir() -> pathlib.Path:
  root = os.environ.get('PRNET_JAX_CACHE') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'prnet_jax')
  return pathlib.Path(root) / 'native'


def build(compiler: Optional[str] = None) -> pathlib.Path:
  """Compiles the library (or finds it in the cache) and returns its path.

  Raises NativeBuildError naming the compiler and its messages if no flag set compiles."""
  compiler = compiler or find_compiler()
  if compiler is None:
    raise NativeBuildError('no C++ compiler found (set CXX, or install g++ or clang++)')
  try:
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             timeout=60).stdout
  except (OSError, subprocess.SubprocessError) as e:
    raise NativeBuildError(f'cannot run the C++ compiler {compiler}: {e}') from e
  source = b'\0'.join(p.read_bytes() for p in SOURCES + HEADERS)
  include = jax.ffi.include_dir()
  errors = []
  for arch in _arch_flags():
    flags = ['-O3', '-std=c++17', '-shared', '-fPIC', '-w', *arch]
    key = hashlib.sha256(b'\0'.join([
        source, version.encode(), jax.__version__.encode(), ' '.join(flags).encode(),
        _cpu_signature().encode()])).hexdigest()[:20]
    out = cache_dir() / f'conv_kernels-{key}.so'
    if out.exists():
      return out
    # Build next to the target and rename: processes building at once never see half a file.
    try:
      out.parent.mkdir(parents=True, exist_ok=True)
      fd, tmp = tempfile.mkstemp(suffix='.so', dir=out.parent)
      os.close(fd)
    except OSError as e:
      raise NativeBuildError(f'cannot write the native library to {out.parent} ({e}); set '
                             'PRNET_JAX_CACHE to a writable folder') from e
    cmd = [compiler, *flags, f'-I{include}', *map(str, SOURCES), '-o', tmp]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
      proc = None
      errors.append(f'{" ".join(cmd)}: {e}')
    if proc is not None and proc.returncode == 0:
      os.replace(tmp, out)
      return out
    if proc is not None:
      errors.append(f'{" ".join(cmd)}:\n{proc.stderr[-2000:]}')
    pathlib.Path(tmp).unlink(missing_ok=True)
  raise NativeBuildError(f'compiling {", ".join(map(str, SOURCES))} failed:\n' + '\n'.join(errors))


def load() -> int:
  """Builds and registers the FFI target (once per process); returns the kernel's vector width
  in float32 lanes. Raises NativeBuildError on failure."""
  with _lock:
    if 'lanes' in _state:
      return _state['lanes']
    if 'error' in _state:
      raise _state['error']
    try:
      path = build()
      try:
        lib = ctypes.CDLL(str(path))
        lanes = int(lib.prnet_native_lanes())
        for name, symbol in ((TARGET, lib.PrnetConvKernelGrad),
                             (FORWARD_TARGETS['small_co'], lib.PrnetConvForwardSmallCo),
                             (FORWARD_TARGETS['few_ci'], lib.PrnetConvForward),
                             (RASTER_TARGET, lib.PrnetRasterize)):
          jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform='cpu')
      except (OSError, AttributeError) as e:
        raise NativeBuildError(f'cannot load {path}: {e}') from e
    except NativeBuildError as e:
      _state['error'] = e
      raise
    _state.update(lanes=lanes, lib=lib, path=path)  # the CDLL stays referenced while registered
    return lanes


def available() -> bool:
  """Whether the native kernels can be used in this process (built, loaded, not turned off).
  A failed build is reported once as a warning; XLA's kernels are used instead."""
  if not enabled_by_env():
    return False
  try:
    load()
    return True
  except NativeBuildError as e:
    if not _state.get('warned'):
      _state['warned'] = True
      logging.warning('prnet_jax.native: using XLA convolution gradients instead of the native '
                      'kernel: %s', e)
    return False


def _eligible(x: jax.Array) -> bool:
  return (x.dtype == jnp.float32 and jax.default_backend() == 'cpu' and jax.device_count() == 1
          and available())


def forward_kind(x: jax.Array, kernel_shape: Sequence[int]) -> Optional[str]:
  """Which native forward kernel computes this convolution, or None for XLA's.

  'small_co': 1-4 output channels (vectors over pixels); 'few_ci': output channels a multiple of
  the vector width and fewer input channels than it. Same conditions as ``use_for`` otherwise."""
  kh, kw, ci, co = kernel_shape
  if (co > 4 and ci >= 16) or not _eligible(x):
    return None
  if co <= 4:
    return 'small_co'
  return 'few_ci' if co % _state['lanes'] == 0 and ci < _state['lanes'] else None


def use_for(x: jax.Array, kernel_shape: Sequence[int],
            out_pixels: Optional[int] = None) -> bool:
  """Whether ``conv_ops`` computes this convolution's kernel gradient natively.

  Conditions: float32; the CPU backend; a single device (on several devices XLA's
  partitioner would gather the batch-sharded operands for a custom call, so the data-parallel
  gradient stays XLA's); a kernel of at most MAX_KERNEL_ELEMENTS; at least MIN_REDUCTION_PIXELS
  output pixels (``out_pixels``, batch x height x width; default: x's); input or output channels
  a multiple of the vector width; the library builds. The choice is made at trace time and
  changes round-off only."""
  kh, kw, ci, co = kernel_shape
  if out_pixels is None:
    out_pixels = x.shape[0] * x.shape[1] * x.shape[2]
  if (kh * kw * ci * co > MAX_KERNEL_ELEMENTS or out_pixels < MIN_REDUCTION_PIXELS
      or not _eligible(x)):
    return False
  lanes = _state['lanes']
  return co % lanes == 0 or ci % lanes == 0


def conv_kernel_grad(x: jax.Array, dy: jax.Array, kernel_size: tuple[int, int],
                     padding: Sequence[tuple[int, int]]) -> jax.Array:
  """dw (kh, kw, Ci, Co) of ``lax.conv_general_dilated(x, w, (1, 1), padding)`` (NHWC, HWIO)
  given the output gradient dy (N, Ho, Wo, Co): the native kernel on CPU, XLA's elsewhere.

  Call ``load()`` (or check ``use_for``) first; float32 only."""
  kh, kw = kernel_size
  (pt, pb), (pl, pr) = padding
  n, h, w, ci = x.shape
  co = dy.shape[-1]
  if dy.shape != (n, h + pt + pb - kh + 1, w + pl + pr - kw + 1, co):
    raise ValueError(f'output gradient shape {dy.shape} does not match input {x.shape}, kernel '
                     f'{kh}x{kw} and padding {padding}')
  out = jax.ShapeDtypeStruct((kh, kw, ci, co), jnp.float32)

  def native(x, dy):
    return jax.ffi.ffi_call(TARGET, out, vmap_method='sequential')(
        x, dy, pad_top=np.int64(pt), pad_left=np.int64(pl))

  def xla(x, dy):
    return xla_conv_kernel_grad(x, dy, kernel_size, padding)

  return lax.platform_dependent(x, dy, cpu=native, default=xla)


def conv_forward(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]],
                 kind: str) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, (1, 1), padding)`` (NHWC, HWIO) by the native forward
  kernel ``kind`` (from ``forward_kind``) on CPU, by XLA elsewhere; float32."""
  padding = tuple(tuple(p) for p in padding)
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))   # the kernels compute VALID convolutions
  n, h, w, _ = xp.shape
  kh, kw, _, co = kernel.shape
  out = jax.ShapeDtypeStruct((n, h - kh + 1, w - kw + 1, co), jnp.float32)

  def native(xp, kernel):
    return jax.ffi.ffi_call(FORWARD_TARGETS[kind], out, vmap_method='sequential')(xp, kernel)

  def xla(xp, kernel):
    return lax.conv_general_dilated(xp, kernel, (1, 1), 'VALID',
                                    dimension_numbers=_DN)

  return lax.platform_dependent(xp, kernel, cpu=native, default=xla)


def rasterize(vertices: jax.Array, triangles: jax.Array, height: int, width: int):
  """The native z-buffer rasteriser (CPU only; call ``available()`` first).

  vertices (..., V, 3) float32 pixels (x column, y row, z larger nearer), triangles (T, 3) int32
  -> (triangle (..., H, W) int32, bary (..., H, W, 3) float32, depth (..., H, W) float32),
  the fields of ``render.Raster``. Leading dimensions are rasterised in parallel."""
  vertices = jnp.asarray(vertices, jnp.float32)
  lead = vertices.shape[:-2]
  flat = vertices.reshape((-1,) + vertices.shape[-2:])
  b = flat.shape[0]
  out = (jax.ShapeDtypeStruct((b, height, width), jnp.int32),
         jax.ShapeDtypeStruct((b, height, width, 3), jnp.float32),
         jax.ShapeDtypeStruct((b, height, width), jnp.float32))
  owner, bary, depth = jax.ffi.ffi_call(RASTER_TARGET, out, vmap_method='sequential')(
      flat, jnp.asarray(triangles, jnp.int32))
  return (owner.reshape(lead + (height, width)), bary.reshape(lead + (height, width, 3)),
          depth.reshape(lead + (height, width)))


def xla_conv_kernel_grad(x: jax.Array, dy: jax.Array, kernel_size: tuple[int, int],
                         padding: Sequence[tuple[int, int]]) -> jax.Array:
  """The same gradient as XLA computes it (autodiff of the convolution of the explicitly padded
  input: XLA:CPU's kernel gradient of some padded convolutions runs on a slow path)."""
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  w0 = jnp.zeros((*kernel_size, x.shape[-1], dy.shape[-1]), x.dtype)
  _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(
      xp, w, (1, 1), 'VALID', dimension_numbers=_DN), w0)
  return vjp(dy)[0]


def self_check(seed: int = 0) -> dict:
  """Builds the library and compares each kernel with XLA's op on random data; returns
  {'library', 'lanes', 'compiler', 'max_rel_diff': {kernel: value}}. Raises NativeBuildError."""
  lanes = load()
  r = np.random.RandomState(seed)
  x = jnp.asarray(r.randn(2, 32, 24, 16), jnp.float32)
  pad = ((1, 2), (2, 1))
  dy = jnp.asarray(r.randn(2, 32, 24, 2 * lanes), jnp.float32)
  diffs = {}

  def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
  diffs['kernel_grad'] = rel(jax.jit(conv_kernel_grad, static_argnums=(2, 3))(x, dy, (4, 4), pad),
                             xla_conv_kernel_grad(x, dy, (4, 4), pad))
  for kind, ci, co in (('small_co', 16, 3), ('few_ci', 3, lanes)):
    xi = x[..., :ci]
    w = jnp.asarray(r.randn(4, 4, ci, co), jnp.float32)
    want = lax.conv_general_dilated(xi, w, (1, 1), pad, dimension_numbers=_DN)
    diffs[f'forward_{kind}'] = rel(jax.jit(conv_forward, static_argnums=(2, 3))(xi, w, pad, kind),
                                   want)
  return {'library': str(_state['path']), 'lanes': lanes, 'compiler': find_compiler(),
          'max_rel_diff': diffs}


def main() -> None:
  """``python -m prnet_jax.native``: build (or find) the library, check it, say what is used."""
  import json
  import sys
  if not enabled_by_env():
    print('PRNET_JAX_NATIVE=0: the native kernels are turned off; XLA computes everything.')
    return
  try:
    report = self_check()
  except NativeBuildError as e:
    print(f'the native kernels are not available, XLA computes everything instead:\n{e}',
          file=sys.stderr)
    sys.exit(1)
  print(json.dumps(report, indent=2))
  bad = {k: v for k, v in report['max_rel_diff'].items() if not v < 1e-4}
  if bad:
    print(f'MISMATCH against XLA: {bad}', file=sys.stderr)
    sys.exit(1)
  print(f'OK: on this machine ({jax.default_backend()}, {jax.device_count()} device(s)) conv_ops '
        f'uses them in float32 on one CPU device; see prnet_jax/native/__init__.py for the rules.')

