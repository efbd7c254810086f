#include "darcy.hpp"

#include <Eigen/SparseLU>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "darcy_kernels.hpp"
#include "isa.hpp"
#include "parallel.hpp"

namespace darcyvae {

using detail::FrontDesc;
using detail::kLanes;
using detail::kRhs;
using detail::kStencil;

namespace detail {

// The symbolic analysis of one (grid, scheme): the nested-dissection tree and
// every index map the numeric phase needs.
struct DarcyPlan {
  PlanView view{};
  std::vector<FrontDesc> fronts;
  std::vector<int> front_vars;
  std::vector<int> entries;
  std::vector<int> blocks;
  std::vector<int> opens;
  std::vector<int> scatter;
  std::vector<std::int64_t> depth_offset;
  int leaf = 0;
  int block = 0;
  double flops = 0;
};

// Two lane vectors (one cache line); std::vector<LaneBlock> gives 64-byte
// aligned storage (C++17 aligned new).
struct alignas(64) LaneBlock {
  double v[kLanes * 2];
};

struct DarcyWorkspace {
  std::vector<LaneBlock> buffer;
  WorkView view{};
};

}  // namespace detail

namespace {

using detail::DarcyPlan;
using detail::DarcyWorkspace;

constexpr int kDefaultLeaf = 4;
constexpr int kDefaultBlock = 8;
// Fronts with at most this many boundary variables update their ancestors by
// a dense product and a scatter-add; larger ones by rectangular blocks.
constexpr int kDefaultScatter = 24;

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("darcy: " + what); }

// A front of the separator tree before indexing.
struct Proto {
  int x0 = 0, x1 = -1, y0 = 0, y1 = -1;  // region (inclusive node ranges)
  int depth = 0;
  int parent = -1;
  std::vector<int> children;
  std::vector<int> sep;  // nodes eliminated here, in order
};

// Recursive bisection of the grid: a region of more than `leaf` nodes is cut
// by the middle line across its longer side (the separator, eliminated after
// both halves); smaller regions are dense leaf fronts. Fronts are appended in
// postorder, so the root (the whole grid) comes last.
int dissect(int N, int leaf, int x0, int x1, int y0, int y1, int depth, std::vector<Proto>& out) {
  if (x1 < x0 || y1 < y0) return -1;
  const int nx = x1 - x0 + 1, ny = y1 - y0 + 1;
  Proto p;
  p.x0 = x0;
  p.x1 = x1;
  p.y0 = y0;
  p.y1 = y1;
  p.depth = depth;
  if (nx * ny <= leaf) {
    for (int iy = y0; iy <= y1; ++iy)
      for (int ix = x0; ix <= x1; ++ix) p.sep.push_back(iy * N + ix);
  } else if (nx >= ny) {
    const int mx = x0 + (nx - 1) / 2;
    for (int c : {dissect(N, leaf, x0, mx - 1, y0, y1, depth + 1, out),
                  dissect(N, leaf, mx + 1, x1, y0, y1, depth + 1, out)})
      if (c >= 0) p.children.push_back(c);
    for (int iy = y0; iy <= y1; ++iy) p.sep.push_back(iy * N + mx);
  } else {
    const int my = y0 + (ny - 1) / 2;
    for (int c : {dissect(N, leaf, x0, x1, y0, my - 1, depth + 1, out),
                  dissect(N, leaf, x0, x1, my + 1, y1, depth + 1, out)})
      if (c >= 0) p.children.push_back(c);
    for (int ix = x0; ix <= x1; ++ix) p.sep.push_back(my * N + ix);
  }
  out.push_back(std::move(p));
  const int self = static_cast<int>(out.size()) - 1;
  for (int c : out[self].children) out[c].parent = self;
  return self;
}

// The separator tree with the node orderings that every indexing step reads.
struct Tree {
  int N = 0;
  std::vector<Proto> protos;           // fronts in postorder (root last)
  std::vector<int> elim;               // elimination position of each node
  std::vector<int> home;               // front whose separator holds each node
  std::vector<std::vector<int>> vars;  // each front's variables: separator, then boundary
};

// Elimination position of every node: the fronts' separators in postorder,
// each in its own order. Checks that the dissection covers the grid.
std::vector<int> elimination_positions(const std::vector<Proto>& protos, int n) {
  std::vector<int> elim(n, -1);
  int counter = 0;
  for (const Proto& p : protos)
    for (int v : p.sep) elim[v] = counter++;
  if (counter != n) fail("internal error: nested dissection does not cover the grid");
  return elim;
}

// Front variables: separator, then the region's outside neighbours sorted
// by elimination position (all in ancestor separators).
std::vector<std::vector<int>> front_variables(int N, const std::vector<Proto>& protos,
                                              const std::vector<int>& elim) {
  const int nf = static_cast<int>(protos.size());
  std::vector<std::vector<int>> vars(nf);
  for (int f = 0; f < nf; ++f) {
    const Proto& p = protos[f];
    std::vector<int> bnd;
    for (int iy = p.y0; iy <= p.y1; ++iy) {
      if (p.x0 > 0) bnd.push_back(iy * N + p.x0 - 1);
      if (p.x1 < N - 1) bnd.push_back(iy * N + p.x1 + 1);
    }
    for (int ix = p.x0; ix <= p.x1; ++ix) {
      if (p.y0 > 0) bnd.push_back((p.y0 - 1) * N + ix);
      if (p.y1 < N - 1) bnd.push_back((p.y1 + 1) * N + ix);
    }
    std::sort(bnd.begin(), bnd.end(), [&](int a, int b) { return elim[a] < elim[b]; });
    vars[f] = p.sep;
    vars[f].insert(vars[f].end(), bnd.begin(), bnd.end());
  }
  return vars;
}

// Home front of every node: the front whose separator holds it.
std::vector<int> home_fronts(const std::vector<Proto>& protos, int n) {
  std::vector<int> home(n, -1);
  for (int f = 0; f < static_cast<int>(protos.size()); ++f)
    for (int v : protos[f].sep) home[v] = f;
  return home;
}

// The nested dissection of an N x N grid into fronts of at most `leaf`
// nodes, with the orderings above.
Tree separator_tree(int N, int leaf) {
  Tree tree;
  tree.N = N;
  dissect(N, leaf, 0, N - 1, 0, N - 1, 0, tree.protos);
  tree.elim = elimination_positions(tree.protos, N * N);
  tree.vars = front_variables(N, tree.protos, tree.elim);
  tree.home = home_fronts(tree.protos, N * N);
  return tree;
}

// Row of node v among the variables of front f (which are sorted by
// elimination position); fails if v is not one of them.
int position(const Tree& tree, int f, int v) {
  const std::vector<int>& vf = tree.vars[f];
  const auto it = std::lower_bound(vf.begin(), vf.end(), v,
                                   [&](int a, int b) { return tree.elim[a] < tree.elim[b]; });
  if (it == vf.end() || *it != v) fail("internal error: variable missing from its ancestor's front");
  return static_cast<int>(it - vf.begin());
}

// Shape of each front (s, b, m, ld, depth, parent), its variables appended
// to plan.front_vars and the offset of its separator rows in the factor
// store. Returns the store size in lane vectors.
std::int64_t describe_fronts(DarcyPlan& plan, const Tree& tree) {
  const int nf = static_cast<int>(tree.protos.size());
  plan.fronts.resize(nf);
  std::int64_t store = 0;
  for (int f = 0; f < nf; ++f) {
    const Proto& p = tree.protos[f];
    FrontDesc& F = plan.fronts[f];
    F.s = static_cast<int>(p.sep.size());
    F.m = static_cast<int>(tree.vars[f].size());
    F.b = F.m - F.s;
    F.ld = F.m + kRhs;
    F.depth = p.depth;
    F.parent = p.parent;
    F.vars = static_cast<int>(plan.front_vars.size());
    plan.front_vars.insert(plan.front_vars.end(), tree.vars[f].begin(), tree.vars[f].end());
    F.store = store;
    store += static_cast<std::int64_t>(F.s) * F.ld;
  }
  return store;
}

// Original matrix entries of each front, as (front row, front column,
// node * kStencil + slot) triples in plan.entries: the stencil couplings of
// its separator nodes with nodes still in the front (lower triangle only when
// symmetric), and for each boundary neighbour its row's entry towards the
// separator node. Couplings with nodes eliminated earlier were assembled in a
// descendant front.
void original_entries(DarcyPlan& plan, const Tree& tree, bool symmetric) {
  const int N = tree.N;
  const int nf = static_cast<int>(tree.protos.size());
  std::vector<int> pos(N * N, -1);  // the current front's positions
  const int step[kStencil] = {0, -1, 1, -N, N};
  const int opposite[kStencil] = {detail::kCenter, detail::kEast, detail::kWest, detail::kNorth,
                                  detail::kSouth};
  for (int f = 0; f < nf; ++f) {
    const std::vector<int>& vars = tree.vars[f];
    FrontDesc& F = plan.fronts[f];
    for (int r = 0; r < F.m; ++r) pos[vars[r]] = r;
    F.entries = static_cast<int>(plan.entries.size() / 3);
    for (int r = 0; r < F.s; ++r) {
      const int v = vars[r];
      const int ix = v % N, iy = v / N;
      for (int slot = 0; slot < kStencil; ++slot) {
        if ((slot == detail::kWest && ix == 0) || (slot == detail::kEast && ix == N - 1) ||
            (slot == detail::kSouth && iy == 0) || (slot == detail::kNorth && iy == N - 1))
          continue;
        const int u = v + step[slot];
        const int pu = pos[u];
        if (pu < 0) {
          if (tree.elim[u] > tree.elim[v]) fail("internal error: neighbour missing from front");
          continue;  // eliminated earlier: assembled in a descendant front
        }
        if (!symmetric || pu <= r) {
          plan.entries.insert(plan.entries.end(), {r, pu, v * kStencil + slot});
        }
        if (pu >= F.s) {  // boundary variable: its row's entry towards v
          plan.entries.insert(plan.entries.end(), {pu, r, u * kStencil + opposite[slot]});
        }
      }
    }
    F.nentries = static_cast<int>(plan.entries.size() / 3) - F.entries;
    for (int r = 0; r < F.m; ++r) pos[vars[r]] = -1;
  }
}

// One buffer per tree level for the boundary rows (b x s, the L21 block)
// of the front open at that level: plan.depth_offset holds each level's
// start (lane vectors after the store) and, last, their total size.
void level_buffers(DarcyPlan& plan) {
  int ndepth = 0;
  for (const FrontDesc& F : plan.fronts) ndepth = std::max(ndepth, F.depth + 1);
  std::vector<std::int64_t> level_size(ndepth, 0);
  for (const FrontDesc& F : plan.fronts)
    level_size[F.depth] = std::max(level_size[F.depth], static_cast<std::int64_t>(F.b) * F.s);
  plan.depth_offset.assign(ndepth + 1, 0);
  for (int d = 0; d < ndepth; ++d) plan.depth_offset[d + 1] = plan.depth_offset[d] + level_size[d];
}

// Scatter table of a small front f (F.scatter, plan.scatter): the destination
// of each Schur-complement entry (u, v) of its dense b x (b + kRhs) update, in
// the front of whichever of u, v is eliminated first: separator rows in the
// store, boundary rows in the level buffers that follow it (at `store`); then
// the right-hand sides of u, in its home's separator row. Returns the scratch
// the update needs (lane vectors).
std::int64_t scatter_table(DarcyPlan& plan, const Tree& tree, int f, bool symmetric,
                           std::int64_t store) {
  FrontDesc& F = plan.fronts[f];
  const std::vector<int>& vars = tree.vars[f];
  F.scatter = static_cast<int>(plan.scatter.size());
  auto at = [&](int u, int v) -> std::int64_t {
    const int h = tree.elim[u] <= tree.elim[v] ? tree.home[u] : tree.home[v];
    const FrontDesc& H = plan.fronts[h];
    const int r = position(tree, h, u), c = position(tree, h, v);
    if (r < H.s) return H.store + static_cast<std::int64_t>(r) * H.ld + c;
    return store + plan.depth_offset[H.depth] + static_cast<std::int64_t>(r - H.s) * H.s + c;
  };
  for (int i = 0; i < F.b; ++i) {
    const int u = vars[F.s + i];
    for (int j = 0; j < (symmetric ? i + 1 : F.b); ++j)
      plan.scatter.push_back(static_cast<int>(at(u, vars[F.s + j])));
    const FrontDesc& H = plan.fronts[tree.home[u]];
    for (int r = 0; r < kRhs; ++r) {
      plan.scatter.push_back(static_cast<int>(
          H.store + static_cast<std::int64_t>(position(tree, tree.home[u], u)) * H.ld + H.m + r));
    }
  }
  return static_cast<std::int64_t>(F.b) * (F.b + kRhs);
}

// Update blocks of a larger front f (F.blocks, F.nblocks, plan.blocks). Its
// boundary splits into segments of consecutive variables with the same home
// front. Entry (u, v) of the Schur complement, u in segment a and v in
// segment c, lives in the front of whichever of u, v is eliminated first: for
// a == c the home's separator rows (lower triangle only for LDL^T), for a < c
// row u of home(a) at v's column there (upper part), for a > c row u of
// home(c), one of its boundary rows (lower part). Each segment's right-hand
// sides go to its home's separator rows.
void update_blocks(DarcyPlan& plan, const Tree& tree, int f, bool symmetric) {
  FrontDesc& F = plan.fronts[f];
  const std::vector<int>& vars = tree.vars[f];
  const std::vector<int>& home = tree.home;
  std::vector<int> seg_start;  // boundary positions where a new home starts
  for (int i = 0; i < F.b; ++i)
    if (i == 0 || home[vars[F.s + i]] != home[vars[F.s + i - 1]]) seg_start.push_back(i);
  seg_start.push_back(F.b);
  const int nseg = static_cast<int>(seg_start.size()) - 1;
  // First destination position of segment a in front h; checks contiguity.
  auto dest = [&](int h, int a) {
    const int p0 = position(tree, h, vars[F.s + seg_start[a]]);
    for (int i = seg_start[a]; i < seg_start[a + 1]; ++i)
      if (position(tree, h, vars[F.s + i]) != p0 + (i - seg_start[a]))
        fail("internal error: segment not contiguous in its destination front");
    return p0;
  };
  for (int a = 0; a < nseg; ++a) {
    const int ha = home[vars[F.s + seg_start[a]]];
    const int rows_a = seg_start[a + 1] - seg_start[a];
    for (int c = 0; c < nseg; ++c) {
      if (symmetric && c > a) continue;
      const int hc = home[vars[F.s + seg_start[c]]];
      const int cols_c = seg_start[c + 1] - seg_start[c];
      const int h = a <= c ? ha : hc;
      plan.blocks.insert(plan.blocks.end(),
                         {h, dest(h, a), dest(h, c), seg_start[a], rows_a, seg_start[c], cols_c,
                          (symmetric && a == c) ? 1 : 0});
    }
    // Right-hand sides of segment a, in its home's separator rows.
    plan.blocks.insert(plan.blocks.end(), {ha, dest(ha, a), plan.fronts[ha].m, seg_start[a],
                                           rows_a, F.b, kRhs, 0});
  }
  F.nblocks = static_cast<int>(plan.blocks.size() / detail::kBlockInts) - F.blocks;
}

// How each front updates its ancestors: a scatter table for fronts with at
// most scatter_max boundary variables, rectangular blocks for larger ones.
// Returns the scratch the largest scattered front needs (lane vectors).
std::int64_t ancestor_updates(DarcyPlan& plan, const Tree& tree, bool symmetric, int scatter_max,
                              std::int64_t store) {
  std::int64_t scratch = 0;
  for (int f = 0; f < static_cast<int>(plan.fronts.size()); ++f) {
    FrontDesc& F = plan.fronts[f];
    F.blocks = static_cast<int>(plan.blocks.size() / detail::kBlockInts);
    F.nblocks = 0;
    F.scatter = -1;
    if (F.b > 0 && F.b <= scatter_max) {
      scratch = std::max(scratch, scatter_table(plan, tree, f, symmetric, store));
    } else {
      update_blocks(plan, tree, f, symmetric);
    }
  }
  return scratch;
}

// Fronts are opened (zeroed, original entries added) before their first
// descendant runs: the chain of fronts whose leftmost leaf is f opens
// right before f, ancestors first (F.opens, F.nopens, plan.opens).
void open_schedule(DarcyPlan& plan, const std::vector<Proto>& protos) {
  const int nf = static_cast<int>(protos.size());
  std::vector<int> first(nf);
  for (int f = 0; f < nf; ++f)
    first[f] = protos[f].children.empty() ? f : first[protos[f].children.front()];
  std::vector<std::vector<int>> opens(nf);
  for (int f = nf - 1; f >= 0; --f) opens[first[f]].push_back(f);  // ancestors first
  for (int f = 0; f < nf; ++f) {
    plan.fronts[f].opens = static_cast<int>(plan.opens.size());
    plan.fronts[f].nopens = static_cast<int>(opens[f].size());
    plan.opens.insert(plan.opens.end(), opens[f].begin(), opens[f].end());
  }
}

// Floating-point operations of the numeric factorisation: dense partial LU
// of every front (half of it for LDL^T).
double factor_flops(const std::vector<FrontDesc>& fronts, bool symmetric) {
  double flops = 0;
  for (const FrontDesc& F : fronts) {
    const double s = F.s, b = F.b;
    flops += 2.0 / 3.0 * s * s * s + 2.0 * s * s * b + 2.0 * s * b * b;
  }
  return symmetric ? flops / 2 : flops;
}

// The flat view of the plan that the kernels read (pointers into its
// vectors, sizes, the pinned node). Checks the root front and that every
// store and level offset fits the 32-bit scatter table.
void fill_view(DarcyPlan& plan, int N, bool symmetric, bool fv, int block, std::int64_t store,
               std::int64_t scratch) {
  const FrontDesc& root = plan.fronts.back();
  if (root.b != 0 || root.parent != -1) fail("internal error: bad root front");
  int max_front = 0;
  for (const FrontDesc& F : plan.fronts) max_front = std::max(max_front, F.m);
  detail::PlanView& V = plan.view;
  V.grid = N;
  V.n = N * N;
  V.symmetric = symmetric ? 1 : 0;
  V.scheme_fv = fv ? 1 : 0;
  V.block = block;
  V.nfronts = static_cast<int>(plan.fronts.size());
  V.ndepth = static_cast<int>(plan.depth_offset.size()) - 1;
  V.pin_row = root.s - 1;
  V.pin = plan.front_vars[root.vars + V.pin_row];
  V.fronts = plan.fronts.data();
  V.front_vars = plan.front_vars.data();
  V.entries = plan.entries.data();
  V.blocks = plan.blocks.data();
  V.opens = plan.opens.data();
  V.depth_rows_offset = plan.depth_offset.data();
  V.store_size = store;
  V.depth_size = plan.depth_offset.back();
  V.scratch_size = scratch;
  V.scatter = plan.scatter.data();
  if (store + V.depth_size > 2147483647) fail("grid too large for 32-bit scatter offsets");
  V.max_front = max_front;
}

// The symbolic analysis of one (grid, scheme), step by step: the separator
// tree, the fronts' shapes, their original entries, the level buffers, the
// ancestor updates, the opening order, the flop count and the kernels' view.
std::unique_ptr<DarcyPlan> build_plan(int N, bool symmetric, bool fv, int leaf, int block,
                                      int scatter_max) {
  auto plan = std::make_unique<DarcyPlan>();
  plan->leaf = leaf;
  plan->block = block;
  const Tree tree = separator_tree(N, leaf);
  const std::int64_t store = describe_fronts(*plan, tree);
  original_entries(*plan, tree, symmetric);
  level_buffers(*plan);
  const std::int64_t scratch = ancestor_updates(*plan, tree, symmetric, scatter_max, store);
  open_schedule(*plan, tree.protos);
  plan->flops = factor_flops(plan->fronts, symmetric);
  fill_view(*plan, N, symmetric, fv, block, store, scratch);
  return plan;
}

std::unique_ptr<DarcyWorkspace> make_workspace(const detail::PlanView& P) {
  auto ws = std::make_unique<DarcyWorkspace>();
  const std::int64_t n = P.n;
  // Lane vectors per array, in order: k, coef, x, store + levels, xf, scratch.
  const std::int64_t sizes[] = {n, n * kStencil, n, P.store_size + P.depth_size, P.max_front,
                                P.scratch_size};
  std::int64_t total = 0;
  for (std::int64_t s : sizes) total += (s + 1) / 2 * 2;  // keep 64-byte alignment
  ws->buffer.resize(static_cast<std::size_t>(total / 2 + 1));
  double* base = ws->buffer.front().v;
  double* ptr[6];
  std::int64_t off = 0;
  for (int a = 0; a < 6; ++a) {
    ptr[a] = base + off * kLanes;
    off += (sizes[a] + 1) / 2 * 2;
  }
  detail::WorkView& V = ws->view;
  V.k = ptr[0];
  V.coef = ptr[1];
  V.x = ptr[2];
  V.store = ptr[3];
  V.levels = ptr[3] + P.store_size * kLanes;
  V.xf = ptr[4];
  V.scratch = ptr[5];
  return ws;
}

detail::Kernels select_kernels(KernelIsa isa) {
  if (isa == KernelIsa::generic) return detail::kernels_generic();
  const bool have_avx2 = detail::avx2_kernels_available();
  if (isa == KernelIsa::avx2 && !have_avx2)
    fail("isa 'avx2' is not available (not built in, or the CPU lacks AVX2/FMA)");
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
  if (have_avx2) return detail::kernels_avx2();
#endif
  return detail::kernels_generic();
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check_permeability(const double* k, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (!(k[i] > 0.0) || !std::isfinite(k[i])) fail("permeability must be finite and > 0");
  }
}

}  // namespace

