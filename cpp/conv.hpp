// darcyvae: 2-d convolutions of K networks at once, members innermost
// (docs/benchmarks.md "Training"; the layout is in conv_kernels.hpp).
//
// A grouped convolution with few channels per member gives a GEMM-based
// library too little work per member; here one SIMD vector holds
// kConvLanes members, so every multiply-add does useful work for eight of
// them whatever the channel count. Each output element is summed in a fixed
// order: results do not depend on the thread count.
#pragma once

#include <string>

#include "conv_kernels.hpp"

namespace darcyvae {

using detail::ConvShape;

// Checks the shape (positive sizes, ho == (hi + 2 pad - kh) / stride + 1 and
// the same for w, lanes >= kConvLanes, pad < kernel); throws
// std::invalid_argument saying what was wrong.
void check_conv_shape(const ConvShape& s);

// Instruction set the kernels run with: "avx2" when built in and the CPU has
// AVX2 and FMA, else "generic". isa: "auto", "avx2" or "generic".
std::string conv_isa(const std::string& isa = "auto");

// y (batch, ho, wo, co, K) = conv(x (batch, hi, wi, ci, K), w (kh, kw, ci, co, K)).
void conv_forward(const ConvShape& s, const float* x, const float* w, float* y, int threads,
                  const std::string& isa = "auto");
// dx (batch, hi, wi, ci, K) = the transpose of the convolution applied to
// dy (batch, ho, wo, co, K): the input gradient of conv_forward, and the
// forward pass of the transposed convolution with the same weights.
void conv_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx,
                        int threads, const std::string& isa = "auto");
// dw (kh, kw, ci, co, K) = the weight gradient of conv_forward for x and dy.
void conv_backward_weight(const ConvShape& s, const float* x, const float* dy, float* dw,
                          int threads, const std::string& isa = "auto");

}  // namespace darcyvae
