// CPU kernels of the KAN layer op (kanmodel/spline_op.py): the dense basis built in one
// pass, and the input gradient recomputed from x.
//
// Layout: every (row b, input i) owns one block of `width` columns of the extended basis
// (batch, in * width): columns 0 .. G + k - 1 hold B_0 .. B_{G+k-1}(clamp(x)), of which
// only k + 1 are non-zero, and with a base function column G + k holds base(x)
// (width = G + k + 1; without one, width = G + k). One matmul with the extended weight
// (out, in * width) then gives the spline and the base term together.
//
// Headers: only the ATen pieces used, not <torch/extension.h> (a third of the compile time).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

// Largest spline order handled here (tile arrays); spline_op.py uses torch beyond it.
constexpr int64_t kMaxOrder = 15;
// Elements of the extended basis per thread before a batch is split (torch's own grain
// for elementwise ops): a parallel region costs 0.1-0.5 ms when the other core is busy.
constexpr int64_t kGrainElements = 32768;
// (row, input) elements evaluated together: every step of the triangle is one loop over
// the tile, which the compiler vectorises (one element at a time is latency-bound).
constexpr int64_t kTile = 64;

enum Base : int64_t { kZero = 0, kIdentity = 1, kSilu = 2 };

// One input's knots t (G + 2k + 1 of them): its domain [t_k, t_{G+k}] and, for uniform
// knots, the unit-spaced knot coordinate s = offset + scale * x (basis.uniform_coordinates).
template <typename T>
struct KnotRow {
  const T* t;
  T low, high, scale, offset;

  KnotRow(const T* row, int64_t k, int64_t grid)
      : t(row), low(row[k]), high(row[grid + k]) {
    scale = static_cast<T>(grid) / (high - low);
    offset = static_cast<T>(k) - low * scale;
  }
};

// One tile of consecutive (row, input) elements: where each lies (knot interval m with
// k <= m < G + k, the right end in the last one), the coordinate u the triangle works in
// (uniform knots: the fractional part of s, else clamp(x)), d u / dx (zero outside the
// domain) and the k + 1 non-zero basis values B_{m-k+r}, r = 0..k, with their d / du.
template <typename T>
struct Tile {
  int64_t count;
  const KnotRow<T>* row[kTile];
  T x[kTile], u[kTile], chain[kTile];
  int32_t m[kTile];
  T values[kMaxOrder + 1][kTile], slopes[kMaxOrder + 1][kTile];
  // Knot distances t_{m+q} - u and u - t_{m+1-q} (non-uniform knots only).
  T right[kMaxOrder + 1][kTile], left[kMaxOrder + 1][kTile];
  T saved[kTile], previous[kTile];
};

// Fills tile.x, tile.row for flat elements [start, start + count) of x (batch, in);
// input: the input index of element start, advanced past the tile.
template <typename T>
inline void load_tile(Tile<T>& tile, const T* xs, const std::vector<KnotRow<T>>& rows,
                      int64_t start, int64_t count, int64_t& input) {
  const int64_t n_in = static_cast<int64_t>(rows.size());
  tile.count = count;
  for (int64_t e = 0; e < count; ++e) {
    tile.x[e] = xs[start + e];
    tile.row[e] = &rows[input];
    if (++input == n_in) input = 0;
  }
}