// ---------------------------------------------------------------------------

DarcyScheme parse_darcy_scheme(const std::string& name) {
  if (name == "fd") return DarcyScheme::fd;
  if (name == "fv") return DarcyScheme::fv;
  fail("scheme must be 'fd' or 'fv'; got '" + name + "'");
}

const char* darcy_scheme_name(DarcyScheme scheme) {
  return scheme == DarcyScheme::fd ? "fd" : "fv";
}

KernelIsa parse_kernel_isa(const std::string& name) {
  if (name == "auto") return KernelIsa::automatic;
  if (name == "avx2") return KernelIsa::avx2;
  if (name == "generic") return KernelIsa::generic;
  fail("isa must be one of 'auto', 'avx2', 'generic'; got '" + name + "'");
}

std::vector<double> darcy_source(int grid, double well_width, double rate) {
  if (grid < 3) fail("grid must be >= 3");
  if (!(well_width > 0.0 && well_width <= 0.5)) fail("well_width must be in (0, 0.5]");
  if (!std::isfinite(rate)) fail("rate must be finite");
  const int N = grid;
  const double h = 1.0 / (N - 1), half = 0.5 * well_width, tol = 1e-9 * h;
  std::vector<double> f(static_cast<std::size_t>(N) * N, 0.0);
  for (int iy = 0; iy < N; ++iy) {
    const double y = iy * h;
    for (int ix = 0; ix < N; ++ix) {
      const double x = ix * h;
      double v = 0.0;
      if (std::abs(x - half) <= half + tol && std::abs(y - half) <= half + tol) v += rate;
      if (std::abs(x - 1.0 + half) <= half + tol && std::abs(y - 1.0 + half) <= half + tol)
        v -= rate;
      f[static_cast<std::size_t>(iy) * N + ix] = v;
    }
  }
  return f;
}

