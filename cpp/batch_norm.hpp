// darcyvae: batch normalisation in training mode followed by ReLU, fused, for
// activations stored with the channels innermost: x (rows, channels), one row
// per (image, pixel). The member-batched networks keep their activations as
// (batch, H, W, C, K) (conv_kernels.hpp), which is this layout with
// rows = batch * H * W and channel c * K + k (docs/model.md §4g).
//
// Per channel j over the rows (M of them):
//   mean_j = sum x / M,  var_j = sum (x - mean_j)^2 / M  (biased, as BatchNorm
//   normalises), y = max(0, (x - mean_j) / sqrt(var_j + eps) * gamma_j + beta_j).
// The moments are those of x shifted by its first row, in one pass; sums run
// over blocks of rows in float and add into double accumulators in a fixed
// order: the result depends on the inputs and the instruction set only.
#pragma once

#include <cstdint>
#include <string>

namespace darcyvae {

struct BatchNormShape {
  std::int64_t rows = 0;      // M >= 2 (training-mode statistics need two values)
  std::int64_t channels = 0;  // >= 1
};

// Throws std::invalid_argument unless rows >= 2, channels >= 1 and eps > 0.
void check_batch_norm_shape(const BatchNormShape& s, double eps);

// Instruction set the passes run with: "avx2" when built in and the CPU has
// AVX2 and FMA, else "generic". isa: "auto", "avx2" or "generic".
std::string batch_norm_isa(const std::string& isa = "auto");

// y = ReLU(BatchNorm(x)); writes the batch mean and the biased variance of
// every channel (what the backward pass and the running averages need).
void batch_norm_relu_forward(const BatchNormShape& s, const float* x, const float* gamma,
                             const float* beta, double eps, float* y, float* mean, float* var,
                             const std::string& isa = "auto");

// Gradients of the forward pass for the output gradient dy: dx (rows,
// channels), dgamma and dbeta (channels). y is the forward output (its
// positive entries are where ReLU passed the gradient).
void batch_norm_relu_backward(const BatchNormShape& s, const float* x, const float* y,
                              const float* dy, const float* gamma, const float* mean,
                              const float* var, double eps, float* dx, float* dgamma,
                              float* dbeta, const std::string& isa = "auto");

}  // namespace darcyvae