template <typename T, bool Uniform>
void locate(Tile<T>& tile, int64_t k, int64_t grid) {
  const int64_t n = tile.count;
  if (Uniform) {
    const T lo = static_cast<T>(k), hi = static_cast<T>(grid + k);
    const int32_t first = static_cast<int32_t>(k), last = static_cast<int32_t>(grid + k - 1);
    T offset[kTile], scale[kTile], low[kTile], high[kTile];
    for (int64_t e = 0; e < n; ++e) {
      offset[e] = tile.row[e]->offset;
      scale[e] = tile.row[e]->scale;
      low[e] = tile.row[e]->low;
      high[e] = tile.row[e]->high;
    }
    for (int64_t e = 0; e < n; ++e) {
      // Inside is decided on x itself: s may round past k or G + k at the domain's ends.
      tile.chain[e] = (tile.x[e] >= low[e] && tile.x[e] <= high[e]) ? scale[e] : T(0);
      T s = offset[e] + tile.x[e] * scale[e];
      s = s < lo ? lo : (s > hi ? hi : s);
      // s >= k > 0, so truncation is the floor; the outer bound keeps a NaN in range.
      int32_t m = static_cast<int32_t>(s);
      m = m > last ? last : m;
      m = m < first ? first : m;
      tile.m[e] = m;
      tile.u[e] = s - static_cast<T>(m);
    }
    return;
  }
  for (int64_t e = 0; e < n; ++e) {
    const KnotRow<T>& row = *tile.row[e];
    const T x = tile.x[e];
    tile.chain[e] = (x >= row.low && x <= row.high) ? T(1) : T(0);
    const T u = x < row.low ? row.low : (x > row.high ? row.high : x);
    // Largest m in [k, G + k - 1] with t_m <= u.
    int64_t lo = k, hi = grid + k - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (row.t[mid] <= u) lo = mid; else hi = mid - 1;
    }
    tile.m[e] = static_cast<int32_t>(lo);
    tile.u[e] = u;
  }
}

// Step r of degree j of the triangle below over n elements. Separate arrays (restrict),
// and a separate copy for the step with slopes (a store under a condition), so that the
// loop vectorises.
template <typename T, bool Uniform, bool WithSlope>
inline void triangle_step(int64_t n, T* __restrict value, T* __restrict slope,
                          T* __restrict saved, T* __restrict previous, const T* __restrict u,
                          const T* __restrict right, const T* __restrict left, T right_shift,
                          T left_shift, T inverse_degree, T order) {
  for (int64_t e = 0; e < n; ++e) {
    const T to_right = Uniform ? right_shift - u[e] : right[e];
    const T to_left = Uniform ? u[e] + left_shift : left[e];
    const T temp = Uniform ? value[e] * inverse_degree : value[e] / (to_right + to_left);
    value[e] = saved[e] + to_right * temp;
    saved[e] = to_left * temp;
    if (WithSlope) {
      slope[e] = order * (previous[e] - temp);
      previous[e] = temp;
    }
  }
}

// Cox-de Boor triangle (NURBS Book A2.2), each step over the whole tile. With Slopes,
// d B / du from the degree k - 1 values that the last step divides by the support widths
// anyway: B'_{s,k} = k (B_{s,k-1} / (t_{s+k} - t_s) - B_{s+1,k-1} / (t_{s+k+1} - t_{s+1})).
// On unit-spaced knots t_{m+q} - u = q - u, u - t_{m+1-q} = u + q - 1 and every support
// width of degree j is j.
template <typename T, bool Uniform, bool Slopes>
void evaluate(Tile<T>& tile, int64_t k) {
  const int64_t n = tile.count;
  const T* u = tile.u;
  T* saved = tile.saved;
  T* previous = tile.previous;
  for (int64_t e = 0; e < n; ++e) tile.values[0][e] = T(1);
  for (int64_t j = 1; j <= k; ++j) {
    if (!Uniform) {
      for (int64_t e = 0; e < n; ++e) {
        const T* t = tile.row[e]->t + tile.m[e];
        tile.left[j][e] = u[e] - t[1 - j];
        tile.right[j][e] = t[j] - u[e];
      }
    }
    const bool last_step = Slopes && j == k;
    const T inverse_degree = T(1) / static_cast<T>(j);
    for (int64_t e = 0; e < n; ++e) saved[e] = previous[e] = T(0);
    for (int64_t r = 0; r < j; ++r) {
      T* value = tile.values[r];
      T* slope = tile.slopes[r];
      const T* right = tile.right[r + 1];
      const T* left = tile.left[j - r];
      const T right_shift = static_cast<T>(r + 1), left_shift = static_cast<T>(j - r - 1);
      if (last_step) {
        triangle_step<T, Uniform, true>(n, value, slope, saved, previous, u, right, left, right_shift,
                                        left_shift, inverse_degree, static_cast<T>(k));
      } else {
        triangle_step<T, Uniform, false>(n, value, slope, saved, previous, u, right, left, right_shift,
                                         left_shift, inverse_degree, static_cast<T>(k));
      }
    }
    for (int64_t e = 0; e < n; ++e) tile.values[j][e] = saved[e];
    if (last_step) {
      for (int64_t e = 0; e < n; ++e) tile.slopes[k][e] = static_cast<T>(k) * previous[e];
    }
  }
}

