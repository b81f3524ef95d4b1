"""PRNet's training augmentation, on the accelerator: jitted, batched, keyed by an RNG.

Per example (paper's recipe, ranges configurable): rotation in [-45, 45] deg, translation up to
10% of the side, scale in [0.9, 1.2] (all one similarity about the image centre), per-channel
colour scale in [0.6, 1.4], and synthetic occlusion (a noise-textured rectangle pasted on the
image). Off by default, for synthetic-to-real transfer: grayscale, Gaussian blur and Gaussian
noise, applied last (after the occluder, so it is blurred and noisy too). The image is resampled through the similarity and the position map's x, y go through
the same similarity (z is scaled by its scale), so image and ground truth stay consistent;
pixels outside the mesh (all-zero) stay zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from prnet_jax.geometry import transforms


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  rotation_deg: float = 45.0
  translation: float = 0.1                  # fraction of the side
  scale: tuple[float, float] = (0.9, 1.2)
  color: tuple[float, float] = (0.6, 1.4)   # per-channel multiplier
  occlusion_prob: float = 0.5
  occlusion_size: tuple[float, float] = (0.1, 0.4)  # rectangle side, fraction of the image
  grayscale_prob: float = 0.0
  blur_prob: float = 0.0
  blur_sigma: tuple[float, float] = (0.4, 1.5)  # pixels of the network's input
  noise_std: float = 0.0                         # per image, uniform in [0, noise_std]

  @property
  def is_identity(self) -> bool:
    return (self.rotation_deg == 0 and self.translation == 0 and tuple(self.scale) == (1, 1)
            and tuple(self.color) == (1, 1) and self.occlusion_prob == 0
            and self.grayscale_prob == 0 and self.blur_prob == 0 and self.noise_std == 0)

  @classmethod
  def from_mapping(cls, m) -> 'AugmentConfig':
    m = dict(m)
    if 'occlusion' in m:  # config shorthand: occlusion=True/False
      m['occlusion_prob'] = cls.occlusion_prob if m.pop('occlusion') else 0.0
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in m.items()})


NO_AUGMENT = AugmentConfig(rotation_deg=0.0, translation=0.0, scale=(1.0, 1.0),
                           color=(1.0, 1.0), occlusion_prob=0.0)


def _uniform(key: jax.Array, shape: tuple = (), minval=0.0, maxval=1.0) -> jax.Array:
  # float32 draws whatever jax_enable_x64 says: a seed gives the same augmentation in float32
  # and float64 (x64) runs.
  return jax.random.uniform(key, shape, jnp.float32, minval, maxval)


def _similarity(angle, scale, shift, center):
  """3x3: x -> R(angle) * scale * (x - center) + center + shift (JAX, traced values)."""
  c, s = scale * jnp.cos(angle), scale * jnp.sin(angle)
  lin = jnp.array([[c, -s], [s, c]])
  t = center + shift - lin @ center
  return jnp.concatenate([jnp.concatenate([lin, t[:, None]], 1),
                          jnp.array([[0.0, 0.0, 1.0]])], 0)


def sample_transform(rng: jax.Array, size: int, config: AugmentConfig) -> jax.Array:
  """(3, 3) random similarity for one example."""
  k1, k2, k3 = jax.random.split(rng, 3)
  angle = jnp.deg2rad(_uniform(k1, (), minval=-config.rotation_deg,
                                         maxval=config.rotation_deg))
  scale = _uniform(k2, (), minval=config.scale[0], maxval=config.scale[1])
  shift = _uniform(k3, (2,), minval=-config.translation,
                             maxval=config.translation) * size
  center = jnp.full((2,), (size - 1) / 2.0)
  return _similarity(angle, scale, shift, center)


def transform_position_map(pos: jax.Array, t: jax.Array) -> jax.Array:
  """(R, R, 3) map through a similarity: x, y mapped, z x scale; empty pixels stay 0."""
  inside = jnp.any(pos != 0, -1, keepdims=True)
  return jnp.where(inside, transforms.transform_points(t, pos), 0.0)


def occlude(rng: jax.Array, image: jax.Array, config: AugmentConfig) -> jax.Array:
  """Pastes a noise-textured rectangle with probability `occlusion_prob`."""
  h, w, _ = image.shape
  k_on, k_size, k_pos, k_col, k_noise, k_mix = jax.random.split(rng, 6)
  on = _uniform(k_on) < config.occlusion_prob
  size = _uniform(k_size, (2,), minval=config.occlusion_size[0],
                            maxval=config.occlusion_size[1]) * jnp.array([h, w])
  corner = _uniform(k_pos, (2,)) * (jnp.array([h, w]) - size)
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = ((ys >= corner[0]) & (ys < corner[0] + size[0]) &
            (xs >= corner[1]) & (xs < corner[1] + size[1]))[..., None]
  base = _uniform(k_col, (3,))
  noise = _uniform(k_noise, image.shape)
  mix = _uniform(k_mix, (), minval=0.2, maxval=0.8)
  texture = jnp.clip((1 - mix) * base + mix * noise, 0.0, 1.0)
  return jnp.where(on & inside, texture, image)


def gaussian_blur(image: jax.Array, sigma: jax.Array, radius: int = 3) -> jax.Array:
  """(H, W, C) blurred by a separable Gaussian of std `sigma` pixels (traced), edges clamped."""
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  w = jnp.exp(-0.5 * (taps / jnp.maximum(sigma, 1e-3)) ** 2)
  w = w / w.sum()
  h, wd, _ = image.shape
  p = jnp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode='edge')
  image = sum(w[i] * p[i:i + h] for i in range(2 * radius + 1))
  p = jnp.pad(image, ((0, 0), (radius, radius), (0, 0)), mode='edge')
  return sum(w[i] * p[:, i:i + wd] for i in range(2 * radius + 1))


def degrade(rng: jax.Array, image: jax.Array, config: AugmentConfig) -> jax.Array:
  """Grayscale, blur and noise, each drawn per example with its own key."""
  k_g, k_b, k_s, k_n, k_ns = jax.random.split(rng, 5)
  if config.grayscale_prob > 0:
    grey = jnp.broadcast_to(image @ jnp.array([0.299, 0.587, 0.114]), image.shape[:2])
    image = jnp.where(_uniform(k_g) < config.grayscale_prob, grey[..., None], image)
  if config.blur_prob > 0:
    sigma = _uniform(k_s, (), minval=config.blur_sigma[0], maxval=config.blur_sigma[1])
    image = jnp.where(_uniform(k_b) < config.blur_prob, gaussian_blur(image, sigma), image)
  if config.noise_std > 0:
    std = _uniform(k_ns, (), maxval=config.noise_std)
    image = image + std * jax.random.normal(k_n, image.shape, jnp.float32)
  return jnp.clip(image, 0.0, 1.0)


def augment_example(rng: jax.Array, image: jax.Array, pos: jax.Array,
                    config: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """image (R, R, 3) in [0, 1], pos (R, R, 3) -> augmented (image, pos)."""
  size = image.shape[0]
  k_t, k_c, k_o = jax.random.split(rng, 3)
  t = sample_transform(k_t, size, config)
  image = transforms.warp_image(image, t, size, size)
  pos = transform_position_map(pos, t)
  colour = _uniform(k_c, (3,), minval=config.color[0], maxval=config.color[1])
  image = jnp.clip(image * colour, 0.0, 1.0)
  if config.occlusion_prob > 0:
    image = occlude(k_o, image, config)
  if config.grayscale_prob > 0 or config.blur_prob > 0 or config.noise_std > 0:
    image = degrade(jax.random.fold_in(rng, 1), image, config)
  return image, pos


def augment_batch(rng: jax.Array, images: jax.Array, pos: jax.Array,
                  config: AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """Batched `augment_example` with one key per example (jit it with `config` static).

  With an identity config (no rotation, translation, scaling, colour or occlusion) the inputs
  are returned as they are: the warp would sample every pixel at its own centre, so skipping
  it changes nothing but the time (a full-image gather per step).
  """
  if config.is_identity:
    return images, pos
  keys = jax.random.split(rng, images.shape[0])
  return jax.vmap(lambda k, i, p: augment_example(k, i, p, config))(keys, images, pos)

