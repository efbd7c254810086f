// darcyvae: the numeric kernels of the Darcy solver, compiled once per
// instruction set (darcy_kernels_generic.cpp, darcy_kernels_avx2.cpp, both
// including darcy_kernels.inc) and chosen at run time by darcy.cpp.
//
// This header is the whole interface between the two sides. It holds only
// plain structs and function-pointer types: the kernel translation units are
// built with different -m flags, so they must not instantiate any template
// (std::, Eigen) that the rest of the library also instantiates (the linker
// would keep one copy, possibly the AVX2 one, for everybody).
#pragma once

#include <cstddef>
#include <cstdint>

namespace darcyvae::detail {

// Samples solved together, one per SIMD lane: every scalar operation of the
// solver acts on a vector of kLanes independent samples, so each sample's
// arithmetic is the same whichever lane or group it lands in.
constexpr int kLanes = 4;
// Right-hand sides carried through the factorisation: the source b and the
// gauge weights w (the bordered system's border column).
constexpr int kRhs = 2;
// Stencil slots per node, in this order.
enum Stencil : int { kCenter = 0, kWest = 1, kEast = 2, kSouth = 3, kNorth = 4, kStencil = 5 };

// One front of the multifrontal factorisation: a nested-dissection separator
// (or a whole leaf region) of s variables plus its b boundary variables.
struct FrontDesc {
  int s;                 // variables eliminated here (the separator)
  int b;                 // boundary variables (eliminated by ancestors)
  int m;                 // s + b
  int ld;                // row length in lane vectors: m + kRhs
  int depth;             // depth in the separator tree (root 0)
  int parent;            // index of the parent front, -1 for the root
  int vars;              // offset of the m front variables in PlanView::front_vars
  int entries;           // offset of the original-matrix entries in PlanView::entries
  int nentries;          // number of entries (triples row, col, coefficient slot)
  int blocks;            // offset of the ancestor-update blocks in PlanView::blocks
  int nblocks;           // number of blocks (kBlockInts ints each)
  int opens;             // offset in PlanView::opens of the fronts to open first
  int nopens;            // how many (this front and the ancestors it is the first leaf of)
  int scatter;           // offset in PlanView::scatter of this front's destinations, -1: blocks
  std::int64_t store;    // offset (lane vectors) of the s separator rows in the store
};

// An ancestor-update block of a front with separator size s: rows
// [src_row, src_row + nrows) of its boundary, columns [src_col, src_col +
// ncols) of its U12 (src_col == b: the right-hand sides), multiplied over the
// s pivots and subtracted at (dest_row, dest_col) of front dest; lower: only
// the lower triangle (a diagonal block of LDL^T).
enum BlockField : int {
  kBlockDest = 0, kBlockDestRow, kBlockDestCol, kBlockSrcRow, kBlockRows, kBlockSrcCol,
  kBlockCols, kBlockLower, kBlockInts
};

// The symbolic analysis, fixed per (grid, scheme): read-only, shared by all
// threads.
struct PlanView {
  int grid;              // N
  int n;                 // N * N
  int symmetric;         // 1: LDL^T on the lower triangle (fv); 0: LU (fd)
  int scheme_fv;         // 1: finite-volume coefficients; 0: finite differences
  int block;             // panel width of the blocked partial factorisation
  int nfronts;           // fronts in postorder (children before parents; root last)
  int ndepth;            // number of tree levels
  int pin;               // node whose diagonal is doubled to make A nonsingular
  int pin_row;           // its row in the root front (the root's last pivot)
  const FrontDesc* fronts;
  const int* front_vars;  // node index (iy * N + ix) of each front variable
  const int* entries;     // (front row, front column, node * kStencil + slot)
  const int* blocks;      // ancestor-update blocks (BlockField)
  const int* opens;       // fronts to open (zero and assemble) before a front
  // Small fronts update their ancestors through a dense b x (b + kRhs)
  // scratch product and this table: for each boundary row i, the columns
  // j < b (j <= i for LDL^T) then the kRhs right-hand sides, the destination
  // as a lane-vector offset from WorkView::store (levels follow the store).
  const int* scatter;
  const std::int64_t* depth_rows_offset;  // start (lane vectors) of each level's buffer
  std::int64_t store_size;                // lane vectors in the factor store
  std::int64_t depth_size;                // lane vectors in all level buffers (b x s rows)
  std::int64_t scratch_size;              // lane vectors of scratch for scattered fronts
  int max_front;                          // largest m
};

// Per-thread scratch, allocated by darcy.cpp with 64-byte alignment. All
// arrays are in units of kLanes doubles (one lane vector).
struct WorkView {
  double* k;         // n: permeability, lane-interleaved
  double* coef;      // n * kStencil: matrix coefficients
  double* x;         // n: solution
  double* store;     // store_size: the separator rows (U) of every front
  double* levels;    // depth_size, at store + store_size: the boundary rows (L21) of the
                     // open front of each level
  double* xf;        // max_front: gathered front unknowns
  double* scratch;   // scratch_size: Schur complement of a scattered front
};

// One group of kLanes samples. Padding lanes repeat a real sample and have
// out[l] == nullptr.
struct GroupIO {
  const double* k[kLanes];  // N*N permeability of each lane ([iy, ix])
  void* out[kLanes];        // 3*N*N output of each lane, or nullptr
  int out_f32;              // 1: float32 output, 0: float64
  const double* rhs;        // n: right-hand side b (f for fd, f * w for fv)
  const double* weights;    // n: gauge weights w (trapezoid rule)
  double lambda[kLanes];          // out: Lagrange multiplier of the gauge
  double relative_residual[kLanes];  // out: ||A p - b|| / ||b||
  double bordered_residual[kLanes];  // out: ||A p + lambda w - b|| / ||b||
  double backward_error[kLanes];     // out: normwise backward error of the bordered system
};

// Seconds spent in each stage of run_group, accumulated when non-null.
enum Stage : int {
  kStageAssembly = 0,   // interleave K, stencil coefficients
  kStageFactor = 1,     // fronts: assembly, partial LU / LDL^T, ancestor updates, forward elimination
  kStageSolve = 2,      // Lagrange multiplier, back substitution, zero-mean shift
  kStageVelocity = 3,   // velocities and output
  kStageCheck = 4,      // residual and backward error
  kStages = 5
};

using GroupFn = void (*)(const PlanView& plan, const WorkView& work, GroupIO& io,
                         double* stage_seconds, double (*clock)());
// Scalar stencil coefficients of one sample (coef: n * kStencil), used by the
// pivoting fallback and the reference-matrix export.
using CoefFn = void (*)(const double* k, int grid, int scheme_fv, double* coef);
// Velocities of one sample from its pressure: writes u_x, u_y (n each).
using VelocityFn = void (*)(const double* k, const double* p, int grid, double* ux, double* uy);

struct Kernels {
  const char* isa;
  GroupFn run_group;
  CoefFn coefficients;
  VelocityFn velocities;
};

Kernels kernels_generic();
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
Kernels kernels_avx2();
#endif

}  // namespace darcyvae::detail