std::vector<double> darcy_gauge_weights(int grid) {
  if (grid < 3) fail("grid must be >= 3");
  const int N = grid;
  const double h = 1.0 / (N - 1);
  std::vector<double> w(static_cast<std::size_t>(N) * N);
  for (int iy = 0; iy < N; ++iy) {
    const double wy = (iy == 0 || iy == N - 1) ? 1.0 : 2.0;
    for (int ix = 0; ix < N; ++ix) {
      const double wx = (ix == 0 || ix == N - 1) ? 1.0 : 2.0;
      w[static_cast<std::size_t>(iy) * N + ix] = wx * wy * h * h / 4.0;
    }
  }
  return w;
}

Eigen::SparseMatrix<double, Eigen::RowMajor> darcy_matrix(const double* k, int grid,
                                                          DarcyScheme scheme) {
  if (grid < 3) fail("grid must be >= 3");
  const int N = grid, n = N * N;
  std::vector<double> coef(static_cast<std::size_t>(n) * kStencil);
  detail::kernels_generic().coefficients(k, N, scheme == DarcyScheme::fv ? 1 : 0, coef.data());
  Eigen::SparseMatrix<double, Eigen::RowMajor> A(n, n);
  A.reserve(Eigen::VectorXi::Constant(n, kStencil));
  for (int iy = 0; iy < N; ++iy) {
    for (int ix = 0; ix < N; ++ix) {
      const int i = iy * N + ix;
      const double* c = coef.data() + static_cast<std::size_t>(i) * kStencil;
      // Column order within the row: south, west, centre, east, north.
      if (iy > 0) A.insert(i, i - N) = c[detail::kSouth];
      if (ix > 0) A.insert(i, i - 1) = c[detail::kWest];
      A.insert(i, i) = c[detail::kCenter];
      if (ix < N - 1) A.insert(i, i + 1) = c[detail::kEast];
      if (iy < N - 1) A.insert(i, i + N) = c[detail::kNorth];
    }
  }
  A.makeCompressed();
  return A;
}

