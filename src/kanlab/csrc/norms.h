// Part of kanlab's compiled kernel: the fused layer with the regulariser's edge norms (kan_layer_norms).
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

// ---- The fused layer with the regulariser's edge norms: norms[o, i] = mean_b |phi_oi(x[b, i])|,
// each edge's whole value (spline and residual, as the torch path's edge_mean_abs of the
// features), from the same local values, so a regularised step needs no feature matrix either.
// The backward folds the norms' gradient into each entry's output gradient,
// g[b, o] + grad_norms[o, i] * sign(phi_oi(x[b, i])) / batch, recomputing phi, and goes on as the
// plain backward with it: the weight rows, the residual and (with the bases' derivatives) x.

namespace {

// phi of entry c (input i) for every output into phi[o]: its residual row and K + 1 basis rows;
// without a residual, NaN for a NaN input (as the features).
template <typename T, int K>
inline void edge_values(const Rows<T, K>& rows, int64_t c, T x, const T* base, const T* W, int64_t n_out, T* phi) {
  const T* residual = W + (rows.base_first + c * rows.base_step) * n_out;
  const T b = base != nullptr ? *base : T(0);
  const T fill = base == nullptr && std::isnan(x) ? x : T(0);
#pragma omp simd
  for (int64_t o = 0; o < n_out; ++o) phi[o] = base != nullptr ? b * residual[o] : fill;
#pragma GCC unroll 8
  for (int r = 0; r <= K; ++r) axpy(phi, rows.v[r][c], W + (rows.row[c] + r) * n_out, n_out);
}

// Forward: entry c's phi into the output row and |phi| into this thread's norm sums (out, in).
// A column of samples with few outputs goes output by output, vectorized over its entries.
template <typename T, int K, bool kColumn>
inline void norm_product_chunk(const Rows<T, K>& rows, const T* xs, const T* base, int64_t base_stride, const T* W,
                               int64_t n_out, int64_t n_in, int64_t first_input, int64_t count, T* out, T* norms,
                               T* phi) {
  if (kColumn && n_out < kWideOut) {
    const T* residual = W + rows.base_first * n_out;
    for (int64_t o = 0; o < n_out; ++o) {
      T norm = T(0);
#pragma omp simd reduction(+ : norm)
      for (int64_t c = 0; c < count; ++c) {
        const T value = column_edge_value<T, K>(rows, c, xs[c], base, base_stride, residual, W, n_out, o);
        out[c * n_out + o] += value;
        norm += std::abs(value);
      }
      norms[o * n_in + first_input] += norm;
    }
    return;
  }
  for (int64_t c = 0; c < count; ++c) {
    const int64_t i = kColumn ? first_input : first_input + c;
    edge_values<T, K>(rows, c, xs[c], base != nullptr ? base + c * base_stride : nullptr, W, n_out, phi);
    T* target = kColumn ? out + c * n_out : out;
    for (int64_t o = 0; o < n_out; ++o) {
      target[o] += phi[o];
      norms[o * n_in + i] += std::abs(phi[o]);
    }
  }
}

// Backward: entry c's output gradient with the norms' part (GN: grad_norms / batch, (out, in)),
// then its weight rows' gradient (into this thread's grad_w), its residual's and its x-gradient.
template <typename T, int K, bool kColumn>
inline void norm_backward_chunk(const Rows<T, K>& values, const Rows<T, K>& slopes, const T* xs, const T* base,
                                int64_t base_stride, const T* G, const T* GN, const T* W, int64_t n_out, int64_t n_in,
                                int64_t first_input, int64_t count, T* grad_w, T* grad_x, T* grad_base,
                                int64_t result_stride, T* phi, int64_t copy_size) {
  if (kColumn && n_out < kWideOut) {
    column_backward<T, K, true>(values, slopes, xs, base, base_stride, G, GN + first_input, W, n_out, n_in, 0, count,
                                grad_w, grad_x, grad_base, result_stride, copy_size);
    return;
  }
  for (int64_t c = 0; c < count; ++c) {
    const int64_t i = kColumn ? first_input : first_input + c;
    const T* g = kColumn ? G + c * n_out : G;
    edge_values<T, K>(values, c, xs[c], base != nullptr ? base + c * base_stride : nullptr, W, n_out, phi);
    for (int64_t o = 0; o < n_out; ++o) {
      const T sign = T(phi[o] > T(0)) - T(phi[o] < T(0));
      phi[o] = g[o] + GN[o * n_in + i] * sign;  // phi now holds the entry's output gradient
    }
    const int64_t base_row = values.base_first + c * values.base_step;
    if (grad_w != nullptr) {
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) axpy(grad_w + (values.row[c] + r) * n_out, values.v[r][c], phi, n_out);
      if (base != nullptr) axpy(grad_w + base_row * n_out, base[c * base_stride], phi, n_out);
    }
    if (grad_x != nullptr) {
      T sum = T(0);
#pragma GCC unroll 8
      for (int r = 0; r <= K; ++r) sum += slopes.v[r][c] * dot(W + (slopes.row[c] + r) * n_out, phi, n_out);
      grad_x[c * result_stride] = std::isnan(xs[c]) ? xs[c] : sum;
    }
    if (grad_base != nullptr) grad_base[c * result_stride] = dot(W + base_row * n_out, phi, n_out);
  }
}

}  // namespace

