// Part of kanlab's compiled kernel: the basis features, their input gradient and the feature weight (operators).
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

// (batch, width * in) features, width = n_basis + 1 with a residual (base given) and n_basis
// without. Without a residual, a NaN input makes all its columns NaN (as the torch path).
at::Tensor basis_features(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
                          const std::optional<at::Tensor>& table, int64_t k, const std::optional<at::Tensor>& cardinal,
                          const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step) {
  check(x, knots, k);
  const bool with_base = base.has_value();
  if (with_base) TORCH_CHECK(base->sizes() == x.sizes() && base->is_contiguous(), "base must be like x");
  const int64_t batch = x.size(0), n_in = x.size(1), n_knots = knots.size(1);
  const int64_t n_basis = n_knots - k - 1, width = n_basis + (with_base ? 1 : 0);
  at::Tensor features = at::empty({batch, width * n_in}, x.options());  // every entry is written below
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "basis_features", [&] {
    using T = scalar_t;
    const T* X = x.const_data_ptr<T>();
    const T* R = with_base ? base->const_data_ptr<T>() : nullptr;
    T* out = features.data_ptr<T>();
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K == 0) {  // one entry at a time, k read at run time
        for_each_entry(batch, n_in, [&](int64_t b, int64_t i) {
          T values[kMaxWidth];
          const T xv = X[b * n_in + i];
          T* column = out + b * width * n_in + i;
          const int64_t span = intervals_(i, xv, k, k + 1, false, values);
          for (int64_t m = 0; m < n_basis; ++m) {
            const int64_t r = m + k - span;
            column[m * n_in] = span >= 0 && r >= 0 && r <= k ? std::max(values[r], T(0)) : T(0);
          }
          if (with_base) {
            column[n_basis * n_in] = R[b * n_in + i];
          } else if (std::isnan(xv)) {
            for (int64_t m = 0; m < n_basis; ++m) column[m * n_in] = xv;
          }
        });
      } else {
        const int64_t row_width = width * n_in;
        for_each_chunk<T, K, K + 1>(
            intervals_, knots, X, batch, false,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              const T* xs = X + b * n_in + first;
              T* row = out + b * row_width + first;
              if (with_base)
                write_chunk<T, K, true, false>(chunk, xs, R + b * n_in + first, count, n_basis, n_in, 0, row);
              else write_chunk<T, K, false, false>(chunk, xs, nullptr, count, n_basis, n_in, 0, row);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              T* column = out + b * row_width + i;
              if (with_base)
                write_chunk<T, K, true, true>(chunk, xs, R + b * n_in + i, count, n_basis, n_in, row_width, column);
              else write_chunk<T, K, false, true>(chunk, xs, nullptr, count, n_basis, n_in, row_width, column);
            });
      }
    });
  });
  return features;
}

// d(loss)/dx (batch, in) from d(loss)/d(features) (batch, width * in), with derivative_table
// the per-interval d/du table (degree k - 1).
at::Tensor basis_features_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& knots,
                                   const std::optional<at::Tensor>& derivative_table, int64_t k, int64_t width,
                                   const std::optional<at::Tensor>& cardinal_derivative,
                                   const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step) {
  check(x, knots, k);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == x.size(1) * width,
              "grad must be (batch, width * in)");
  const at::Tensor g = grad.contiguous();
  const int64_t batch = x.size(0), n_in = x.size(1), n_knots = knots.size(1), n_basis = n_knots - k - 1;
  at::Tensor grad_x = at::empty_like(x);  // every entry is written below
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "basis_features_backward", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *G = g.const_data_ptr<T>();
    T* out = grad_x.data_ptr<T>();
    const Intervals<T> intervals_ = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K == 0) {  // one entry at a time, k read at run time
        for_each_entry(batch, n_in, [&](int64_t b, int64_t i) {
          T values[kMaxWidth];
          const T xv = X[b * n_in + i];
          const T* column = G + b * width * n_in + i;
          const int64_t span = intervals_(i, xv, k - 1, k + 1, true, values);
          T sum = T(0);
          for (int64_t r = 0; span >= 0 && r <= k; ++r) {
            const int64_t m = span - k + r;
            if (m >= 0 && m < n_basis) sum += column[m * n_in] * values[r];
          }
          out[b * n_in + i] = std::isnan(xv) ? xv : sum;
        });
      } else {
        const int64_t row_width = width * n_in;
        for_each_chunk<T, K, K>(
            intervals_, knots, X, batch, true,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              gather_chunk<T, K, false>(chunk, X + b * n_in + first, G + b * row_width + first, count, n_basis, n_in,
                                        0, out + b * n_in + first);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              gather_chunk<T, K, true>(chunk, xs, G + b * row_width + i, count, n_basis, n_in, row_width,
                                       out + b * n_in + i);
            });
      }
    });
  });
  return grad_x;
}

// The layer's (out, width * in) feature weight, slot-major like the features: column m * in + i
// of row o is coef[o, i, m] * spline_scale[o, i] for m < n_basis, and base_scale[o, i] in the
// residual slot m = n_basis (when base_scale is given). One pass instead of four small ops.
at::Tensor feature_weight(const at::Tensor& coef, const at::Tensor& spline_scale,
                          const std::optional<at::Tensor>& base_scale) {
  TORCH_CHECK(coef.dim() == 3 && coef.is_contiguous(), "coef must be a contiguous (out, in, n_basis) tensor");
  const int64_t n_out = coef.size(0), n_in = coef.size(1), n_basis = coef.size(2);
  const bool with_base = base_scale.has_value();
  for (const at::Tensor* t : {&spline_scale, with_base ? &*base_scale : &spline_scale}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == n_out && t->size(1) == n_in && t->is_contiguous(),
                "spline_scale and base_scale must be contiguous (out, in) tensors");
    TORCH_CHECK(t->scalar_type() == coef.scalar_type(), "the scales must have coef's dtype");
  }
  TORCH_CHECK(coef.device().is_cpu(), "the compiled feature weight runs on the CPU");
  const int64_t width = n_basis + (with_base ? 1 : 0);
  at::Tensor weight = at::empty({n_out, width * n_in}, coef.options());  // every entry is written below
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "feature_weight", [&] {
    using T = scalar_t;
    const T* C = coef.const_data_ptr<T>();
    const T* S = spline_scale.const_data_ptr<T>();
    const T* B = with_base ? base_scale->const_data_ptr<T>() : nullptr;
    T* W = weight.data_ptr<T>();
    at::parallel_for(0, n_out, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width * n_in)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* c = C + o * n_in * n_basis;
        const T* s = S + o * n_in;
        T* w = W + o * width * n_in;
        for (int64_t m = 0; m < n_basis; ++m) {
          _Pragma("omp simd")  // (inside the dispatch macro's argument, where #pragma cannot go)
          for (int64_t i = 0; i < n_in; ++i) w[m * n_in + i] = c[i * n_basis + m] * s[i];
        }
        if (with_base) std::copy(B + o * n_in, B + (o + 1) * n_in, w + n_basis * n_in);
      }
    });
  });
  return weight;
}