template <typename T>
std::vector<KnotRow<T>> knot_rows(const at::Tensor& knots, int64_t k) {
  const T* t = knots.const_data_ptr<T>();
  const int64_t n_in = knots.size(0), n_knots = knots.size(1);
  std::vector<KnotRow<T>> rows;
  rows.reserve(n_in);
  for (int64_t i = 0; i < n_in; ++i) rows.emplace_back(t + i * n_knots, k, n_knots - 2 * k - 1);
  return rows;
}

void check_inputs(const at::Tensor& x, const at::Tensor& knots, int64_t k, int64_t base,
                  const std::optional<at::Tensor>& gate) {
  TORCH_CHECK(x.device().is_cpu() && knots.device().is_cpu(), "spline kernels: CPU tensors only");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "spline kernels: x must be contiguous (batch, in)");
  TORCH_CHECK(knots.dim() == 2 && knots.is_contiguous() && knots.size(0) == x.size(1),
              "spline kernels: knots must be contiguous (in, G + 2k + 1)");
  TORCH_CHECK(knots.scalar_type() == x.scalar_type(), "spline kernels: knots and x differ in dtype");
  TORCH_CHECK(k >= 1 && k <= kMaxOrder, "spline kernels: order k must be in [1, ", kMaxOrder, "]");
  TORCH_CHECK(knots.size(1) >= 2 * k + 2, "spline kernels: fewer than 2k + 2 knots");
  TORCH_CHECK(base == kZero || base == kIdentity || base == kSilu, "spline kernels: unknown base");
  TORCH_CHECK(base != kSilu || (gate.has_value() && gate->sizes() == x.sizes() &&
                                gate->is_contiguous() && gate->scalar_type() == x.scalar_type()),
              "spline kernels: silu needs sigmoid(x) as gate, contiguous, x's shape and dtype");
}

int64_t grain_rows(int64_t row_elements) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_elements));
}

// Runs body(tile, start) over the tiles of rows [0, batch) of x, rows split across threads.
template <typename T, bool Uniform, bool Slopes, typename Body>
void for_each_tile(const at::Tensor& x, const std::vector<KnotRow<T>>& rows, int64_t k,
                   int64_t grid, int64_t width, const Body& body) {
  const int64_t n_in = x.size(1);
  const T* xs = x.const_data_ptr<T>();
  at::parallel_for(0, x.size(0), grain_rows(n_in * width), [&](int64_t begin, int64_t end) {
    auto tile = std::make_unique<Tile<T>>();
    int64_t input = 0;                                // chunks start at a row
    for (int64_t start = begin * n_in; start < end * n_in; start += kTile) {
      load_tile(*tile, xs, rows, start, std::min(kTile, end * n_in - start), input);
      locate<T, Uniform>(*tile, k, grid);
      evaluate<T, Uniform, Slopes>(*tile, k);
      body(*tile, start);
    }
  });
}

template <typename Body>
void dispatch_uniform(bool uniform, const Body& body) {
  if (uniform) body(std::true_type{});
  else body(std::false_type{});
}

