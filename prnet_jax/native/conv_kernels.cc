// Stride-1 NHWC convolution kernels for CPU as XLA FFI handlers: the kernel gradient (all
// shallow layers), and the forward pass where XLA:CPU is slow (few input or output channels).
//
// Kernel gradient:
//   dw[kh, kw, ci, co] = sum_{n, i, j} x[n, i + kh - pt, j + kw - pl, ci] * dy[n, i, j, co]
//
// (x zero outside the image). XLA:CPU computes this as a convolution with an
// (Ho x Wo)-sized window, which runs at 1.2-2.3x the cost of the forward convolution and needs
// layout transposes of both operands (BENCHMARKS.md). Here it is a sum of outer products read
// straight from the NHWC arrays: for each pixel, a vector of one operand's channels times
// broadcast channels of the other, accumulated in registers; rows are processed in chunks that
// stay in the L2 cache while every kernel tap sweeps them.
//
// Determinism: the work split depends only on the shapes (never on the thread count), each work
// item sums in a fixed order, and partial sums are added in a fixed order.
//
// Built on first use by prnet_jax/native/__init__.py with the host compiler (-O3 -march=native).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "parallel.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4)));

inline Vec LoadVec(const float* p) { return *reinterpret_cast<const Vec*>(p); }

struct Shape {
  int64_t n, h, w, ci, ho, wo, co, kh, kw, pt, pl;
};

// One operand is read as vectors (kLanes consecutive channels), the other as broadcast scalars.
// With `vec_is_dy` the vectors run over output channels co, otherwise over input channels ci.
struct Plan {
  bool vec_is_dy;
  int64_t vec_channels;    // channels of the vector operand (multiple of kLanes)
  int64_t bcast_channels;  // channels of the broadcast operand
};

// acc[b][v] += bcast[p][b0 + b] * vec[p][v0 + v * kLanes : ...] over the pixels of one row
// segment; B broadcast channels x NV vectors of accumulators live in registers.
template <int B, int NV>
inline void RowKernel(const float* __restrict bcast, int64_t bstride, const float* __restrict vec,
                      int64_t vstride, int64_t count, float* __restrict out, int64_t out_b_stride) {
  Vec acc[B][NV];
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < NV; ++v) acc[b][v] = Vec{};
  for (int64_t p = 0; p < count; ++p) {
    Vec d[NV];
    for (int v = 0; v < NV; ++v) d[v] = LoadVec(vec + p * vstride + v * kLanes);
    const float* s = bcast + p * bstride;
#pragma GCC unroll 32
    for (int b = 0; b < B; ++b) {
      const float sb = s[b];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[b][v] += sb * d[v];
    }
  }
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < NV; ++v) {
      float* o = out + b * out_b_stride + v * kLanes;
      *reinterpret_cast<Vec*>(o) = LoadVec(o) + acc[b][v];
    }
}

using RowFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t);

// Broadcast channels per register block for NV vectors: 24 accumulators with 2 vectors (AVX-512
// has 32 registers), 16 with one; half that with fewer registers.
constexpr int kMaxB1 = kLanes == 16 ? 16 : 8;
constexpr int kMaxB2 = kLanes == 16 ? 12 : 4;

template <int NV>
RowFn RowForNV(int b) {
  // An if-chain, not a switch: the largest block size equals a small one on some CPUs.
  if (b == (NV == 2 ? kMaxB2 : kMaxB1)) return RowKernel<NV == 2 ? kMaxB2 : kMaxB1, NV>;
  if (b == 8) return RowKernel<8, NV>;
  if (b == 4) return RowKernel<4, NV>;
  if (b == 3) return RowKernel<3, NV>;
  if (b == 2) return RowKernel<2, NV>;
  return RowKernel<1, NV>;
}

// A register block of broadcast channels [start, start + size) and its row kernel.
struct Block {
  int64_t start;
  RowFn fn;
};

