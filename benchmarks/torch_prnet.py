"""The PRNet network in plain PyTorch: the side-by-side baseline of the performance benchmarks.

A straightforward implementation, as a PyTorch user would write it: NCHW, `nn.Conv2d` and
`nn.ConvTranspose2d` without bias, `nn.BatchNorm2d(eps=1e-3, momentum=0.001)` (TF's decay
0.999), TF 'SAME' padding reproduced with explicit pads (stride-1 4x4 convs pad 1 before and 2
after; stride-1 4x4 transposed convs pad 1 and drop the extra last row and column). It is
optional (``pip install torch==2.13.0``, CPU wheel) and only used by `benchmarks/`;
``load_flax_variables`` copies our parameters in so that the benchmark can check both compute
the same function before timing them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# Same architecture tables as prnet_jax.nn.model (kept literal: this file must not import jax).
ENCODER_BLOCKS = ((2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1), (32, 2),
                  (32, 1))
DECODER_LAYERS = ((32, 1), (16, 2), (16, 1), (16, 1), (8, 2), (8, 1), (8, 1), (4, 2), (4, 1),
                  (4, 1), (2, 2), (2, 1), (1, 2), (1, 1))


def nchw(images: np.ndarray, scale: float = 1.0) -> torch.Tensor:
  """NHWC numpy images -> a contiguous float32 NCHW tensor (times `scale`).

  Contiguous matters: a transposed view of an NHWC array is channels-last in memory, which
  sends PyTorch down its channels-last convolution path (a different baseline; its backward
  segfaulted on the small model's 3 -> 4 channel first layer in PyTorch 2.13)."""
  x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32)
  return torch.from_numpy(x * np.float32(scale) if scale != 1.0 else x)


def _bn(c: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(c, eps=1e-3, momentum=0.001)


class ConvBN(nn.Module):
  def __init__(self, cin, cout, k=4, stride=1, transpose=False, bn=True, act='relu'):
    super().__init__()
    self.k, self.stride, self.transpose = k, stride, transpose
    if transpose:
      self.conv = nn.ConvTranspose2d(cin, cout, k, stride, padding=1, bias=False)
    else:
      # stride 2: TF SAME pads 1/1 (k=4) or 0/0 (k=1); stride 1, k=4: 1/2 (explicit F.pad).
      pad = (k - 1) // 2 if stride == 2 else 0
      self.conv = nn.Conv2d(cin, cout, k, stride, padding=pad, bias=False)
    self.bn = _bn(cout) if bn else None
    self.act = act

  def forward(self, x):
    if self.transpose:
      x = self.conv(x)
      if self.stride == 1:  # output H+1: TF SAME keeps the first H rows and columns
        x = x[:, :, :-1, :-1]
    else:
      if self.stride == 1 and self.k == 4:
        x = F.pad(x, (1, 2, 1, 2))
      x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    if self.act == 'relu':
      x = F.relu(x)
    elif self.act == 'sigmoid':
      x = torch.sigmoid(x)
    return x


class ResBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.shortcut = (ConvBN(cin, cout, 1, stride, bn=False, act=None)
                     if stride != 1 or cin != cout else None)
    self.conv1 = ConvBN(cin, cout // 2, 1, 1)
    self.conv2 = ConvBN(cout // 2, cout // 2, 4, stride)
    self.conv3 = ConvBN(cout // 2, cout, 1, 1, bn=False, act=None)
    self.bn = _bn(cout)

  def forward(self, x):
    s = x if self.shortcut is None else self.shortcut(x)
    return F.relu(self.bn(self.conv3(self.conv2(self.conv1(x))) + s))


class TorchPRNet(nn.Module):
  """Images (B, 3, R, R) in [0, 1] -> position maps (B, 3, R, R) in pixels."""

  def __init__(self, resolution: int = 256, width: int = 16):
    super().__init__()
    self.max_pos = 1.1 * resolution
    w = width
    self.conv0 = ConvBN(3, w)
    blocks, c = [], w
    for mult, stride in ENCODER_BLOCKS:
      blocks.append(ResBlock(c, w * mult, stride))
      c = w * mult
    self.res = nn.ModuleList(blocks)
    layers = [(w * m, s) for m, s in DECODER_LAYERS] + [(3, 1)] * 3
    decs = []
    for i, (cout, stride) in enumerate(layers):
      last = i == len(layers) - 1
      decs.append(ConvBN(c, cout, 4, stride, transpose=True,
                         act='sigmoid' if last else 'relu'))
      c = cout
    self.deconv = nn.ModuleList(decs)

  def forward(self, x):
    x = self.conv0(x)
    for b in self.res:
      x = b(x)
    for d in self.deconv:
      x = d(x)
    return x * self.max_pos


def weighted_loss(pred, target, weights, max_pos):
  """prnet_jax.nn.losses.position_map_loss in NCHW: mean over batch, channels and pixels."""
  return torch.mean(torch.square((pred - target) / max_pos) * weights)


def l2_kernels(model: nn.Module, coeff: float):
  """TF's l2_regularizer on every kernel (no biases exist): coeff * sum(w^2) / 2."""
  return coeff * 0.5 * sum(torch.sum(torch.square(m.weight)) for m in model.modules()
                           if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def load_flax_variables(model: TorchPRNet, variables: Mapping[str, Any]) -> None:
  """Copies prnet_jax.nn.model.PRNet variables ({'params', 'batch_stats'}) into `model`."""
  params, stats = variables['params'], variables['batch_stats']

  def conv(dst, p, transpose):
    k = np.asarray(p['conv']['kernel'], np.float32)
    # Ours: conv [kh, kw, in, out]; transposed [kh, kw, out, in]. PyTorch: conv [out, in, kh,
    # kw]; transposed [in, out, kh, kw]. Both become permute (3, 2, 0, 1).
    dst.conv.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))

  def bn(dst, p, s):
    dst.weight.data = torch.from_numpy(np.array(p['scale'], np.float32))
    dst.bias.data = torch.from_numpy(np.array(p['bias'], np.float32))
    dst.running_mean.data = torch.from_numpy(np.array(s['mean'], np.float32))
    dst.running_var.data = torch.from_numpy(np.array(s['var'], np.float32))

  def convbn(dst, name, p, s, transpose=False):
    conv(dst, p[name], transpose)
    if dst.bn is not None:
      bn(dst.bn, p[name]['bn'], s[name]['bn'])

  convbn(model.conv0, 'conv0', params, stats)
  for i, b in enumerate(model.res):
    p, s = params[f'res{i}'], stats[f'res{i}']
    for n in ('conv1', 'conv2', 'conv3') + (('shortcut',) if b.shortcut is not None else ()):
      convbn(getattr(b, n), n, p, s)
    bn(b.bn, p['bn'], s['bn'])
  for i, d in enumerate(model.deconv):
    convbn(d, f'deconv{i}', params, stats, transpose=True)
