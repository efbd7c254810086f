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

// The lane blocks of K members (docs/benchmarks.md, "Training"): K / kConvLanes blocks of
// consecutive members, then the r = K mod kConvLanes members left over.
// r > kConvLanes / 2: one more block, moved back to end at K (overlapping its
// neighbour), which writes only its r new lanes. 0 < r <= kConvLanes / 2: a
// shared block, whose lanes hold G = kConvLanes / r images of each of the r
// members (lane l: member l0 + l mod r, image p G + l / r in pass p), so that
// it runs over the batch in ceil(batch / G) passes instead of batch passes
// (K = 25: the work of 3 1/8 blocks instead of 4).
struct LaneBlock {
  int l0;       // its first member
  int skip;     // lanes [0, skip) are its neighbour's (a moved-back block)
  int members;  // kConvLanes, or r for a shared block
  int images;   // images a pass: 1, or G for a shared block
  bool shared() const { return images > 1; }
  int used() const { return members * images; }  // lanes that hold data
  int passes(int batch) const { return (batch + images - 1) / images; }
  // member and image of lane l in pass p (image >= batch: the lane is empty)
  int member(int l) const { return l0 + l % members; }
  int image(int p, int l) const { return p * images + l / members; }
};

int lane_blocks(const ConvShape& s) { return (s.lanes + kConvLanes - 1) / kConvLanes; }

