// CPU kernels of the KAN layer op (kanmodel/spline_op.py): the dense basis built in one
// pass, the input gradient recomputed from x, and the folded weight and the split of its
// gradient, each one pass instead of several torch ops.
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
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <tuple>
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

// Per-input quantities of the knot table (in, G + 2k + 1), each array repeated past its
// end (entry i is input i mod in, for i < in + kTile), so that the kTile consecutive
// (row, input) elements of a tile starting at input i read entries [i, i + kTile): plain
// loads that vectorise, whatever the number of inputs. low, high: the domain
// [t_k, t_{G+k}]; offset, scale: the unit-spaced knot coordinate s = offset + scale * x
// on uniform knots (basis.uniform_coordinates); knots: each input's row.
template <typename T>
struct InputTable {
  std::vector<T> low, high, offset, scale;
  std::vector<const T*> knots;

  InputTable(const at::Tensor& table, int64_t k) {
    const T* t = table.const_data_ptr<T>();
    const int64_t n_in = table.size(0), n_knots = table.size(1), grid = n_knots - 2 * k - 1;
    for (auto* column : {&low, &high, &offset, &scale}) column->reserve(n_in + kTile);
    knots.reserve(n_in + kTile);
    for (int64_t i = 0; i < n_in + kTile; ++i) {
      const T* row = t + (i % n_in) * n_knots;
      const T scale_i = static_cast<T>(grid) / (row[grid + k] - row[k]);
      low.push_back(row[k]);
      high.push_back(row[grid + k]);
      scale.push_back(scale_i);
      offset.push_back(static_cast<T>(k) - row[k] * scale_i);
      knots.push_back(row);
    }
  }
};

// One tile of consecutive (row, input) elements: where each lies (knot interval m with
// k <= m < G + k, the right end in the last one), the coordinate u the triangle works in
// (uniform knots: the fractional part of s, else clamp(x)), d u / dx (zero outside the
// domain) and the k + 1 non-zero basis values B_{m-k+r}, r = 0..k, with their d / du.
template <typename T>
struct Tile {
  int64_t count, input;           // elements, input of the first one
  const T* x;
  T u[kTile], chain[kTile];
  int32_t m[kTile];
  T values[kMaxOrder + 1][kTile], slopes[kMaxOrder + 1][kTile];
  // Knot distances t_{m+q} - u and u - t_{m+1-q} (non-uniform knots only).
  T right[kMaxOrder + 1][kTile], left[kMaxOrder + 1][kTile];
  T saved[kTile], previous[kTile];
};

// The order as a compile-time constant K > 0 (the default cubic, unrolled), or K = 0
// and the run-time k.
template <int K>
inline int64_t order(int64_t k) { return K > 0 ? K : k; }

