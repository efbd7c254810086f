// darcyvae: the convolution kernels of K networks trained side by side
// (docs/benchmarks.md "Training"), compiled once per instruction set
// (conv_kernels_generic.cpp, conv_kernels_avx2.cpp, both including
// conv_kernels.inc) and chosen at run time by conv.cpp.
//
// Layout: the K members are the innermost axis of every array, so one SIMD
// vector holds the same element of kConvLanes members:
//   activations x (batch, H, W, C, K), weights w (KH, KW, Cin, Cout, K).
// Member k's arithmetic never touches another member's lanes. conv.cpp
// copies each image's lanes of one block (8 members; or, for the one to four
// members left over after the blocks of 8, several images of each, see
// LaneBlock in conv.cpp) into a dense, zero-padded buffer before the kernels
// run on it, so that the kernels read contiguous memory and never test a
// border. The kernels see lanes only: what a lane holds is conv.cpp's choice.
//
// As for darcy_kernels.hpp, this header holds only plain structs and
// function-pointer types (the kernel objects are built with different -m
// flags and must not instantiate templates the rest of the library uses).
#pragma once

#include <cstddef>

namespace darcyvae::detail {

// Members per SIMD vector (one AVX2 register of float32).
constexpr int kConvLanes = 8;

// A 2-d convolution of one member (the same for all K): x (hi, wi, ci) ->
// y (ho, wo, co) with a kh x kw kernel, one stride and zero padding for both
// axes, no dilation, applied to `batch` images of K members.
struct ConvShape {
  int batch;
  int hi, wi, ci;  // input grid and channels
  int ho, wo, co;  // output grid and channels
  int kh, kw;      // kernel
  int stride, pad;
  int lanes;       // K, the members (>= kConvLanes)
};

// The most pixels a kernel tile holds: the packed operands carry enough zero
// padding that a tile running past the end of a row stays inside the row.
constexpr int kConvTilePixels = 8;
// Taps in one kernel list: kh * kw * max(ci, co) must not exceed it.
constexpr int kConvMaxTaps = 4096;

// One operand of one image and one lane block, packed by conv.cpp into a
// dense (h, w, c, kConvLanes) array with zero padding: grid pixel (y, x) at
// (y + top, x + left). The padding covers every read of the kernels.
struct ConvPacked {
  const float* data;
  int h, w, c, top, left;
};

// Forward (in: x packed, out: y) or input gradient (in: dy packed, out: dx)
// of one image and lane block. w: the lane block's weights packed as
// (kh, kw, ci, co, kConvLanes). out: the image's output at the block's
// first lane, lane stride out_lanes (K); lanes [0, skip) are not written.
using ConvImageFn = void (*)(const ConvShape& s, const ConvPacked& in, const float* w, float* out,
                             int out_lanes, int skip);
// Weight gradient of one image and lane block, added to acc (kh, kw, ci,
// co, kConvLanes).
using ConvWeightFn = void (*)(const ConvShape& s, const ConvPacked& x, const ConvPacked& dy,
                              float* acc);

struct ConvKernels {
  const char* isa;
  ConvImageFn forward;        // y = conv(x, w)
  ConvImageFn backward_data;  // dx = conv^T(dy, w)
  ConvWeightFn backward_weight;
};

ConvKernels conv_kernels_generic();
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
ConvKernels conv_kernels_avx2();
#endif

}  // namespace darcyvae::detail
