r"""The predictor: images -> per-face position maps, landmarks, meshes and poses (`Face`).

    predictor = Predictor.from_checkpoint('workdirs/small/checkpoints')
    faces = predictor.predict('photo.jpg')            # every detected face
    faces = predictor.predict(image, boxes=[(l, t, r, b)])   # or given boxes / 68 landmarks
    write_outputs(faces, image, 'out/photo')          # .obj, .ply, landmarks, pose, depth, overlay

Files, folders and videos from the command line: `prnet_jax.serving.predict`.

Crops follow the official code (`transforms.box_crop`): the detector's boxes with its detector
rule (centre moved down 0.14 x size, side 1.58 x size); given boxes by default with its rule for
boxes passed as `image_info` (box centre, side 1.6 x size; `box_convention='detector'` for the
other); 68 landmarks: their box, side 1.6 x size. The float crop goes to the network, as in the
official code. All faces of an image go through one jitted, batched forward pass (batch padded
to a power of two, so few shapes compile); results are mapped back to the original image (x, y
through the inverse crop similarity, z divided by its scale).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from prnet_jax.data import image_io
from prnet_jax.faces.catalog import DERIVED, OFFICIAL, uv_assets_for
from prnet_jax.faces.face_model import MIRROR_68
from prnet_jax.faces.uv_assets import AssetError, UVAssets
from prnet_jax.geometry import icp, render, transforms
from prnet_jax.nn import checkpoints
from prnet_jax.nn.model import PRNet, inference_fn
from prnet_jax.serving.detectors import DetectorError, FaceDetector, get_detector

DetectorArg = Union[str, FaceDetector, None]


class PredictError(ValueError):
  """Bad input for prediction; the message names the input and the problem."""


# ------------------------------------------------------------------------------- results

@dataclasses.dataclass
class Face:
  """One face, everything in the original image frame (x right, y down, z towards the viewer,
  in pixels) unless named otherwise."""
  box: np.ndarray               # (4,) the crop's source box or landmarks' box (l, t, r, b)
  crop_transform: np.ndarray    # (3, 3) original -> crop similarity
  position_map: np.ndarray      # (R, R, 3) in the original image frame
  landmarks: np.ndarray         # (68, 3); x, y corrected by the predictor's landmark_correction
  vertices: np.ndarray          # (N, 3) dense face vertices
  triangles: np.ndarray         # (T, 3)
  face_indices: np.ndarray      # (N,) flat UV-map pixel of each vertex
  colors: np.ndarray            # (N, 3) in [0, 1], sampled from the image
  visibility: np.ndarray        # (N,) bool, by a z-buffer of the face mesh
  pose_angles_deg: np.ndarray   # (3,) yaw, pitch, roll
  camera_matrix: np.ndarray     # (3, 4) scaled rotation | translation: canonical -> vertices
  uv_texture: np.ndarray        # (R, R, 3) uint8: the image sampled at the position map

  def to_json(self) -> dict:
    yaw, pitch, roll = (float(a) for a in self.pose_angles_deg)
    return {'box': self.box.tolist(), 'yaw_deg': yaw, 'pitch_deg': pitch, 'roll_deg': roll,
            'camera_matrix': self.camera_matrix.tolist(),
            'landmarks': self.landmarks.tolist()}


def estimate_pose(canonical: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Similarity fit canonical -> vertices (the official pose estimate): (yaw, pitch, roll) in
  degrees and the (3, 4) camera matrix [s R | t] (y up). Both are in position-map frames
  (y down); flipping both to y up gives angles in the 3DDFA convention."""
  flip = np.array([1, -1, 1])
  up = np.asarray(vertices, np.float64) * flip
  fit = icp.umeyama((np.asarray(canonical, np.float64) * flip).astype(np.float32),
                    up.astype(np.float32))
  r = np.asarray(fit.rotation, np.float64)
  pitch, yaw, roll = np.rad2deg(transforms.matrix_to_angles(r))
  camera = np.concatenate([float(fit.scale) * r, np.asarray(fit.translation)[:, None]], 1)
  return np.array([yaw, pitch, roll]), camera