// x (batch, in), knots (in, G + 2k + 1) -> extended basis (batch, in * width);
// gate = sigmoid(x) for the silu base.
at::Tensor extended_basis(const at::Tensor& x, const at::Tensor& knots, int64_t k, bool uniform,
                          int64_t base, const std::optional<at::Tensor>& gate) {
  check_inputs(x, knots, k, base, gate);
  const int64_t batch = x.size(0), n_in = x.size(1);
  const int64_t grid = knots.size(1) - 2 * k - 1, n_basis = grid + k;
  const int64_t width = n_basis + (base == kZero ? 0 : 1);
  at::Tensor out = at::empty({batch, n_in * width}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_extended_basis", [&] {
    const auto rows = knot_rows<scalar_t>(knots, k);
    scalar_t* dense = out.mutable_data_ptr<scalar_t>();
    const scalar_t* gates = base == kSilu ? gate->const_data_ptr<scalar_t>() : nullptr;
    dispatch_uniform(uniform, [&](auto uniform_constant) {
      constexpr bool U = decltype(uniform_constant)::value;
      for_each_tile<scalar_t, U, false>(x, rows, k, grid, width, [&](Tile<scalar_t>& tile, int64_t start) {
        // Zero the tile's blocks at once (they stay in cache), then write the non-zeros.
        scalar_t* blocks = dense + start * width;
        std::memset(blocks, 0, sizeof(scalar_t) * tile.count * width);
        for (int64_t e = 0; e < tile.count; ++e) {
          scalar_t* block = blocks + e * width + (tile.m[e] - k);
          for (int64_t r = 0; r <= k; ++r) block[r] = tile.values[r][e];
        }
        if (base == kIdentity) {
          for (int64_t e = 0; e < tile.count; ++e) blocks[e * width + n_basis] = tile.x[e];
        } else if (base == kSilu) {
          for (int64_t e = 0; e < tile.count; ++e)
            blocks[e * width + n_basis] = tile.x[e] * gates[start + e];
        }
      });
    });
  });
  return out;
}

// grad_ext (batch, in * width) = grad_out @ extended weight -> d loss / dx (batch, in):
// the spline part (zero outside [t_k, t_{G+k}], the inside derivative on its ends) plus
// the base part (silu'(x) = s (1 + x (1 - s)) from the gate s = sigmoid(x)).
at::Tensor input_grad(const at::Tensor& x, const at::Tensor& knots, int64_t k, bool uniform,
                      int64_t base, const std::optional<at::Tensor>& gate,
                      const at::Tensor& grad_ext) {
  check_inputs(x, knots, k, base, gate);
  const int64_t batch = x.size(0), n_in = x.size(1);
  const int64_t grid = knots.size(1) - 2 * k - 1, n_basis = grid + k;
  const int64_t width = n_basis + (base == kZero ? 0 : 1);
  TORCH_CHECK(grad_ext.is_contiguous() && grad_ext.dim() == 2 && grad_ext.size(0) == batch &&
                  grad_ext.size(1) == n_in * width && grad_ext.scalar_type() == x.scalar_type(),
              "spline kernels: grad_ext must be contiguous (batch, in * width) of x's dtype");
  at::Tensor out = at::empty({batch, n_in}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_input_grad", [&] {
    const auto rows = knot_rows<scalar_t>(knots, k);
    const scalar_t* grads = grad_ext.const_data_ptr<scalar_t>();
    const scalar_t* gates = base == kSilu ? gate->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* result = out.mutable_data_ptr<scalar_t>();
    dispatch_uniform(uniform, [&](auto uniform_constant) {
      constexpr bool U = decltype(uniform_constant)::value;
      for_each_tile<scalar_t, U, true>(x, rows, k, grid, width, [&](Tile<scalar_t>& tile, int64_t start) {
        const scalar_t* blocks = grads + start * width;
        scalar_t* sums = result + start;
        for (int64_t e = 0; e < tile.count; ++e) {
          const scalar_t* picked = blocks + e * width + (tile.m[e] - k);
          scalar_t sum = 0;
          for (int64_t r = 0; r <= k; ++r) sum += tile.slopes[r][e] * picked[r];
          sums[e] = sum * tile.chain[e];
        }
        if (base == kIdentity) {
          for (int64_t e = 0; e < tile.count; ++e) sums[e] += blocks[e * width + n_basis];
        } else if (base == kSilu) {
          for (int64_t e = 0; e < tile.count; ++e) {
            const scalar_t s = gates[start + e];
            sums[e] += blocks[e * width + n_basis] * s * (scalar_t(1) + tile.x[e] * (scalar_t(1) - s));
          }
        }
      });
    });
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "CPU kernels of kanmodel.spline_op (extended basis, input gradient)";
  module.attr("MAX_ORDER") = kMaxOrder;
  module.def("extended_basis", &extended_basis,
             "x (batch, in), knots (in, G + 2k + 1), k, uniform, base (0 zero, 1 identity, 2 silu),"
             " gate (sigmoid(x) for silu, else None) -> (batch, in * width)");
  module.def("input_grad", &input_grad,
             "x, knots, k, uniform, base, gate, grad_ext (batch, in * width) -> (batch, in)");
}
