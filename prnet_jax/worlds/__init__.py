"""Face worlds: synthetic faces with exact 300W-LP ground truth, by seed.

* `procedural_world`: the embedded procedural face, Lambertian shading (fast, for tests);
* `ict_world`: ICT-FaceKit heads rendered toward photographs (`ict_render` shades them,
  `image_effects` adds backgrounds, hair, occluders and camera effects);
* `common`: what both worlds share (the `Sample` record, pose-and-crop draws).
"""
