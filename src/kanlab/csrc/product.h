// Part of kanlab's compiled kernel: the local product from a padded weight, and its operators.
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

namespace {

// out (batch, n_out) from the padded weight (see padded_weight), given in the tiled layout where
// tiled says so (the fused layer's, tiled_layout).
at::Tensor product_from_padded(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
                               const std::optional<at::Tensor>& table, int64_t k,
                               const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
                               const std::optional<at::Tensor>& step, const at::Tensor& padded,
                               const LocalShape& shape, bool tiled = false) {
  const bool with_base = base.has_value();
  const bool blocks = tiled || (takes_blocks(shape) && (with_base || !at::isnan(x).any().item<bool>()));
  const at::Tensor residual = tiled ? tiled_residual(padded, shape) : padded.select(1, shape.padded_rows - 1);
  at::Tensor result = blocks && with_base ? at::mm(*base, residual) : at::zeros({shape.batch, shape.n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_product", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = with_base ? base->const_data_ptr<T>() : nullptr;
    const T* W = padded.const_data_ptr<T>();
    T* out = result.data_ptr<T>();
    const int64_t n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        if (blocks) {
          blocked_product<T, K>(intervals_, knots, X, W, shape, out, tiled);
          return;
        }
        for_each_chunk<T, K, K + 1>(
            intervals_, knots, X, shape.batch, false,
            [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, first, 1, padded_rows, count);
              product_chunk<T, K, false>(rows, X + b * n_in + first, R ? R + b * n_in + first : nullptr, 1, W, n_out,
                                         count, out + b * n_out);
            },
            [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
              Rows<T, K> rows;
              rows.fill(chunk, i, 0, padded_rows, count);
              product_chunk<T, K, true>(rows, xs, R ? R + b * n_in + i : nullptr, n_in, W, n_out, count,
                                        out + b * n_out);
            });
      }
    });
  });
  return result;
}