LaneBlock lane_block(const ConvShape& s, int j) {
  const int want = j * kConvLanes;
  const int left = s.lanes - want;
  if (left >= kConvLanes) return {want, 0, kConvLanes, 1};
  if (2 * left > kConvLanes) return {s.lanes - kConvLanes, kConvLanes - left, kConvLanes, 1};
  return {want, 0, left, kConvLanes / left};
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

// Block lb's lanes of pass p of (batch, h, w, g.c, K) images `in` copied into
// the interior of a buffer of geometry g (its padding stays zero): image p's
// members [l0, l0 + kConvLanes) for a block that is not shared, else each
// lane's member and image (LaneBlock), zero where the lane is empty.
void pack(const float* in, int batch, int h, int w, int lanes, const LaneBlock& lb, int p,
          const Geometry& g, float* buffer) {
  const std::size_t rows = static_cast<std::size_t>(w) * g.c;
  const std::size_t image = static_cast<std::size_t>(h) * rows * lanes;
  const float* src[kConvLanes];  // each lane's first element, null for an empty lane
  for (int l = 0; l < kConvLanes; ++l) {
    const int b = lb.image(p, l);
    src[l] = l < lb.used() && b < batch ? in + b * image + lb.member(l) : nullptr;
  }
  for (int y = 0; y < h; ++y) {
    const std::size_t row = static_cast<std::size_t>(y) * rows * lanes;
    float* dst = buffer + ((static_cast<std::size_t>(y + g.top) * g.w + g.left) * g.c) * kConvLanes;
    if (!lb.shared()) {
      for (std::size_t i = 0; i < rows; ++i)
        std::memcpy(dst + i * kConvLanes, src[0] + row + i * lanes, kConvLanes * sizeof(float));
      continue;
    }
    for (std::size_t i = 0; i < rows; ++i)
      for (int l = 0; l < kConvLanes; ++l)
        dst[i * kConvLanes + l] = src[l] ? src[l][row + i * lanes] : 0.0f;
  }
}

// The inverse for a shared block's output: the lanes of a packed (n pixels x
// channels, kConvLanes) result `from` written to their members and images of
// the (batch, ..., K) array `out` (image_floats floats an image).
void unpack(const float* from, std::size_t n, float* out, std::size_t image_floats, int batch,
            int lanes, const LaneBlock& lb, int p) {
  for (int l = 0; l < lb.used(); ++l) {
    const int b = lb.image(p, l);
    if (b >= batch) break;  // the images of later lanes are past the batch too
    float* dst = out + b * image_floats + lb.member(l);
    for (std::size_t i = 0; i < n; ++i) dst[i * lanes] = from[i * kConvLanes + l];
  }
}

detail::ConvPacked packed(const Geometry& g, const float* data) {
  return {data, g.h, g.w, g.c, g.top, g.left};
}

std::size_t taps_of(const ConvShape& s) {
  return static_cast<std::size_t>(s.kh) * s.kw * s.ci * s.co;
}

// (kh, kw, ci, co, K) -> one (kh, kw, ci, co, kConvLanes) copy per lane block,
// each lane its member's weights (zero in a shared block's unused lanes).
std::vector<float> pack_weights(const ConvShape& s, const float* w) {
  const int nlb = lane_blocks(s);
  const std::size_t taps = taps_of(s);
  std::vector<float> out(taps * kConvLanes * nlb, 0.0f);
  for (int j = 0; j < nlb; ++j) {
    const LaneBlock lb = lane_block(s, j);
    for (std::size_t t = 0; t < taps; ++t)
      for (int l = 0; l < lb.used(); ++l)
        out[(j * taps + t) * kConvLanes + l] = w[t * s.lanes + lb.member(l)];
  }
  return out;
}

// Forward or input gradient: every (image, lane block) of the blocks that are
// not shared, image-major so that an image stays in cache while its lane
// blocks run, then the shared block's passes; each worker packs into its own
// zeroed buffers.
void run_images(const ConvShape& s, detail::ConvImageFn fn, const float* in, int in_h, int in_w,
                const Geometry& g, const float* w, float* out, int out_h, int out_w, int out_c,
                int threads) {
  const int nlb = lane_blocks(s);
  const LaneBlock last = lane_block(s, nlb - 1);
  const int plain = last.shared() ? nlb - 1 : nlb;  // blocks that are not shared
  const std::size_t plain_items = static_cast<std::size_t>(s.batch) * plain;
  const std::size_t items = plain_items + (last.shared() ? last.passes(s.batch) : 0);
  const std::vector<float> wp = pack_weights(s, w);
  const std::size_t wblock = taps_of(s) * kConvLanes;
  const std::size_t out_pixels = static_cast<std::size_t>(out_h) * out_w * out_c;
  const std::size_t out_image = out_pixels * s.lanes;
  struct Buffers {
    std::vector<float> in, out;  // packed input; a shared block's packed output
  };
  std::vector<Buffers> buffers(static_cast<std::size_t>(workers_for(items, threads)));
  parallel_for(items, threads, [&](std::size_t i, int worker) {
    Buffers& buf = buffers[static_cast<std::size_t>(worker)];
    if (buf.in.empty()) buf.in.assign(g.floats(), 0.0f);
    const bool shared = i >= plain_items;
    const int j = shared ? nlb - 1 : static_cast<int>(i % plain);
    const int p = static_cast<int>(shared ? i - plain_items : i / plain);
    const LaneBlock lb = lane_block(s, j);
    pack(in, s.batch, in_h, in_w, s.lanes, lb, p, g, buf.in.data());
    const float* wj = wp.data() + j * wblock;
    if (!shared) {
      fn(s, packed(g, buf.in.data()), wj, out + p * out_image + lb.l0, s.lanes, lb.skip);
      return;
    }
    if (buf.out.empty()) buf.out.resize(out_pixels * kConvLanes);
    fn(s, packed(g, buf.in.data()), wj, buf.out.data(), kConvLanes, 0);
    unpack(buf.out.data(), out_pixels, out, out_image, s.batch, s.lanes, lb, p);
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
  const std::size_t taps = taps_of(s);
  std::vector<float> acc(taps * kConvLanes * nlb, 0.0f);
  const Geometry gx = input_geometry(s, false);
  const Geometry gy{s.ho, s.wo, s.co, 0, 0};
  // Each worker takes a contiguous range of lane blocks and runs through the
  // images once (image-major, as above; a shared block's passes in order); a
  // lane's sum runs over its images in order whichever worker does it.
  const int workers = workers_for(static_cast<std::size_t>(nlb), threads);
  parallel_for(static_cast<std::size_t>(workers), workers, [&](std::size_t t, int) {
    const int j0 = static_cast<int>(t * nlb / workers);
    const int j1 = static_cast<int>((t + 1) * nlb / workers);
    std::vector<float> bx(gx.floats(), 0.0f), by(gy.floats(), 0.0f);
    auto run = [&](int j, int p) {
      const LaneBlock lb = lane_block(s, j);
      pack(x, s.batch, s.hi, s.wi, s.lanes, lb, p, gx, bx.data());
      pack(dy, s.batch, s.ho, s.wo, s.lanes, lb, p, gy, by.data());
      kernel(s, packed(gx, bx.data()), packed(gy, by.data()), acc.data() + taps * kConvLanes * j);
    };
    for (int b = 0; b < s.batch; ++b)
      for (int j = j0; j < j1; ++j)
        if (!lane_block(s, j).shared()) run(j, b);
    for (int j = j0; j < j1; ++j) {
      const LaneBlock lb = lane_block(s, j);
      if (lb.shared())
        for (int p = 0; p < lb.passes(s.batch); ++p) run(j, p);
    }
  });
  // Each member's gradient from its lanes: a shared block's member sums its
  // G lanes (image groups) in lane order.
  for (int j = 0; j < nlb; ++j) {
    const LaneBlock lb = lane_block(s, j);
    const float* a = acc.data() + taps * kConvLanes * j;
    for (std::size_t t = 0; t < taps; ++t) {
      float* d = dw + t * s.lanes;
      if (!lb.shared()) {
        for (int l = lb.skip; l < kConvLanes; ++l) d[lb.l0 + l] = a[t * kConvLanes + l];
        continue;
      }
      for (int m = 0; m < lb.members; ++m) {
        float sum = a[t * kConvLanes + m];
        for (int gi = 1; gi < lb.images; ++gi) sum += a[t * kConvLanes + gi * lb.members + m];
        d[lb.l0 + m] = sum;
      }
    }
  }
}

}  // namespace darcyvae