std::vector<double> darcy_rhs(const double* source, int grid, DarcyScheme scheme) {
  const std::size_t n = static_cast<std::size_t>(grid) * grid;
  std::vector<double> b(source, source + n);
  if (scheme == DarcyScheme::fv) {
    const std::vector<double> w = darcy_gauge_weights(grid);
    for (std::size_t i = 0; i < n; ++i) b[i] *= w[i];
  }
  return b;
}

// ---------------------------------------------------------------------------

DarcySolver::DarcySolver(int grid, DarcyScheme scheme, int leaf_size, int block, KernelIsa isa,
                         double check_tolerance, double residual_tolerance)
    : grid_(grid),
      scheme_(scheme),
      check_tolerance_(check_tolerance),
      residual_tolerance_(residual_tolerance) {
  if (grid < 3) fail("grid must be >= 3; got " + std::to_string(grid));
  if (leaf_size < 0) fail("leaf_size must be >= 0");
  if (block < 0 || block > 64) fail("block must be in [0, 64]");
  if (std::isnan(check_tolerance)) fail("check_tolerance must not be NaN");
  if (!(residual_tolerance > 0.0)) fail("residual_tolerance must be > 0");
  kernels_ = std::make_unique<detail::Kernels>(select_kernels(isa));
  const bool fv = scheme == DarcyScheme::fv;
  plan_ = build_plan(grid, /*symmetric=*/fv, fv, leaf_size > 0 ? leaf_size : kDefaultLeaf,
                     block > 0 ? block : kDefaultBlock, kDefaultScatter);
  weights_ = darcy_gauge_weights(grid);
}

