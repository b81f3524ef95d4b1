"""Face models and the UV assets derived from them.

* `uv_assets`: PRNet's UV-space assets (landmark texels, face mask, weight mask, triangles) in
  the official files' formats;
* `face_model`: one typed 3D morphable model, its BFM loader, and UV assets derived from it;
* `procedural_face`: the embedded face model built by code;
* `ict_model` / `ict_face`: the ICT-FaceKit model (import, shipped copy) and its samplers;
* `catalog`: the UV assets a run uses, by name (``'procedural'``, ``'ict'`` or a folder).
"""