def in_plane_angle(canonical: np.ndarray, vertices: np.ndarray) -> float:
  """The face's in-plane rotation in the image (radians, image frame, x right, y down; 0 when
  its up axis points up the image, positive when turned clockwise): `estimate_pose`'s rotation
  gives the face's up axis."""
  _, camera = estimate_pose(canonical, vertices)
  r = camera[:, :3] / np.linalg.norm(camera[:, 0])   # y up
  up = np.array([r[0, 1], -r[1, 1]])   # the face's up axis in the image frame (y down)
  return float(np.arctan2(up[0], -up[1]))


class Predictor:
  """A model, its UV assets and a detector; `predict` returns a `Face` per face."""

  def __init__(self, model: PRNet, variables, assets: UVAssets,
               detector: DetectorArg = None, antialias: bool = False,
               refine: int = 0, upright: bool = False, flip: bool = False):
    """`detector`: a name of `detectors.NAMES` or a callable image -> boxes (default 'auto':
    dlib's CNN detector when installed, else OpenCV's Haar cascades); made on first use.
    `antialias`: low-pass the photo before a crop shrinks it (Gaussian, sigma (s - 1) / 2
    for a shrink by s, as skimage's rescale), for models trained on band-limited renders; off,
    the crop is bilinear like the official code's."""
    self.antialias = antialias
    # `refine`: after detector or box crops, re-crop around the predicted landmarks so many
    # times (models trained on landmark crops; the run's config says `predict_refine`).
    self.refine = refine
    # `upright`: one more pass in a crop turned so that the face stands upright (by the first
    # pass's in-plane angle), for models trained on a limited roll range; its box is the given
    # landmarks' (the protocol's crop, turned) or the model's own. `flip`: the landmarks are the
    # mean of the crop's and its mirror image's (the position map and mesh are the crop's).
    self.upright, self.flip = upright, flip
    # A linear correction of the 68 landmarks fitted on real faces for this model
    # (`landmark_correction`; the bundled model ships one), or None.
    self.landmark_correction = None
    # The side of every crop made from landmarks or boxes, times this: the framing the model
    # reads best (fitted on real faces with its landmark correction; 1: the official crops).
    self.crop_scale = 1.0
    # Meshes for files (`dense_mesh`): the map resampled to the layout at `mesh_resolution`
    # px when the layout has a name to derive it from (`catalog.DERIVED`); else the map's own.
    self.layout: Optional[str] = None
    self.mesh_resolution = 256
    self._mesh_assets: dict[int, UVAssets] = {}
    if assets.resolution != model.resolution:
      raise PredictError(f'UV assets are {assets.resolution} px, the model {model.resolution} px')
    self.model, self.assets = model, assets
    prepare, forward = inference_fn(model)
    self.variables = jax.device_put(jax.jit(prepare)(variables))
    self._detector = detector
    self._forward = jax.jit(forward)

  @classmethod
  def from_checkpoint(cls, path: str, uv_assets: Optional[str] = None,
                      detector: DetectorArg = None) -> 'Predictor':
    """`path`: a checkpoint directory or a training run's workdir (ours or converted official
    weights); `uv_assets`: 'ict', 'ict_bfm68' or 'procedural' (models trained on the ICT world
    in its layouts or on the procedural world), 'official' or a uv-data folder; by default the
    checkpoint's own (its `config.json`: runs and converted weights record them), else
    'procedural'. Assets other than the ones a checkpoint records are refused (PredictError)."""
    try:
      variables, model_config, _ = checkpoints.load_variables(path)
    except checkpoints.CheckpointError as e:
      raise PredictError(str(e)) from e
    run = checkpoints.run_config(path) or {}
    own = run.get('uv_assets')
    named = (*DERIVED, OFFICIAL)
    if uv_assets is None:
      uv_assets = own or 'procedural'
    elif own and uv_assets != own and (own in named or uv_assets in named):
      # A named layout is known for sure (a folder path may just have moved): reading the
      # maps in another layout would put every landmark and mesh vertex in the wrong place.
      raise PredictError(f'{path} was trained with UV assets {own!r}; {uv_assets!r} would read '
                         f'its position maps in another layout (leave --uv_assets out to use '
                         f'its own)')
    model = PRNet.from_config(model_config)
    try:
      assets = uv_assets_for(uv_assets, model.resolution)
    except AssetError as e:
      raise PredictError(str(e)) from e
    # A run trained on band-limited renders (the ICT world) says so in its config.
    predictor = cls(model, variables, assets, detector,
                    bool(run.get('predict_antialias', False)), int(run.get('predict_refine', 0)),
                    bool(run.get('predict_upright', False)), bool(run.get('predict_flip', False)))
    predictor.layout = uv_assets if uv_assets in DERIVED else None
    predictor.landmark_correction = shipped_correction(path, variables)
    if predictor.landmark_correction is not None:  # fitted on crops of this framing
      predictor.crop_scale = predictor.landmark_correction.crop_scale
    return predictor

  def dense_mesh(self, face: Face, image: np.ndarray, resolution: Optional[int] = None):
    """`outputs.Mesh` of a face: its map resampled to `resolution` (default `mesh_resolution`)
    px of the same UV layout (a smooth mesh of ~36k vertices at 256 px from a 64 px model), or
    its own mesh when the layout cannot be derived at that size (official assets are 256 px
    already)."""
    from prnet_jax.serving import outputs
    r = self.mesh_resolution if resolution is None else resolution
    if self.layout is None or r <= self.model.resolution:
      return outputs.own_mesh(face)
    if r not in self._mesh_assets:
      self._mesh_assets[r] = uv_assets_for(self.layout, r)
    return outputs.dense_mesh(face, image, self._mesh_assets[r])

  @classmethod
  def from_pretrained(cls, detector: DetectorArg = None) -> 'Predictor':
    """The bundled model, trained on the ICT face world (`prnet_jax.training.pretrained`)."""
    return cls.from_checkpoint(checkpoints.PRETRAINED, None, detector)

  @property
  def detector(self) -> FaceDetector:
    if not callable(self._detector):
      try:
        self._detector = get_detector(self._detector)
      except DetectorError as e:
        raise PredictError(str(e)) from e
    return self._detector

  def forward(self, crops: np.ndarray) -> np.ndarray:
    """(B, R, R, 3) crops, pixel values in [0, 255] (float, as warped, or uint8) -> (B, R, R, 3)
    position maps in the crop frame."""
    b = len(crops)
    size = 1 << max(b - 1, 0).bit_length()  # pad to a power of two: few compiled shapes
    padded = np.concatenate([crops, np.zeros((size - b,) + crops.shape[1:], crops.dtype)])
    return np.asarray(self._forward(self.variables, jnp.asarray(padded)))[:b]

  def crops_for(self, image: np.ndarray, boxes=None, landmarks=None,
                box_convention: str = 'image_info'):
    """Crop boxes (transforms.CropBox) and source boxes for the given or detected faces: 68
    landmarks crop like the official `image_info` landmarks; given boxes by `box_convention`
    (`transforms.box_crop`); the detector's boxes by the official detector rule."""
    if landmarks is not None:
      lms = np.asarray(landmarks, np.float64).reshape(-1, 68, np.shape(landmarks)[-1])
      src = np.array([[l[:, 0].min(), l[:, 1].min(), l[:, 0].max(), l[:, 1].max()] for l in lms])
      return [self._scaled(transforms.landmark_crop(l)) for l in lms], src
    if boxes is None:
      boxes, box_convention = self.detector(image), 'detector'
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    crops = [transforms.box_crop(b, box_convention) for b in boxes]
    return ([self._scaled(c) for c in crops] if box_convention != 'crop' else crops), boxes

  def _scaled(self, box: transforms.CropBox) -> transforms.CropBox:
    return box if self.crop_scale == 1.0 else transforms.CropBox(box.center,
                                                                 box.size * self.crop_scale)

  def predict(self, image: Any, boxes=None, landmarks=None, channel_order: str = 'RGB',
              box_convention: str = 'image_info') -> list[Face]:
    """Every face of `image`: detected, unless `boxes` (left, top, right, bottom) or 68
    `landmarks` per face are given.

    `box_convention` says how a given box becomes the crop (`transforms.box_crop`): 'image_info'
    (the official code's rule for boxes passed to `PRN.process(image, image_info=...)`: box
    centre, side 1.6 x size) or 'detector' (its rule for its dlib detector's boxes: centre 0.14 x
    size lower, side 1.58 x size; pick it for boxes from a similar detector) or 'crop' (the box is
    the crop: `whole_image_box(image)` for an image already cropped to the face)."""
    if box_convention not in transforms.BOX_CONVENTIONS:
      raise PredictError(f'box_convention must be one of {transforms.BOX_CONVENTIONS}, got '
                         f'{box_convention!r}')
    try:
      image = image_io.load_photo(image, channel_order)
    except image_io.ImageError as e:
      raise PredictError(str(e)) from e
    return self.predict_batch([image], [boxes], [landmarks], box_convention)[0]

  def predict_batch(self, images: Sequence[np.ndarray], boxes=None, landmarks=None,
                    box_convention: str = 'image_info') -> list[list[Face]]:
    """Faces of several RGB uint8 images (e.g. video frames) in one forward pass."""
    r = self.model.resolution
    jobs, given = [], []   # given: each face's given landmarks (None for boxes, detections)
    for i, image in enumerate(images):
      lms = None if landmarks is None or landmarks[i] is None else np.asarray(
          landmarks[i], np.float64).reshape(-1, 68, np.shape(landmarks[i])[-1])
      crops, src = self.crops_for(image, None if boxes is None else boxes[i], lms,
                                  box_convention)
      for j, (crop, sb) in enumerate(zip(crops, src)):
        if crop.size < 4:
          continue
        t = transforms.crop_transform(crop, r)
        jobs.append((i, sb, t))
        given.append(None if lms is None else lms[j])
    out: list[list[Face]] = [[] for _ in images]
    if not jobs:
      return out
    # The float crop, as the official code feeds it (bilinear; rounding it to uint8 moves
    # landmarks by 0.2-0.4 px).
    crops, maps = self._run(images, jobs)
    # Detector or given boxes frame faces differently from the landmark crops a model may have
    # trained on: crop again around its own 68 landmarks (the official landmark rule).
    boxed = [landmarks is None or landmarks[i] is None for i, _, _ in jobs]
    for _ in range(self.refine if any(boxed) else 0):
      jobs = [(i, sb, self._landmark_transform(pos, t)) if b else (i, sb, t)
              for (i, sb, t), pos, b in zip(jobs, maps, boxed)]
      crops, maps = self._run(images, jobs)
    if self.upright:
      jobs = [(i, sb, self._upright_transform(pos, t, g))
              for (i, sb, t), pos, g in zip(jobs, maps, given)]
      crops, maps = self._run(images, jobs)
    mirrored = self.forward(crops[:, :, ::-1]) if self.flip else [None] * len(jobs)
    for (i, sb, t), pos, crop, pos_m in zip(jobs, maps, crops, mirrored):
      out[i].append(self._face(images[i], pos, crop, sb, t, pos_m))
    return out

  def _upright_transform(self, pos_crop: np.ndarray, t: np.ndarray,
                         box_points: Optional[np.ndarray]) -> np.ndarray:
    """The crop transform turned so that the face of a map predicted in crop `t` stands
    upright: the landmark crop of `box_points` (or of the map's own landmarks), in the image
    turned by the face's in-plane angle."""
    pos = transforms.transform_points(transforms.invert(t), pos_crop.reshape(-1, 3)).reshape(
        pos_crop.shape)
    angle = in_plane_angle(self.assets.canonical_vertices, self.assets.vertices(pos))
    turn = transforms.similarity(1.0, -angle, (0.0, 0.0))
    points = self.assets.landmarks(pos) if box_points is None else box_points
    turned = transforms.transform_points(turn, np.asarray(points, np.float64)[:, :2])
    return transforms.crop_transform(self._scaled(transforms.landmark_crop(turned)),
                                     self.model.resolution) @ turn

  def _landmark_transform(self, pos_crop: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The landmark crop's transform around the 68 landmarks of a map predicted in crop `t`."""
    pos = transforms.transform_points(transforms.invert(t), pos_crop.reshape(-1, 3))
    return transforms.crop_transform(self._scaled(transforms.landmark_crop(
        self.assets.landmarks(pos.reshape(pos_crop.shape)))), self.model.resolution)

  def _run(self, images, jobs):
    r = self.model.resolution
    crops = np.stack([np.asarray(transforms.warp_image(self._prefilter(images[i], t), t, r, r),
                                 np.float32) for i, _, t in jobs])
    return crops, self.forward(crops)

  def _prefilter(self, image: np.ndarray, t: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    shrink = 1.0 / float(np.sqrt(abs(np.linalg.det(t[:2, :2]))))
    if not self.antialias or shrink <= 1.0:
      return image
    import cv2
    return cv2.GaussianBlur(image, (0, 0), (shrink - 1.0) / 2.0, borderType=cv2.BORDER_REFLECT)

  def _face(self, image, pos_crop, crop, source_box, t, pos_mirrored=None) -> Face:
    a = self.assets
    inverse = transforms.invert(t)
    pos = transforms.transform_points(inverse, pos_crop.reshape(-1, 3)).reshape(
        pos_crop.shape).astype(np.float32)
    landmarks = a.landmarks(pos)
    if pos_mirrored is not None:
      # The mirror crop's landmarks, mirrored back (x -> R - 1 - x, points renamed).
      back = np.asarray(a.landmarks(pos_mirrored), np.float64)[MIRROR_68]
      back[:, 0] = self.model.resolution - 1 - back[:, 0]
      own = np.asarray(a.landmarks(pos_crop), np.float64)
      landmarks = transforms.transform_points(inverse, (own + back) / 2).astype(np.float32)
    if self.landmark_correction is not None:
      landmarks = self.landmark_correction(np.asarray(landmarks, np.float32))
    verts_crop = a.vertices(pos_crop)
    # Visibility by a z-buffer of the face mesh in the crop (cheap at R px).
    r = self.model.resolution
    windows, triangles = render.plan_windows_within(verts_crop, a.triangles,
                                                    render.BUDGET_PER_PIXEL * r * r)
    raster = render.rasterize(verts_crop, triangles, r, r, windows)
    visible = np.asarray(render.vertex_visibility(jnp.asarray(verts_crop), raster,
                                                  tolerance=1.0 * self.model.resolution / 256))
    uv_tex = np.asarray(transforms.bilinear_sample(jnp.asarray(crop, jnp.float32),
                                                 jnp.asarray(pos_crop[..., 0]),
                                                 jnp.asarray(pos_crop[..., 1])))
    uv_tex = np.clip(np.round(uv_tex), 0, 255).astype(np.uint8)
    vertices = a.vertices(pos)
    colors = a.vertices(uv_tex).astype(np.float32) / 255.0
    angles, camera = estimate_pose(a.canonical_vertices, vertices)
    return Face(box=np.asarray(source_box, np.float32), crop_transform=t.astype(np.float32),
                position_map=pos, landmarks=landmarks, vertices=vertices,
                triangles=a.triangles, face_indices=a.face_indices, colors=colors, visibility=visible,
                pose_angles_deg=angles.astype(np.float32), camera_matrix=camera.astype(np.float32),
                uv_texture=uv_tex)


def shipped_correction(path: str, variables):
  """The landmark correction shipped for the bundled model (`path` 'pretrained'), if it was
  fitted for exactly these variables; else None."""
  from prnet_jax.serving import landmark_correction
  if path != checkpoints.PRETRAINED or not os.path.isfile(landmark_correction.SHIPPED):
    return None
  correction = landmark_correction.LandmarkCorrection.load(landmark_correction.SHIPPED)
  if correction.fingerprint != landmark_correction.model_fingerprint(variables):
    return None
  return correction


def whole_image_box(image: np.ndarray) -> np.ndarray:
  """The box (left, top, right, bottom) that, with box_convention='crop', makes the whole image
  the face crop (the official demo's `--isDlib False`)."""
  h, w = np.shape(image)[:2]
  return np.array([[0.0, 0.0, w - 1.0, h - 1.0]])


def add_test_time_flags(parser) -> None:
  """--upright / --flip (argparse; default: the checkpoint's run config)."""
  import argparse
  parser.add_argument('--upright', action=argparse.BooleanOptionalAction, default=None,
                      help="one more pass in a crop turned upright (default: the run's config)")
  parser.add_argument('--landmark_correction', action=argparse.BooleanOptionalAction,
                      default=True,
                      help='apply the landmark correction fitted on real faces for this model '
                           '(the bundled model ships one; see the README)')
  parser.add_argument('--flip', action=argparse.BooleanOptionalAction, default=None,
                      help="landmarks averaged with the mirrored crop's (default: the run's "
                           "config)")


def apply_test_time_flags(predictor: Predictor, args) -> Predictor:
  if args.upright is not None:
    predictor.upright = args.upright
  if args.flip is not None:
    predictor.flip = args.flip
  if not getattr(args, 'landmark_correction', True):
    predictor.landmark_correction = None
    predictor.crop_scale = 1.0  # the official crops, as the model alone is scored
  return predictor
