// darcyvae: the Gaussian reconstruction term of K decoders trained side by
// side (docs/model.md §4b, §4g), straight from the layout their activations
// are in, with its gradient.
//
// For member k and sample b, with data y and decoder mean mu (K, B, C, H, W)
// and the decoder's log-variance s (K, H, W):
//   L[k, b] = 1/2 sum_{c,i,j} (log 2 pi + s_kij + (y_kbcij - mu_kbcij)^2 e^(-s_kij)).
// Backward, for an output gradient g (K, B):
//   dL/dmu = g (mu - y) e^(-s),  dL/ds_kij = 1/2 sum_{b,c} g (1 - (y - mu)^2 e^(-s)).
// y, mu and dL/dmu are strided views (any element strides), so the decoder's
// members-last output (batch, H, W, C, K) is read and its gradient written
// where they lie, with no copy. The elements are visited in the order of
// mu's memory; every sum runs in double, in that order: the result depends on
// the inputs and their strides only. One thread.
#pragma once

#include <array>

#include "index.hpp"

namespace darcyvae {

// Element strides of a (K, B, C, H, W) view, in that axis order.
using Strides5 = std::array<Index, 5>;

struct NllShape {
  Index members = 0;  // K
  Index batch = 0;    // B
  Index channels = 0, height = 0, width = 0;
};

// Throws std::invalid_argument unless every size is >= 1.
void check_nll_shape(const NllShape& s);

// out (K, B), C order: L[k, b] in nats. logvar: s as a C-ordered (K, H, W) array.
void reconstruction_nll_forward(const NllShape& s, const float* y, const Strides5& y_strides,
                                const float* mean, const Strides5& mean_strides,
                                const float* logvar, float* out);

// grad (K, B), C order: dL/dL[k, b]. Writes dmean (strided like the view
// dmean_strides describes) and dlogvar (K, H, W), C order.
void reconstruction_nll_backward(const NllShape& s, const float* y, const Strides5& y_strides,
                                 const float* mean, const Strides5& mean_strides,
                                 const float* logvar, const float* grad, float* dmean,
                                 const Strides5& dmean_strides, float* dlogvar);

}  // namespace darcyvae