// kan_layer's output and the edge norms (out, in), mean_b |phi_oi(x[b, i])|, and the padded weight
// (as kan_layer); degrees 1..5.
std::tuple<at::Tensor, at::Tensor, at::Tensor> kan_layer_norms(
    const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
    const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
    const std::optional<at::Tensor>& scale_base, const at::Tensor& mask) {
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask);
  const LocalShape& shape = layer.shape;
  const at::Tensor& padded = layer.padded;
  const std::optional<at::Tensor>& base = layer.base;
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
  const int64_t n_threads = at::get_num_threads();
  at::Tensor result = at::zeros({batch, n_out}, x.options());
  at::Tensor norm_parts = at::zeros({n_threads, n_out, n_in}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_layer_norms", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = base.has_value() ? base->const_data_ptr<T>() : nullptr;
    const T* W = padded.const_data_ptr<T>();
    T *out = result.data_ptr<T>(), *parts = norm_parts.data_ptr<T>();
    auto own_part = [&]() {
      const int64_t thread = at::get_thread_num();
      TORCH_CHECK(thread < n_threads, "more threads than at the start of the pass");
      return parts + thread * n_out * n_in;
    };
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        for_each_chunk<T, K, K + 1>(
            intervals_, knots, X, batch, false,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, first, 1, padded_rows, count);
              std::vector<T> phi(n_out);
              norm_product_chunk<T, K, false>(rows, X + b * n_in + first, R ? R + b * n_in + first : nullptr, 1, W,
                                              n_out, n_in, first, count, out + b * n_out, own_part(), phi.data());
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, i, 0, padded_rows, count);
              std::vector<T> phi(n_out);
              norm_product_chunk<T, K, true>(rows, xs, R ? R + b * n_in + i : nullptr, n_in, W, n_out, n_in, i, count,
                                             out + b * n_out, own_part(), phi.data());
            });
      }
    });
  });
  return {result, norm_parts.sum(0).div_(static_cast<double>(batch)), padded};
}