// Splits `total` broadcast channels into register blocks of supported sizes for NV = nv.
std::vector<Block> Blocks(int64_t total, int nv) {
  const int max_b = nv == 2 ? kMaxB2 : kMaxB1;
  std::vector<Block> blocks;
  int64_t start = 0;
  const int sizes[] = {max_b, 8, 4, 3, 2, 1};
  while (start < total) {
    for (int size : sizes) {
      if (size <= max_b && start + size <= total) {
        blocks.push_back({start, nv == 2 ? RowForNV<2>(size) : RowForNV<1>(size)});
        start += size;
        break;
      }
    }
  }
  return blocks;
}

// Accumulates into `dw` the contribution of rows [r0, r1) of the flattened (n, i) output rows
// for every kernel tap. Layout of `dw`: [kh][kw][ci][co] when the vectors run over co,
// [kh][kw][co][ci] otherwise.
void Accumulate(const Shape& s, const Plan& plan, const float* x, const float* dy, float* dw,
                int64_t r0, int64_t r1, const std::vector<Block>& blocks, int64_t vectors,
                int nv) {
  for (int64_t t = 0; t < s.kh * s.kw; ++t) {
    const int64_t kh = t / s.kw, kw = t % s.kw;
    const int64_t jlo = std::max<int64_t>(0, s.pl - kw);
    const int64_t jhi = std::min<int64_t>(s.wo, s.w + s.pl - kw);
    if (jhi <= jlo) continue;
    float* dwt = dw + t * s.ci * s.co;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / s.ho, i = r % s.ho;
      const int64_t xi = i + kh - s.pt;
      if (xi < 0 || xi >= s.h) continue;
      const float* xrow = x + ((n * s.h + xi) * s.w + (jlo + kw - s.pl)) * s.ci;
      const float* dyrow = dy + ((n * s.ho + i) * s.wo + jlo) * s.co;
      const int64_t count = jhi - jlo;
      for (const Block& blk : blocks) {
        const int64_t b = blk.start;
        for (int64_t v = 0; v < vectors; v += nv) {
          if (plan.vec_is_dy) {  // acc[ci = b..][co = v*lanes..] -> dw[t][ci][co]
            blk.fn(xrow + b, s.ci, dyrow + v * kLanes, s.co, count,
                   dwt + b * s.co + v * kLanes, s.co);
          } else {  // acc[co = b..][ci = v*lanes..] -> dw[t][co][ci]
            blk.fn(dyrow + b, s.co, xrow + v * kLanes, s.ci, count,
                   dwt + b * s.ci + v * kLanes, s.ci);
          }
        }
      }
    }
  }
}