DarcySolver::~DarcySolver() = default;

int DarcySolver::grid() const { return grid_; }
DarcyScheme DarcySolver::scheme() const { return scheme_; }
const char* DarcySolver::isa() const { return kernels_->isa; }
int DarcySolver::lanes() const { return kLanes; }
int DarcySolver::leaf_size() const { return plan_->leaf; }
int DarcySolver::block() const { return plan_->block; }
int DarcySolver::fronts() const { return plan_->view.nfronts; }
double DarcySolver::factor_flops() const { return plan_->flops; }
std::size_t DarcySolver::fallbacks() const { return fallbacks_.load(); }
double DarcySolver::residual_tolerance() const { return residual_tolerance_; }

std::size_t DarcySolver::pooled_workspaces() const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  return pool_.size();
}

std::vector<int> DarcySolver::elimination_order() const {
  std::vector<int> order;
  order.reserve(static_cast<std::size_t>(grid_) * grid_);
  for (const FrontDesc& F : plan_->fronts)
    order.insert(order.end(), plan_->front_vars.begin() + F.vars,
                 plan_->front_vars.begin() + F.vars + F.s);
  return order;
}

std::unique_ptr<DarcyWorkspace> DarcySolver::acquire() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  return make_workspace(plan_->view);
}

// Workspaces beyond one per hardware thread (left by a call with more
// threads) are freed rather than kept: a default call never needs more.
void DarcySolver::release(std::unique_ptr<DarcyWorkspace> ws) const {
  const auto keep = static_cast<std::size_t>(resolve_threads(0));
  std::lock_guard<std::mutex> lock(pool_mutex_);
  if (pool_.size() < keep) pool_.push_back(std::move(ws));
}

