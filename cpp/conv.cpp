// darcyvae: drivers of the member-batched convolution kernels: shape checks,
// kernel selection and the split of the work over threads (conv.hpp).
#include "conv.hpp"

#include <algorithm>
#include <cstring>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "isa.hpp"
#include "parallel.hpp"

namespace darcyvae {
namespace {

using detail::ConvKernels;
using detail::kConvLanes;
using detail::kConvTilePixels;

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("conv: " + what); }

ConvKernels select(const std::string& isa) {
  [[maybe_unused]] const bool avx2 = detail::use_avx2_kernels(isa, "conv");
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
  if (avx2) return detail::conv_kernels_avx2();
#endif
  return detail::conv_kernels_generic();
}

int lane_blocks(const ConvShape& s) { return (s.lanes + kConvLanes - 1) / kConvLanes; }

// Lane block j covers [l0, l0 + kConvLanes); the last one is moved back to
// end at K (overlapping its neighbour) and writes only its new lanes.
struct LaneBlock {
  int l0, skip;
};
LaneBlock lane_block(const ConvShape& s, int j) {
  const int want = j * kConvLanes;
  const int l0 = std::min(want, s.lanes - kConvLanes);
  return {l0, want - l0};
}

// Where a packed operand sits in its zero-padded buffer (ConvPacked without data).
struct Geometry {
  int h, w, c, top, left;
  std::size_t floats() const { return static_cast<std::size_t>(h) * w * c * kConvLanes; }
};

// x as the convolution's input, padded by `pad` on every side; with `slack`,
// wide enough for a tile of kConvTilePixels output pixels that starts at the
// row's last pixel (forward), else for the exact reads (weight gradient).
Geometry input_geometry(const ConvShape& s, bool slack) {
  const int last = slack ? s.wo - 1 + kConvTilePixels - 1 : s.wo - 1;
  return {std::max(s.hi + 2 * s.pad, (s.ho - 1) * s.stride + s.kh),
          std::max(s.wi + 2 * s.pad, last * s.stride + s.kw), s.ci, s.pad, s.pad};
}

// dy as the input of the transposed convolution: input pixel i reads output
// rows (i + pad - kh) / stride, which start below 0 and end past ho.
Geometry output_geometry(const ConvShape& s) {
  auto up = [&](int n) { return n > 0 ? (n + s.stride - 1) / s.stride : 0; };
  const int top = up(s.kh - 1 - s.pad), left = up(s.kw - 1 - s.pad);
  const int h = top + std::max(s.ho, (s.hi - 1 + s.pad) / s.stride + 1);
  // pixel q of residue r reads column (r + pad - kw) / stride + q, q < tiles' end
  const int last = (s.stride - 1 + s.pad) / s.stride + up(s.wi) - 1 + kConvTilePixels - 1;
  return {h, left + std::max(s.wo, last + 1), s.co, top, left};
}

// Copies lanes [l0, l0 + kConvLanes) of an (h, w, g.c, K) image into the
// interior of a zeroed buffer of geometry g (its padding stays zero).
void pack(const float* image, int h, int w, int lanes, int l0, const Geometry& g, float* buffer) {
  const std::size_t rows = static_cast<std::size_t>(w) * g.c;
  for (int y = 0; y < h; ++y) {
    const float* src = image + static_cast<std::size_t>(y) * rows * lanes + l0;
    float* dst = buffer + ((static_cast<std::size_t>(y + g.top) * g.w + g.left) * g.c) * kConvLanes;
    for (std::size_t i = 0; i < rows; ++i)
      std::memcpy(dst + i * kConvLanes, src + i * lanes, kConvLanes * sizeof(float));
  }
}

detail::ConvPacked packed(const Geometry& g, const float* data) {
  return {data, g.h, g.w, g.c, g.top, g.left};
}

// (kh, kw, ci, co, K) -> one (kh, kw, ci, co, kConvLanes) copy per lane block.
std::vector<float> pack_weights(const ConvShape& s, const float* w) {
  const int nlb = lane_blocks(s);
  const std::size_t taps = static_cast<std::size_t>(s.kh) * s.kw * s.ci * s.co;
  std::vector<float> out(taps * kConvLanes * nlb);
  for (int j = 0; j < nlb; ++j)
    for (std::size_t t = 0; t < taps; ++t)
      std::memcpy(out.data() + (j * taps + t) * kConvLanes, w + t * s.lanes + lane_block(s, j).l0,
                  kConvLanes * sizeof(float));
  return out;
}

// Forward or input gradient: every (image, lane block), image-major so that
// an image stays in cache while its lane blocks run; each worker packs into
// its own zeroed buffer.
void run_images(const ConvShape& s, detail::ConvImageFn fn, const float* in, int in_h, int in_w,
                const Geometry& g, const float* w, float* out, int out_h, int out_w, int out_c,
                int threads) {
  const int nlb = lane_blocks(s);
  const std::vector<float> wp = pack_weights(s, w);
  const std::size_t wblock = wp.size() / nlb;
  const std::size_t items = static_cast<std::size_t>(s.batch) * nlb;
  std::vector<std::vector<float>> buffers(static_cast<std::size_t>(workers_for(items, threads)));
  const std::size_t in_image = static_cast<std::size_t>(in_h) * in_w * g.c * s.lanes;
  const std::size_t out_image = static_cast<std::size_t>(out_h) * out_w * out_c * s.lanes;
  parallel_for(items, threads, [&](std::size_t i, int worker) {
    std::vector<float>& buf = buffers[static_cast<std::size_t>(worker)];
    if (buf.empty()) buf.assign(g.floats(), 0.0f);
    const std::size_t b = i / nlb;
    const int j = static_cast<int>(i % nlb);
    const LaneBlock lb = lane_block(s, j);
    pack(in + b * in_image, in_h, in_w, s.lanes, lb.l0, g, buf.data());
    fn(s, packed(g, buf.data()), wp.data() + j * wblock, out + b * out_image + lb.l0, s.lanes,
       lb.skip);
  });
}

}  // namespace