using prnet_native::ParallelFor;


ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw,
                              int64_t pad_top, int64_t pad_left) {
  auto xd = x.dimensions(), dyd = dy.dimensions(), dwd = dw->dimensions();
  if (xd.size() != 4 || dyd.size() != 4 || dwd.size() != 4)
    return ffi::Error::InvalidArgument("conv_kernel_grad: expected rank-4 x, dy and dw");
  Shape s{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], dyd[3], dwd[0], dwd[1], pad_top, pad_left};
  if (dyd[0] != s.n || dwd[2] != s.ci || dwd[3] != s.co)
    return ffi::Error::InvalidArgument("conv_kernel_grad: inconsistent shapes");
  Plan plan;
  if (s.co % kLanes == 0) {
    plan = {true, s.co, s.ci};
  } else if (s.ci % kLanes == 0) {
    plan = {false, s.ci, s.co};
  } else {
    return ffi::Error::InvalidArgument(
        "conv_kernel_grad: needs input or output channels divisible by the vector width");
  }
  const int64_t vectors = plan.vec_channels / kLanes;
  const int nv = vectors % 2 == 0 ? 2 : 1;
  const auto blocks = Blocks(plan.bcast_channels, nv);
  const int64_t taps = s.kh * s.kw, rows = s.n * s.ho;
  if (rows == 0 || taps == 0) {
    std::fill(dw->typed_data(), dw->typed_data() + dw->element_count(), 0.0f);
    return ffi::Error::Success();
  }
  const int64_t dw_size = taps * s.ci * s.co;
  float* out = dw->typed_data();
  const float* xp = x.typed_data();
  const float* dyp = dy.typed_data();
  // Vectors over ci accumulate [t][co][ci]; the final sum writes [t][ci][co].
  const bool transposed = !plan.vec_is_dy;

  // The rows are split into a fixed number of parts with private partial sums; each part visits
  // its rows in L2-sized chunks, every tap and register block sweeping a chunk while it is in
  // cache. (For large kernels, i.e. deep layers with short reductions, XLA's own convolution
  // is faster: prnet_jax.native.use_for decides.)
  const int64_t row_bytes = (s.wo * s.co + s.w * s.ci) * sizeof(float);
  const int64_t chunk =
      std::max<int64_t>(1, (int64_t{192} << 10) / std::max<int64_t>(row_bytes, 1));
  const int64_t parts = std::min<int64_t>(16, (rows + chunk - 1) / chunk);
  std::vector<float> partial(parts * dw_size, 0.0f);
  ParallelFor(pool, parts, [&](int64_t part) {
    const int64_t p0 = rows * part / parts, p1 = rows * (part + 1) / parts;
    float* acc = partial.data() + part * dw_size;
    for (int64_t r = p0; r < p1; r += chunk) {
      Accumulate(s, plan, xp, dyp, acc, r, std::min(r + chunk, p1), blocks, vectors, nv);
    }
  });
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < s.ci; ++c)
      for (int64_t o = 0; o < s.co; ++o) {
        const int64_t src = transposed ? (t * s.co + o) * s.ci + c : (t * s.ci + c) * s.co + o;
        float sum = 0.0f;
        for (int64_t part = 0; part < parts; ++part) sum += partial[part * dw_size + src];
        out[(t * s.ci + c) * s.co + o] = sum;
      }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Forward: y[n, i, j, co] = sum_{kh, kw, ci} x[n, i + kh, j + kw, ci] * w[kh, kw, ci, co] (VALID;
// the caller pads). P consecutive output pixels x NV vectors of output channels accumulate in
// registers; each weight vector is loaded once per P pixels, each input value broadcast.

// Shapes of a VALID forward convolution x (n, h, wi, ci) * w (kh, kw, ci, co) -> y.
struct ForwardShape {
  int64_t n, h, wi, ci, kh, kw, co, ho, wo;
};

std::optional<ffi::Error> CheckForward(const char* name, ffi::Buffer<ffi::F32>& x,
                                       ffi::Buffer<ffi::F32>& w, ffi::ResultBuffer<ffi::F32>& y,
                                       ForwardShape* f) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4)
    return ffi::Error::InvalidArgument(std::string(name) + ": expected rank-4 x, w and y");
  *f = {xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], yd[1], yd[2]};
  if (wd[2] != f->ci || yd[0] != f->n || yd[3] != f->co || f->ho != f->h - f->kh + 1 ||
      f->wo != f->wi - f->kw + 1)
    return ffi::Error::InvalidArgument(std::string(name) + ": inconsistent shapes");
  return std::nullopt;
}