void DarcySolver::solve(const double* k, std::size_t n, const double* source, double* out,
                        double* lambda, double* relative_residual, int threads,
                        double* bordered_residual) const {
  solve_impl(k, n, source, out, false, lambda, relative_residual, bordered_residual, threads);
}

void DarcySolver::solve(const double* k, std::size_t n, const double* source, float* out,
                        double* lambda, double* relative_residual, int threads,
                        double* bordered_residual) const {
  solve_impl(k, n, source, out, true, lambda, relative_residual, bordered_residual, threads);
}

void DarcySolver::solve_impl(const double* k, std::size_t n, const double* source, void* out,
                             bool f32, double* lambda, double* relative_residual,
                             double* bordered_residual, int threads) const {
  if (n == 0) return;
  const std::size_t nn = static_cast<std::size_t>(grid_) * grid_;
  const std::vector<double> rhs = darcy_rhs(source, grid_, scheme_);
  for (double v : rhs)
    if (!std::isfinite(v)) fail("source must be finite");
  const std::size_t groups = (n + kLanes - 1) / kLanes;
  const int nworkers = workers_for(groups, threads);

  // Per-worker workspaces from the pool, returned even if a worker throws.
  struct Lease {
    const DarcySolver& solver;
    std::vector<std::unique_ptr<DarcyWorkspace>> ws;
    ~Lease() {
      for (auto& w : ws)
        if (w) solver.release(std::move(w));
    }
  } lease{*this, {}};
  for (int w = 0; w < nworkers; ++w) lease.ws.push_back(acquire());

  const std::size_t out_stride = 3 * nn * (f32 ? sizeof(float) : sizeof(double));
  parallel_for(
      groups, nworkers,
      [&](std::size_t g, int worker) {
        detail::GroupIO io{};
        const std::size_t first = g * kLanes;
        for (int l = 0; l < kLanes; ++l) {
          const std::size_t s = std::min(first + l, n - 1);
          io.k[l] = k + s * nn;
          io.out[l] = first + l < n ? static_cast<char*>(out) + s * out_stride : nullptr;
        }
        check_permeability(io.k[0], std::min<std::size_t>(kLanes, n - first) * nn);
        io.out_f32 = f32 ? 1 : 0;
        io.rhs = rhs.data();
        io.weights = weights_.data();
        kernels_->run_group(plan_->view, lease.ws[worker]->view, io, nullptr, nullptr);
        for (int l = 0; l < kLanes && first + l < n; ++l) {
          const std::size_t s = first + l;
          double lam = io.lambda[l], res = io.relative_residual[l];
          double bres = io.bordered_residual[l];
          if (!(io.backward_error[l] <= check_tolerance_) || !(bres <= residual_tolerance_)) {
            fallback(io.k[l], rhs.data(), io.out[l], f32, &lam, &res, &bres);
          }
          if (lambda) lambda[s] = lam;
          if (relative_residual) relative_residual[s] = res;
          if (bordered_residual) bordered_residual[s] = bres;
        }
      },
      1);
}