void check_conv_shape(const ConvShape& s) {
  if (s.batch < 0) fail("batch must be >= 0; got " + std::to_string(s.batch));
  if (s.hi < 1 || s.wi < 1 || s.ci < 1 || s.co < 1 || s.kh < 1 || s.kw < 1)
    fail("input grid, channels and kernel must be >= 1");
  if (s.stride < 1) fail("stride must be >= 1; got " + std::to_string(s.stride));
  if (s.pad < 0 || s.pad >= s.kh || s.pad >= s.kw)
    fail("padding must be in [0, kernel size); got " + std::to_string(s.pad));
  if (s.lanes < kConvLanes)
    fail("needs at least " + std::to_string(kConvLanes) + " members (the innermost axis); got " +
         std::to_string(s.lanes));
  if (static_cast<long long>(s.kh) * s.kw * std::max(s.ci, s.co) > detail::kConvMaxTaps)
    fail("kernel height x width x max(channels) must be <= " +
         std::to_string(detail::kConvMaxTaps) + " (the kernels' tap lists)");
  const int ho = (s.hi + 2 * s.pad - s.kh) / s.stride + 1;
  const int wo = (s.wi + 2 * s.pad - s.kw) / s.stride + 1;
  if (s.hi + 2 * s.pad < s.kh || s.wi + 2 * s.pad < s.kw) fail("the kernel is larger than the padded input");
  if (s.ho != ho || s.wo != wo)
    fail("output grid (" + std::to_string(s.ho) + ", " + std::to_string(s.wo) +
         ") does not match the input grid, kernel, stride and padding (expected (" +
         std::to_string(ho) + ", " + std::to_string(wo) + "))");
}

std::string conv_isa(const std::string& isa) { return select(isa).isa; }

void conv_forward(const ConvShape& s, const float* x, const float* w, float* y, int threads,
                  const std::string& isa) {
  check_conv_shape(s);
  run_images(s, select(isa).forward, x, s.hi, s.wi, input_geometry(s, true), w, y, s.ho, s.wo,
             s.co, threads);
}

void conv_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx,
                        int threads, const std::string& isa) {
  check_conv_shape(s);
  run_images(s, select(isa).backward_data, dy, s.ho, s.wo, output_geometry(s), w, dx, s.hi, s.wi,
             s.ci, threads);
}

void conv_backward_weight(const ConvShape& s, const float* x, const float* dy, float* dw,
                          int threads, const std::string& isa) {
  check_conv_shape(s);
  const auto kernel = select(isa).backward_weight;
  const int nlb = lane_blocks(s);
  const std::size_t taps = static_cast<std::size_t>(s.kh) * s.kw * s.ci * s.co;
  std::vector<float> acc(taps * kConvLanes * nlb, 0.0f);
  const Geometry gx = input_geometry(s, false);
  const Geometry gy{s.ho, s.wo, s.co, 0, 0};
  const std::size_t x_image = static_cast<std::size_t>(s.hi) * s.wi * s.ci * s.lanes;
  const std::size_t y_image = static_cast<std::size_t>(s.ho) * s.wo * s.co * s.lanes;
  // Each worker takes a contiguous range of lane blocks and runs through the
  // images once (image-major, as above); a lane block's sum runs over the
  // images in order whichever worker does it.
  const int workers = workers_for(static_cast<std::size_t>(nlb), threads);
  parallel_for(static_cast<std::size_t>(workers), workers, [&](std::size_t t, int) {
    const int j0 = static_cast<int>(t * nlb / workers);
    const int j1 = static_cast<int>((t + 1) * nlb / workers);
    std::vector<float> bx(gx.floats(), 0.0f), by(gy.floats(), 0.0f);
    for (int b = 0; b < s.batch; ++b)
      for (int j = j0; j < j1; ++j) {
        const int l0 = lane_block(s, j).l0;
        pack(x + b * x_image, s.hi, s.wi, s.lanes, l0, gx, bx.data());
        pack(dy + b * y_image, s.ho, s.wo, s.lanes, l0, gy, by.data());
        kernel(s, packed(gx, bx.data()), packed(gy, by.data()), acc.data() + taps * kConvLanes * j);
      }
  });
  for (int j = 0; j < nlb; ++j) {
    const LaneBlock lb = lane_block(s, j);
    const float* a = acc.data() + taps * kConvLanes * j;
    for (std::size_t t = 0; t < taps; ++t)
      for (int l = lb.skip; l < kConvLanes; ++l)
        dw[t * s.lanes + lb.l0 + l] = a[t * kConvLanes + l];
  }
}

}  // namespace darcyvae