template <int P, int NV>
inline void PixelBlock(const float* __restrict x, int64_t w_stride_x, int64_t ci_count,
                       const float* __restrict w, int64_t co, int64_t kh_count, int64_t kw_count,
                       int64_t x_row_stride, float* __restrict y) {
  Vec acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = Vec{};
  for (int64_t kh = 0; kh < kh_count; ++kh) {
    const float* xr = x + kh * x_row_stride;
    for (int64_t kw = 0; kw < kw_count; ++kw) {
      const float* xk = xr + kw * w_stride_x;
      const float* wk = w + (kh * kw_count + kw) * ci_count * co;
      for (int64_t c = 0; c < ci_count; ++c) {
        Vec wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = LoadVec(wk + c * co + v * kLanes);
#pragma GCC unroll 32
        for (int p = 0; p < P; ++p) {
          const float xv = xk[p * w_stride_x + c];
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[p][v] += xv * wv[v];
        }
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<Vec*>(y + p * co + v * kLanes) = acc[p][v];
}

using BlockFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t,
                         int64_t, float*);

// Pixel block sizes per vector count: as many accumulators as registers allow.
constexpr int kRegs = kLanes == 16 ? 28 : 12;

template <int NV>
BlockFn BlockForNV(int p) {
  if (p == kRegs / NV) return PixelBlock<kRegs / NV, NV>;
  if (p == 4) return PixelBlock<4, NV>;
  if (p == 2) return PixelBlock<2, NV>;
  return PixelBlock<1, NV>;
}

BlockFn BlockFor(int p, int nv) {
  return nv == 4 ? BlockForNV<4>(p) : nv == 2 ? BlockForNV<2>(p) : BlockForNV<1>(p);
}

ffi::Error ConvForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                           ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y) {
  ForwardShape f;
  if (auto error = CheckForward("conv_forward", x, w, y, &f)) return *error;
  const int64_t n = f.n, h = f.h, wi = f.wi, ci = f.ci, kh = f.kh, kw = f.kw, co = f.co;
  const int64_t ho = f.ho, wo = f.wo;
  if (co % kLanes)
    return ffi::Error::InvalidArgument(
        "conv_forward: needs output channels divisible by the vector width");
  const int64_t vectors = co / kLanes;
  const int nv = vectors % 4 == 0 ? 4 : vectors % 2 == 0 ? 2 : 1;
  // Pixel blocks from the largest down, each with its kernel, chosen once.
  const int sizes[] = {kRegs / nv, 4, 2, 1};
  BlockFn fns[4];
  for (int k = 0; k < 4; ++k) fns[k] = BlockFor(sizes[k], nv);
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  const int64_t rows = n * ho;
  ParallelFor(pool, rows, [&](int64_t r) {
    const int64_t b = r / ho, i = r % ho;
    const float* xrow = xp + (b * h + i) * wi * ci;
    float* yrow = yp + (b * ho + i) * wo * co;
    for (int64_t v = 0; v < vectors; v += nv) {
      int64_t j = 0;
      for (int k = 0; k < 4; ++k)
        for (; j + sizes[k] <= wo; j += sizes[k])
          fns[k](xrow + j * ci, ci, ci, wp + v * kLanes, co, kh, kw, wi * ci,
                 yrow + j * co + v * kLanes);
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Forward with few output channels (PRNet's 3-channel output layers), VALID: vectors run over
// output pixels instead of channels. Each input row is copied once into a channel-planar ring
// buffer ([c][column]); then for PV vectors of consecutive pixels and each output channel o,
// acc[o][v] += w[kh, kw, c, o] * row_kh[c][j + kw + v*lanes ...].

template <int CO, int PV>
void SmallCoRow(const float* const* planes, int64_t plane_stride, int64_t ci, const float* w,
                int64_t kh_count, int64_t kw_count, int64_t j, float* y, int64_t count) {
  Vec acc[CO][PV];
  for (int o = 0; o < CO; ++o)
    for (int v = 0; v < PV; ++v) acc[o][v] = Vec{};
  for (int64_t kh = 0; kh < kh_count; ++kh) {
    for (int64_t kw = 0; kw < kw_count; ++kw) {
      const float* wk = w + (kh * kw_count + kw) * ci * CO;
      const float* base = planes[kh] + j + kw;
      for (int64_t c = 0; c < ci; ++c) {
        Vec xv[PV];
#pragma GCC unroll 8
        for (int v = 0; v < PV; ++v) xv[v] = LoadVec(base + c * plane_stride + v * kLanes);
#pragma GCC unroll 4
        for (int o = 0; o < CO; ++o) {
          const float wo = wk[c * CO + o];
#pragma GCC unroll 8
          for (int v = 0; v < PV; ++v) acc[o][v] += wo * xv[v];
        }
      }
    }
  }
  // Interleave back to NHWC; only `count` of the PV * lanes pixels are real.
  alignas(64) float tmp[CO][PV * kLanes];
  for (int o = 0; o < CO; ++o)
    for (int v = 0; v < PV; ++v) std::memcpy(&tmp[o][v * kLanes], &acc[o][v], sizeof(Vec));
  for (int64_t p = 0; p < count; ++p)
    for (int o = 0; o < CO; ++o) y[p * CO + o] = tmp[o][p];
}

using SmallFn = void (*)(const float* const*, int64_t, int64_t, const float*, int64_t, int64_t,
                         int64_t, float*, int64_t);
constexpr int kSmallPV = kLanes == 16 ? 4 : 2;


ffi::Error ConvForwardSmallCoImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                  ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y) {
  ForwardShape f;
  if (auto error = CheckForward("conv_forward_small_co", x, w, y, &f)) return *error;
  const int64_t n = f.n, h = f.h, wi = f.wi, ci = f.ci, kh = f.kh, kw = f.kw, co = f.co;
  const int64_t ho = f.ho, wo = f.wo;
  if (co < 1 || co > 4)
    return ffi::Error::InvalidArgument("conv_forward_small_co: needs 1 to 4 output channels");
  const SmallFn fn = co == 1   ? SmallCoRow<1, kSmallPV>
                     : co == 2 ? SmallCoRow<2, kSmallPV>
                     : co == 3 ? SmallCoRow<3, kSmallPV>
                               : SmallCoRow<4, kSmallPV>;
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  // Planar rows are padded so that whole vectors past the last column stay inside the buffer.
  const int64_t plane = wi + kSmallPV * kLanes + kLanes;
  const int64_t rows = n * ho;
  const int64_t chunk = 8;
  const int64_t items = (rows + chunk - 1) / chunk;
  ParallelFor(pool, items, [&](int64_t item) {
    std::vector<float> ring(kh * ci * plane, 0.0f);
    std::vector<const float*> planes(kh);
    int64_t packed_b = -1, packed_next = 0;  // input rows [packed_next - kh, packed_next) packed
    const int64_t r1 = std::min(rows, (item + 1) * chunk);
    for (int64_t r = item * chunk; r < r1; ++r) {
      const int64_t b = r / ho, i = r % ho;
      if (b != packed_b || packed_next < i || packed_next > i + kh) {
        packed_b = b;
        packed_next = i;
      }
      for (; packed_next < i + kh; ++packed_next) {
        float* dst = ring.data() + (packed_next % kh) * ci * plane;
        const float* src = xp + (b * h + packed_next) * wi * ci;
        for (int64_t col = 0; col < wi; ++col)
          for (int64_t c = 0; c < ci; ++c) dst[c * plane + col] = src[col * ci + c];
      }
      for (int64_t k = 0; k < kh; ++k) planes[k] = ring.data() + ((i + k) % kh) * ci * plane;
      float* yrow = yp + (b * ho + i) * wo * co;
      const int64_t step = kSmallPV * kLanes;
      for (int64_t j = 0; j < wo; j += step) {
        const int64_t count = std::min<int64_t>(step, wo - j);
        fn(planes.data(), plane, ci, wp, kh, kw, j, yrow + j * co, count);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PrnetConvKernelGrad, ConvKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PrnetConvForward, ConvForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(PrnetConvForwardSmallCo, ConvForwardSmallCoImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

extern "C" int prnet_native_lanes() { return kLanes; }