template <typename T, bool Uniform>
void locate(Tile<T>& tile, const InputTable<T>& inputs, int64_t k, int64_t grid) {
  const int64_t n = tile.count;
  const T* __restrict x = tile.x;
  const T* __restrict low = inputs.low.data() + tile.input;
  const T* __restrict high = inputs.high.data() + tile.input;
  T* __restrict chain = tile.chain;
  T* __restrict u = tile.u;
  int32_t* __restrict interval = tile.m;
  if (Uniform) {
    const T* __restrict offset = inputs.offset.data() + tile.input;
    const T* __restrict scale = inputs.scale.data() + tile.input;
    const T lo = static_cast<T>(k), hi = static_cast<T>(grid + k);
    const int32_t first = static_cast<int32_t>(k), last = static_cast<int32_t>(grid + k - 1);
    // Branch-free (min / max, one select), so that the loop vectorises.
    for (int64_t e = 0; e < n; ++e) {
      // Inside is decided on x itself: s may round past k or G + k at the domain's ends.
      chain[e] = std::min(std::max(x[e], low[e]), high[e]) == x[e] ? scale[e] : T(0);
      const T v = offset[e] + x[e] * scale[e];
      const T s = std::min(std::max(v, lo), hi);  // a NaN stays NaN here, so u is NaN
      // std::max(lo, NaN) is lo: the cast below never sees a NaN (undefined behaviour).
      // In [k, G + k] > 0, so truncation is the floor.
      const T in_range = std::min(std::max(lo, v), hi);
      const int32_t m = std::max(std::min(static_cast<int32_t>(in_range), last), first);
      interval[e] = m;
      u[e] = s - static_cast<T>(m);
    }
    return;
  }
  const T* const* knots = inputs.knots.data() + tile.input;
  for (int64_t e = 0; e < n; ++e) {
    const T clamped = std::min(std::max(x[e], low[e]), high[e]);
    chain[e] = clamped == x[e] ? T(1) : T(0);
    // Largest m in [k, G + k - 1] with t_m <= clamped.
    const T* t = knots[e];
    int64_t lo = k, hi = grid + k - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (t[mid] <= clamped) lo = mid; else hi = mid - 1;
    }
    interval[e] = static_cast<int32_t>(lo);
    u[e] = clamped;
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
template <typename T, int K, bool Uniform, bool Slopes>
void evaluate(Tile<T>& tile, const InputTable<T>& inputs, int64_t k_) {
  const int64_t n = tile.count, k = order<K>(k_);
  const T* u = tile.u;
  T* saved = tile.saved;
  T* previous = tile.previous;
  for (int64_t e = 0; e < n; ++e) tile.values[0][e] = T(1);
  for (int64_t j = 1; j <= k; ++j) {
    if (!Uniform) {
      for (int64_t e = 0; e < n; ++e) {
        const T* t = inputs.knots[tile.input + e] + tile.m[e];
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
template <typename T, int K, bool Uniform, bool Slopes, typename Body>
void for_each_tile(const at::Tensor& x, const InputTable<T>& inputs, int64_t k, int64_t grid,
                   int64_t width, const Body& body) {
  const int64_t n_in = x.size(1);
  const T* xs = x.const_data_ptr<T>();
  at::parallel_for(0, x.size(0), grain_rows(n_in * width), [&](int64_t begin, int64_t end) {
    auto tile = std::make_unique<Tile<T>>();
    tile->input = 0;                                  // chunks start at a row
    for (int64_t start = begin * n_in; start < end * n_in; start += kTile) {
      tile->count = std::min(kTile, end * n_in - start);
      tile->x = xs + start;
      locate<T, Uniform>(*tile, inputs, k, grid);
      evaluate<T, K, Uniform, Slopes>(*tile, inputs, k);
      body(*tile, start);
      tile->input = (tile->input + tile->count) % n_in;
    }
  });
}

// Calls body(order constant K, uniform constant): K = 3 (the default order) unrolled,
// any other order at run time.
template <typename Body>
void dispatch(int64_t k, bool uniform, const Body& body) {
  auto with_order = [&](auto uniform_constant) {
    if (k == 3) body(std::integral_constant<int, 3>{}, uniform_constant);
    else body(std::integral_constant<int, 0>{}, uniform_constant);
  };
  if (uniform) with_order(std::true_type{});
  else with_order(std::false_type{});
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
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_extended_basis", [&] {
    const InputTable<scalar_t> inputs(knots, k);
    scalar_t* dense = out.mutable_data_ptr<scalar_t>();
    const scalar_t* gates = base == kSilu ? gate->const_data_ptr<scalar_t>() : nullptr;
    dispatch(k, uniform, [&](auto order_constant, auto uniform_constant) {
      constexpr int K = decltype(order_constant)::value;
      constexpr bool U = decltype(uniform_constant)::value;
      const int64_t kk = order<K>(k);
      for_each_tile<scalar_t, K, U, false>(x, inputs, k, grid, width, [&](Tile<scalar_t>& tile, int64_t start) {
        // Zero the tile's blocks at once (they stay in cache), then write the non-zeros.
        scalar_t* blocks = dense + start * width;
        std::memset(blocks, 0, sizeof(scalar_t) * tile.count * width);
        for (int64_t e = 0; e < tile.count; ++e) {
          scalar_t* block = blocks + e * width + (tile.m[e] - kk);
          for (int64_t r = 0; r <= kk; ++r) block[r] = tile.values[r][e];
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

// -> d loss / dx (batch, in): the spline part (zero outside [t_k, t_{G+k}], the inside
// derivative on its ends) plus the base part (silu'(x) = s (1 + x (1 - s)) from the gate
// s = sigmoid(x)), from the gradient of the extended basis, which is either
// - given: grad (batch, in * width) = grad_out @ extended weight, weight_t None; or
// - with weight_t = extended weight^T (in * width, out) and grad = grad_out (batch, out):
//   only the k + 2 columns each element needs, as dot products (for few outputs these
//   cost less than the matmul's whole (batch, in * width) product).
at::Tensor input_grad(const at::Tensor& x, const at::Tensor& knots, int64_t k, bool uniform,
                      int64_t base, const std::optional<at::Tensor>& gate, const at::Tensor& grad,
                      const std::optional<at::Tensor>& weight_t) {
  check_inputs(x, knots, k, base, gate);
  const int64_t batch = x.size(0), n_in = x.size(1);
  const int64_t grid = knots.size(1) - 2 * k - 1, n_basis = grid + k;
  const int64_t width = n_basis + (base == kZero ? 0 : 1);
  const bool direct = weight_t.has_value();
  const int64_t n_out = direct ? weight_t->size(1) : 0;
  TORCH_CHECK(grad.is_contiguous() && grad.dim() == 2 && grad.size(0) == batch &&
                  grad.size(1) == (direct ? n_out : n_in * width) && grad.scalar_type() == x.scalar_type(),
              "spline kernels: grad must be contiguous (batch, out) with weight_t, else (batch, in * width)");
  TORCH_CHECK(!direct || (weight_t->is_contiguous() && weight_t->dim() == 2 &&
                          weight_t->size(0) == n_in * width && weight_t->scalar_type() == x.scalar_type()),
              "spline kernels: weight_t must be contiguous (in * width, out) of x's dtype");
  at::Tensor out = at::empty({batch, n_in}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_input_grad", [&] {
    const InputTable<scalar_t> inputs(knots, k);
    const scalar_t* grads = grad.const_data_ptr<scalar_t>();
    const scalar_t* weights = direct ? weight_t->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gates = base == kSilu ? gate->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* result = out.mutable_data_ptr<scalar_t>();
    dispatch(k, uniform, [&](auto order_constant, auto uniform_constant) {
      constexpr int K = decltype(order_constant)::value;
      constexpr bool U = decltype(uniform_constant)::value;
      const int64_t kk = order<K>(k);
      for_each_tile<scalar_t, K, U, true>(x, inputs, k, grid, width, [&](Tile<scalar_t>& tile, int64_t start) {
        scalar_t* sums = result + start;
        for (int64_t e = 0, b = start / n_in, i = tile.input; e < tile.count; ++e) {
          const int64_t first = i * width + tile.m[e] - kk;   // column of the first non-zero
          scalar_t sum = 0, base_grad = 0;
          if (direct) {
            // sum_r slope_r grad_ext[b, first + r] = sum_o grad_out[b, o] sum_r slope_r W^T[first + r, o]
            const scalar_t* row = grads + b * n_out;
            const scalar_t* columns = weights + first * n_out;
            const scalar_t* base_column = weights + (i * width + n_basis) * n_out;
            for (int64_t o = 0; o < n_out; ++o) {
              scalar_t combined = 0;
              for (int64_t r = 0; r <= kk; ++r) combined += tile.slopes[r][e] * columns[r * n_out + o];
              sum += row[o] * combined;
              if (base != kZero) base_grad += row[o] * base_column[o];
            }
          } else {
            const scalar_t* picked = grads + b * n_in * width + first;
            for (int64_t r = 0; r <= kk; ++r) sum += tile.slopes[r][e] * picked[r];
            if (base != kZero) base_grad = grads[b * n_in * width + i * width + n_basis];
          }
          sum *= tile.chain[e];
          if (base == kIdentity) {
            sum += base_grad;
          } else if (base == kSilu) {
            const scalar_t s = gates[start + e];
            sum += base_grad * s * (scalar_t(1) + tile.x[e] * (scalar_t(1) - s));
          }
          sums[e] = sum;
          if (++i == n_in) {
            i = 0;
            ++b;
          }
        }
      });
    });
  });
  return out;
}

void check_weights(const at::Tensor& coef, const at::Tensor& spline_weight, const at::Tensor& mask) {
  TORCH_CHECK(coef.device().is_cpu() && coef.dim() == 3 && coef.is_contiguous(),
              "spline kernels: coef must be a contiguous CPU tensor (out, in, G + k)");
  for (const at::Tensor* t : {&spline_weight, &mask}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == coef.scalar_type() &&
                    t->dim() == 2 && t->size(0) == coef.size(0) && t->size(1) == coef.size(1),
                "spline kernels: weights and mask must be contiguous (out, in) of coef's dtype");
  }
}

// Elements of the weights per thread: these passes are a few flops per element.
int64_t grain_blocks(int64_t block_elements) {
  return std::max<int64_t>(1, 4 * kGrainElements / std::max<int64_t>(1, block_elements));
}

// -> extended weight (out, in * width): coef * (spline_weight * mask), then with a base
// function base_weight * mask in the last column of every (out, in) block.
at::Tensor extended_weight(const at::Tensor& coef, const at::Tensor& spline_weight,
                           const std::optional<at::Tensor>& base_weight, const at::Tensor& mask) {
  check_weights(coef, spline_weight, mask);
  if (base_weight.has_value()) check_weights(coef, *base_weight, mask);
  const int64_t n_out = coef.size(0), n_in = coef.size(1), n_basis = coef.size(2);
  const bool with_base = base_weight.has_value();
  const int64_t width = n_basis + (with_base ? 1 : 0);
  at::Tensor out = at::empty({n_out, n_in * width}, coef.options());
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "kan_extended_weight", [&] {
    const scalar_t* c = coef.const_data_ptr<scalar_t>();
    const scalar_t* w = spline_weight.const_data_ptr<scalar_t>();
    const scalar_t* b = with_base ? base_weight->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* m = mask.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n_out * n_in, grain_blocks(width), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t scale = w[p] * m[p];
        const scalar_t* from = c + p * n_basis;
        scalar_t* to = o + p * width;
        for (int64_t r = 0; r < n_basis; ++r) to[r] = from[r] * scale;
        if (with_base) to[n_basis] = b[p] * m[p];
      }
    });
  });
  return out;
}

// grad_ext (out, in * width), the gradient of the extended weight -> (d coef
// (out, in, G + k), d spline_weight (out, in), d base_weight (out, in) or None).
std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> weight_grads(
    const at::Tensor& grad_ext, const at::Tensor& coef, const at::Tensor& spline_weight,
    const at::Tensor& mask, bool with_base) {
  check_weights(coef, spline_weight, mask);
  const int64_t n_out = coef.size(0), n_in = coef.size(1), n_basis = coef.size(2);
  const int64_t width = n_basis + (with_base ? 1 : 0);
  TORCH_CHECK(grad_ext.is_contiguous() && grad_ext.dim() == 2 && grad_ext.size(0) == n_out &&
                  grad_ext.size(1) == n_in * width && grad_ext.scalar_type() == coef.scalar_type(),
              "spline kernels: grad_ext must be contiguous (out, in * width) of coef's dtype");
  at::Tensor grad_coef = at::empty_like(coef);
  at::Tensor grad_spline = at::empty_like(spline_weight);
  std::optional<at::Tensor> grad_base;
  if (with_base) grad_base = at::empty_like(spline_weight);
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "kan_weight_grads", [&] {
    const scalar_t* g = grad_ext.const_data_ptr<scalar_t>();
    const scalar_t* c = coef.const_data_ptr<scalar_t>();
    const scalar_t* w = spline_weight.const_data_ptr<scalar_t>();
    const scalar_t* m = mask.const_data_ptr<scalar_t>();
    scalar_t* gc = grad_coef.mutable_data_ptr<scalar_t>();
    scalar_t* gs = grad_spline.mutable_data_ptr<scalar_t>();
    scalar_t* gb = with_base ? grad_base->mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, n_out * n_in, grain_blocks(width), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t* from = g + p * width;
        const scalar_t* coefs = c + p * n_basis;
        const scalar_t scale = w[p] * m[p];
        scalar_t dot = 0;
        for (int64_t r = 0; r < n_basis; ++r) {
          gc[p * n_basis + r] = from[r] * scale;
          dot += from[r] * coefs[r];
        }
        gs[p] = dot * m[p];
        if (with_base) gb[p] = from[n_basis] * m[p];
      }
    });
  });
  return {grad_coef, grad_spline, grad_base};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "CPU kernels of kanmodel.spline_op (extended basis and weight, their gradients)";
  module.attr("MAX_ORDER") = kMaxOrder;
  module.def("extended_basis", &extended_basis,
             "x (batch, in), knots (in, G + 2k + 1), k, uniform, base (0 zero, 1 identity, 2 silu),"
             " gate (sigmoid(x) for silu, else None) -> (batch, in * width)");
  module.def("input_grad", &input_grad,
             "x, knots, k, uniform, base, gate, grad (batch, in * width), None or"
             " grad_out (batch, out), extended weight^T (in * width, out) -> (batch, in)");
  module.def("extended_weight", &extended_weight,
             "coef (out, in, G + k), spline_weight, base_weight or None, mask (out, in)"
             " -> (out, in * width)");
  module.def("weight_grads", &weight_grads,
             "grad_ext (out, in * width), coef, spline_weight, mask, with_base"
             " -> (d coef, d spline_weight, d base_weight or None)");
}
