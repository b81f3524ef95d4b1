// Triangle rasterisation with a z-buffer as an XLA FFI handler: the function of
// prnet_jax.render.rasterize (same conventions, same float32 arithmetic), computed by visiting
// each triangle's clipped bounding box in index order instead of testing fixed windows.
//
//   vertices (B, V, 3) float32: x (column), y (row) in pixels, z depth (larger is nearer)
//   triangles (T, 3) int32
//   -> triangle (B, H, W) int32 (-1: none), bary (B, H, W, 3) float32, depth (B, H, W) float32
//
// Conventions (render.py): a pixel centre (j, i) is covered when all three barycentric weights
// are >= -1e-5; zero-area triangles cover nothing; the nearest z wins and, among equally near
// triangles, the higher index (triangles are visited in increasing index order, so `>=`).
// Barycentrics are recomputed per pixel for its owner, as render.py does.
//
// Cost is the sum of the triangles' on-image bounding-box areas; memory is the outputs only,
// whatever the mesh. Batch items run in parallel on XLA's thread pool; each is sequential, so
// the result is deterministic.

// The JAX version computes without fused multiply-adds; so must this one, for equal coverage.
#pragma GCC optimize("fp-contract=off")

#include <cmath>
#include <cstdint>
#include <limits>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kDegenerate = 1e-10f;
constexpr float kEdge = 1e-5f;

// Barycentric weights of (px, py) in triangle (a, b, c), as render._barycentric; false for a
// degenerate triangle.
inline bool Barycentric(float px, float py, const float* a, const float* b, const float* c,
                        float* w) {
  const float d = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]);
  if (!(std::fabs(d) > kDegenerate)) return false;
  const float w1 = ((px - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (py - a[1])) / d;
  const float w2 = ((b[0] - a[0]) * (py - a[1]) - (px - a[0]) * (b[1] - a[1])) / d;
  w[0] = 1.0f - w1 - w2;
  w[1] = w1;
  w[2] = w2;
  return true;
}

void RasterizeOne(const float* verts, int64_t num_verts, const int32_t* tris, int64_t num_tris,
                  int64_t h, int64_t w, int32_t* owner, float* bary, float* depth) {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t p = 0; p < h * w; ++p) {
    owner[p] = -1;
    depth[p] = -inf;
  }
  for (int64_t t = 0; t < num_tris; ++t) {
    const int32_t* tri = tris + 3 * t;
    if (tri[0] < 0 || tri[1] < 0 || tri[2] < 0 || tri[0] >= num_verts || tri[1] >= num_verts ||
        tri[2] >= num_verts)
      continue;
    const float* a = verts + 3 * tri[0];
    const float* b = verts + 3 * tri[1];
    const float* c = verts + 3 * tri[2];
    const float x0 = std::ceil(std::fmin(a[0], std::fmin(b[0], c[0])));
    const float x1 = std::floor(std::fmax(a[0], std::fmax(b[0], c[0])));
    const float y0 = std::ceil(std::fmin(a[1], std::fmin(b[1], c[1])));
    const float y1 = std::floor(std::fmax(a[1], std::fmax(b[1], c[1])));
    if (!(x0 <= x1 && y0 <= y1)) continue;  // also NaN corners
    float unused[3];
    if (!Barycentric(a[0], a[1], a, b, c, unused)) continue;  // zero area: covers nothing
    const int64_t i0 = static_cast<int64_t>(std::fmax(y0, 0.0f));
    const int64_t i1 = static_cast<int64_t>(std::fmin(y1, static_cast<float>(h - 1)));
    const int64_t j0 = static_cast<int64_t>(std::fmax(x0, 0.0f));
    const int64_t j1 = static_cast<int64_t>(std::fmin(x1, static_cast<float>(w - 1)));
    for (int64_t i = i0; i <= i1; ++i) {
      for (int64_t j = j0; j <= j1; ++j) {
        float wt[3];
        Barycentric(static_cast<float>(j), static_cast<float>(i), a, b, c, wt);
        if (wt[0] < -kEdge || wt[1] < -kEdge || wt[2] < -kEdge) continue;
        const float z = wt[0] * a[2] + wt[1] * b[2] + wt[2] * c[2];
        const int64_t p = i * w + j;
        if (z > -inf && z >= depth[p]) {
          depth[p] = z;
          owner[p] = static_cast<int32_t>(t);
        }
      }
    }
  }
  for (int64_t i = 0; i < h; ++i) {
    for (int64_t j = 0; j < w; ++j) {
      const int64_t p = i * w + j;
      float* out = bary + 3 * p;
      out[0] = out[1] = out[2] = 0.0f;
      if (owner[p] < 0) continue;
      const int32_t* tri = tris + 3 * owner[p];
      Barycentric(static_cast<float>(j), static_cast<float>(i), verts + 3 * tri[0],
                  verts + 3 * tri[1], verts + 3 * tri[2], out);
    }
  }
}

ffi::Error RasterizeImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> vertices,
                         ffi::Buffer<ffi::S32> triangles, ffi::ResultBuffer<ffi::S32> owner,
                         ffi::ResultBuffer<ffi::F32> bary, ffi::ResultBuffer<ffi::F32> depth) {
  auto vd = vertices.dimensions(), td = triangles.dimensions(), od = owner->dimensions();
  if (vd.size() != 3 || vd[2] != 3 || td.size() != 2 || td[1] != 3 || od.size() != 3 ||
      od[0] != vd[0])
    return ffi::Error::InvalidArgument(
        "rasterize: expected vertices (B, V, 3), triangles (T, 3), outputs (B, H, W)");
  const int64_t batch = vd[0], nv = vd[1], nt = td[0], h = od[1], w = od[2];
  const float* vp = vertices.typed_data();
  const int32_t* tp = triangles.typed_data();
  int32_t* op = owner->typed_data();
  float* bp = bary->typed_data();
  float* dp = depth->typed_data();
  prnet_native::ParallelFor(pool, batch, [&](int64_t k) {
    RasterizeOne(vp + k * nv * 3, nv, tp, nt, h, w, op + k * h * w, bp + k * h * w * 3,
                 dp + k * h * w);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PrnetRasterize, RasterizeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