// kan_layer_norms' first-order gradients (grad_x, grad_coef, grad_scale_sp, grad_scale_base) from grad
// (batch, n_out) and grad_norms (out, in), each computed only where asked (an empty tensor otherwise);
// padded as for kan_layer_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kan_layer_norms_backward(
    const at::Tensor& grad, const at::Tensor& grad_norms, const at::Tensor& x, const at::Tensor& knots,
    const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& derivative_table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& cardinal_derivative,
    const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step, const at::Tensor& coef,
    const at::Tensor& scale_sp, const std::optional<at::Tensor>& scale_base, const at::Tensor& mask, bool need_x,
    bool need_coef, bool need_scale_sp, bool need_scale_base, const std::optional<at::Tensor>& padded_weight) {
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask, padded_weight);
  const LocalShape& shape = layer.shape;
  const at::Tensor& padded = layer.padded;
  const std::optional<at::Tensor>& base = layer.base;
  const bool with_base = scale_base.has_value();
  need_scale_base = need_scale_base && with_base;
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == batch && grad.size(1) == n_out, "grad must be (batch, out)");
  TORCH_CHECK(grad_norms.dim() == 2 && grad_norms.size(0) == n_out && grad_norms.size(1) == n_in,
              "grad_norms must be (out, in)");
  const at::Tensor g = grad.contiguous();
  const at::Tensor scaled_norms = grad_norms.div(static_cast<double>(batch)).contiguous();
  const bool need_weight = need_coef || need_scale_sp || need_scale_base;
  const int64_t n_threads = at::get_num_threads(), copy_size = n_in * padded_rows * n_out;
  // few outputs of a narrow layer: kSpread copies per thread (norm_backward_column)
  const int64_t spread = n_in <= kNarrow && n_out < kWideOut ? kSpread : 1;
  at::Tensor parts =
      need_weight ? at::zeros({n_threads * spread, n_in, padded_rows, n_out}, x.options()) : at::Tensor();
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor grad_base = need_x && with_base ? at::empty_like(x) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kan_layer_norms_backward", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = with_base ? base->const_data_ptr<T>() : nullptr;
    const T *W = padded.const_data_ptr<T>(), *G = g.const_data_ptr<T>(), *GN = scaled_norms.const_data_ptr<T>();
    T* P = need_weight ? parts.data_ptr<T>() : nullptr;
    T* GX = need_x ? grad_x.data_ptr<T>() : nullptr;
    T* GB = grad_base.defined() ? grad_base.data_ptr<T>() : nullptr;
    auto own_part = [&]() -> T* {
      if (P == nullptr) return nullptr;
      const int64_t thread = at::get_thread_num();
      TORCH_CHECK(thread < n_threads, "more threads than at the start of the backward pass");
      return P + thread * spread * copy_size;
    };
    const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
    const Intervals<T> slopes = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        for_each_chunk_with_slopes<T, K>(
            values, slopes, knots, X, batch,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& value_chunk, const Chunk<T, K>& slope_chunk_) {
              Rows<T, K> value_rows, slope_rows;
              value_rows.fill(value_chunk, first, 1, padded_rows, count);
              slope_rows.fill(slope_chunk_, first, 1, padded_rows, count);
              std::vector<T> phi(n_out);
              const int64_t at = b * n_in + first;
              norm_backward_chunk<T, K, false>(value_rows, slope_rows, X + at, R ? R + at : nullptr, 1, G + b * n_out,
                                               GN, W, n_out, n_in, first, count, own_part(), GX ? GX + at : nullptr,
                                               GB ? GB + at : nullptr, 1, phi.data(), copy_size);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& value_chunk,
                const Chunk<T, K>& slope_chunk_) {
              Rows<T, K> value_rows, slope_rows;
              value_rows.fill(value_chunk, i, 0, padded_rows, count);
              slope_rows.fill(slope_chunk_, i, 0, padded_rows, count);
              std::vector<T> phi(n_out);
              const int64_t at = b * n_in + i;
              norm_backward_chunk<T, K, true>(value_rows, slope_rows, xs, R ? R + at : nullptr, n_in, G + b * n_out,
                                              GN, W, n_out, n_in, i, count, own_part(), GX ? GX + at : nullptr,
                                              GB ? GB + at : nullptr, n_in, phi.data(), copy_size);
            });
      }
    });
  });
  return layer_backward_result(x, grad_x, grad_base, parts, shape, k, coef, scale_sp, mask, with_base, need_x, need_coef,
                               need_scale_sp, need_scale_base);
}