// Gradients of the product's output from grad (batch, n_out) and the padded weight: (grad_x,
// grad_base, parts), each computed only where asked (an empty tensor otherwise); parts are the
// padded weight gradient's per-thread copies, (copies, in, padded_rows, n_out), to be summed.
// derivative_table / cardinal_derivative give the bases' x-derivatives, as in
// basis_features_backward. The padded weight in the tiled layout where tiled says so; its
// gradient's parts are row-major in any case.
std::tuple<at::Tensor, at::Tensor, at::Tensor> product_backward_from_padded(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
    const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& derivative_table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& cardinal_derivative,
    const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step, const at::Tensor& padded,
    const LocalShape& shape, bool need_x, bool need_base, bool need_weight, bool tiled = false) {
  const bool with_base = base.has_value();
  const int64_t batch = shape.batch, n_in = shape.n_in, n_out = shape.n_out, padded_rows = shape.padded_rows;
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == batch && grad.size(1) == n_out, "grad must be (batch, out)");
  const at::Tensor g = grad.contiguous();
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  // a narrow layer with few outputs takes every gradient in one pass by columns (column_backward)
  const bool by_columns = n_in <= kNarrow && n_out < kWideOut;
  at::Tensor grad_base = by_columns && need_base && with_base ? at::empty_like(x) : at::empty({0}, x.options());
  const bool blocks = tiled || (takes_blocks(shape) && (with_base || !at::isnan(x).any().item<bool>()));
  const int64_t n_threads = need_weight ? at::get_num_threads() : 0;
  const int64_t spread = n_out >= kWideOut ? 1 : kSpread, copy_size = n_in * padded_rows * n_out;
  // the blocks write one part, each thread zeroing its own inputs' rows (in parallel, while in cache)
  at::Tensor parts = !need_weight ? at::Tensor()
                     : blocks     ? at::empty({1, n_in, padded_rows, n_out}, x.options())
                                  : at::zeros({n_threads * spread, n_in, padded_rows, n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "local_product_backward", [&] {
    using T = scalar_t;
    const T *X = x.const_data_ptr<T>(), *R = with_base ? base->const_data_ptr<T>() : nullptr;
    const T *W = padded.const_data_ptr<T>(), *G = g.const_data_ptr<T>();
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0) {
        if (blocks) {
          const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
          const Intervals<T> slopes =
              need_x ? intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k) : values;
          blocked_backward<T, K>(values, slopes, knots, X, G, W, shape, need_x ? grad_x.data_ptr<T>() : nullptr,
                                 need_weight ? parts.data_ptr<T>() : nullptr, nullptr, tiled);
          return;
        }
        if (by_columns) {
          const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
          const Intervals<T> slopes = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
          T* GX = need_x ? grad_x.data_ptr<T>() : nullptr;
          T* GB = grad_base.numel() > 0 ? grad_base.data_ptr<T>() : nullptr;
          T* P = need_weight ? parts.data_ptr<T>() : nullptr;
          for_each_chunk_with_slopes<T, K>(
              values, slopes, knots, X, batch,
              [](int64_t, int64_t, int64_t, const Chunk<T, K>&, const Chunk<T, K>&) {},  // narrow: columns only
              [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& value_chunk,
                  const Chunk<T, K>& slope_chunk_) {
                Rows<T, K> value_rows, slope_rows;
                value_rows.fill(value_chunk, i, 0, padded_rows, count);
                slope_rows.fill(slope_chunk_, i, 0, padded_rows, count);
                T* own_part = nullptr;
                if (P != nullptr) {
                  const int64_t thread = at::get_thread_num();
                  TORCH_CHECK(thread < n_threads, "more threads than at the start of the backward pass");
                  own_part = P + thread * spread * copy_size;
                }
                const int64_t at = b * n_in + i;
                column_backward<T, K, false>(value_rows, slope_rows, xs, R ? R + at : nullptr, n_in, G + b * n_out,
                                             nullptr, W, n_out, n_in, shape.n_basis, count, own_part,
                                             GX ? GX + at : nullptr, GB ? GB + at : nullptr, n_in, copy_size);
              });
          return;
        }
        if (need_weight) {
          T* P = parts.data_ptr<T>();
          auto own_part = [&]() {
            const int64_t thread = at::get_thread_num();
            TORCH_CHECK(thread < n_threads, "more threads than at the start of the backward pass");
            return P + thread * spread * copy_size;
          };
          const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
          for_each_chunk<T, K, K + 1>(
              values, knots, X, batch, false,
              [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, first, 1, padded_rows, count);
                scatter_chunk<T, K, false>(rows, X + b * n_in + first, R ? R + b * n_in + first : nullptr, 1,
                                           G + b * n_out, n_out, shape.n_basis, count, own_part(), copy_size);
              },
              [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, i, 0, padded_rows, count);
                scatter_chunk<T, K, true>(rows, xs, R ? R + b * n_in + i : nullptr, n_in, G + b * n_out, n_out,
                                          shape.n_basis, count, own_part(), copy_size);
              });
        }
        if (need_x) {
          T* out = grad_x.data_ptr<T>();
          const Intervals<T> slopes = intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k);
          for_each_chunk<T, K, K>(
              slopes, knots, X, batch, true,
              [&](int64_t b, int64_t first, int64_t count, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, first, 1, padded_rows, count);
                slope_chunk<T, K, false>(rows, X + b * n_in + first, G + b * n_out, W, n_out, count,
                                         out + b * n_in + first, 1);
              },
              [&](int64_t b, int64_t i, int64_t count, const T* xs, const Chunk<T, K>& chunk) {
                Rows<T, K> rows;
                rows.fill(chunk, i, 0, padded_rows, count);
                slope_chunk<T, K, true>(rows, xs, G + b * n_out, W, n_out, count, out + b * n_in + i, n_in);
              });
        }
      }
    });
  });
  // grad_base[b, i] = <weight[i, residual row, :], grad[b, :]>: one small matrix product
  if (need_base && with_base && !by_columns)
    grad_base = at::mm(g, (tiled ? tiled_residual(padded, shape) : padded.select(1, padded_rows - 1)).t());
  // the blocks leave the residual row's weight gradient to a matrix product too
  if (blocks && need_weight && with_base) parts.select(0, 0).select(1, padded_rows - 1).add_(at::mm(base->t(), g));
  return {grad_x, grad_base, need_weight ? parts : at::empty({0}, x.options())};
}

}  // namespace

// out (batch, n_out) = the layer's output (without bias or symbolic edges); degrees 1..5.
at::Tensor local_product(const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
                         const std::optional<at::Tensor>& table, int64_t k, const std::optional<at::Tensor>& cardinal,
                         const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step,
                         const at::Tensor& weight) {
  const LocalShape shape = local_shape(x, base, knots, k, weight);
  const at::Tensor padded = padded_weight(weight, shape, k, base.has_value());
  return product_from_padded(x, base, knots, table, k, cardinal, start, step, padded, shape);
}

// Gradients of local_product's output from grad (batch, n_out): (grad_x, grad_base, grad_weight), each
// computed only where asked (an empty tensor otherwise). grad_weight sums per-thread parts.
std::tuple<at::Tensor, at::Tensor, at::Tensor> local_product_backward(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& base, const at::Tensor& knots,
    const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& derivative_table, int64_t k,
    const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& cardinal_derivative,
    const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step, const at::Tensor& weight,
    bool need_x, bool need_base, bool need_weight) {
  const LocalShape shape = local_shape(x, base, knots, k, weight);
  const at::Tensor padded = padded_weight(weight, shape, k, base.has_value());
  auto [grad_x, grad_base, parts] = product_backward_from_padded(
      grad, x, base, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step, padded, shape,
      need_x, need_base, need_weight);
  at::Tensor grad_weight = need_weight ? unpadded_sum(parts, shape, k, base.has_value()) : at::empty({0}, x.options());
  return {grad_x, grad_base, grad_weight};
}