// Partial-pivoting path for a sample whose fast solve failed a check: the
// same bordered-system algebra on Eigen's SparseLU of M = A + c e_q e_q^T,
// pinned at the node q of largest |diagonal| (any q and c != 0 give the same
// p and lambda in exact arithmetic; a large c keeps M well away from
// singular where one node's K is tiny). Never throws for a hard sample: it
// writes the best answer found and its bordered residual, or NaN output and
// an infinite residual when the system has non-finite coefficients or cannot
// be factorised (the caller decides what to do with inaccurate samples).
void DarcySolver::fallback(const double* k, const double* rhs, void* out, bool f32,
                           double* lambda, double* relative_residual,
                           double* bordered_residual) const {
  const int N = grid_, n = N * N;
  const Eigen::SparseMatrix<double, Eigen::RowMajor> A = darcy_matrix(k, N, scheme_);
  fallbacks_.fetch_add(1);
  auto write = [&](int i, double p, double ux, double uy) {
    if (!out) return;
    if (f32) {
      float* o = static_cast<float*>(out);
      o[i] = static_cast<float>(p);
      o[n + i] = static_cast<float>(ux);
      o[2 * n + i] = static_cast<float>(uy);
    } else {
      double* o = static_cast<double*>(out);
      o[i] = p;
      o[n + i] = ux;
      o[2 * n + i] = uy;
    }
  };
  auto give_up = [&]() {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (int i = 0; i < n; ++i) write(i, nan, nan, nan);
    *lambda = nan;
    *relative_residual = std::numeric_limits<double>::infinity();
    *bordered_residual = std::numeric_limits<double>::infinity();
  };
  int q = 0;
  double dmax = -1.0;
  for (int i = 0; i < A.outerSize(); ++i) {
    for (Eigen::SparseMatrix<double, Eigen::RowMajor>::InnerIterator it(A, i); it; ++it) {
      if (!std::isfinite(it.value())) {
        give_up();
        return;
      }
      if (it.col() == i && std::abs(it.value()) > dmax) {
        dmax = std::abs(it.value());
        q = i;
      }
    }
  }
  Eigen::SparseMatrix<double> M = A;
  M.coeffRef(q, q) += A.coeff(q, q);
  M.makeCompressed();
  Eigen::SparseLU<Eigen::SparseMatrix<double>, Eigen::COLAMDOrdering<int>> lu(M);
  if (lu.info() != Eigen::Success) {
    give_up();
    return;
  }
  const Eigen::Map<const Eigen::VectorXd> b(rhs, n), w(weights_.data(), n);
  const Eigen::VectorXd a = lu.solve(b), d = lu.solve(w);
  const double lam = a[q] / d[q];
  Eigen::VectorXd p = a - lam * d;
  p.array() -= w.dot(p) / w.sum();
  const Eigen::VectorXd r = b - A * p;
  std::vector<double> ux(n), uy(n);
  kernels_->velocities(k, p.data(), N, ux.data(), uy.data());
  for (int i = 0; i < n; ++i) write(i, p[i], ux[i], uy[i]);
  *lambda = lam;
  const double bn = b.norm();
  const double rn = r.norm(), rbn = (r - lam * w).norm();
  *relative_residual = bn > 0 ? rn / bn : rn;
  *bordered_residual = bn > 0 ? rbn / bn : rbn;
}

DarcyStageTimes DarcySolver::profile(const double* k, std::size_t n, const double* source,
                                     int repeats) const {
  if (n == 0) fail("profile needs at least one sample");
  if (repeats < 1) fail("repeats must be >= 1");
  const std::size_t nn = static_cast<std::size_t>(grid_) * grid_;
  check_permeability(k, n * nn);
  const std::vector<double> rhs = darcy_rhs(source, grid_, scheme_);
  std::vector<double> out(kLanes * 3 * nn);
  auto ws = acquire();
  detail::GroupIO io{};
  for (int l = 0; l < kLanes; ++l) {
    io.k[l] = k + (static_cast<std::size_t>(l) % n) * nn;
    io.out[l] = out.data() + l * 3 * nn;
  }
  io.rhs = rhs.data();
  io.weights = weights_.data();
  std::vector<std::array<double, detail::kStages + 1>> runs(repeats);
  for (int r = 0; r < repeats; ++r) {
    double st[detail::kStages] = {};
    const double t0 = now_seconds();
    kernels_->run_group(plan_->view, ws->view, io, st, &now_seconds);
    const double total = now_seconds() - t0;
    for (int s = 0; s < detail::kStages; ++s) runs[r][s] = st[s];
    runs[r][detail::kStages] = total;
  }
  release(std::move(ws));
  auto median = [&](int s) {
    std::vector<double> v(repeats);
    for (int r = 0; r < repeats; ++r) v[r] = runs[r][s];
    std::nth_element(v.begin(), v.begin() + repeats / 2, v.end());
    return v[repeats / 2] / kLanes;
  };
  DarcyStageTimes t;
  t.assembly = median(detail::kStageAssembly);
  t.factorization = median(detail::kStageFactor);
  t.solve = median(detail::kStageSolve);
  t.velocity = median(detail::kStageVelocity);
  t.check = median(detail::kStageCheck);
  t.total = median(detail::kStages);
  return t;
}

}  // namespace darcyvae
