// Part of kanlab's compiled kernel: the fused layer (kan_layer): the padded weight from the parameters.
// One translation unit: kernel.cpp includes the parts in order (each uses the ones before it).
#pragma once

// ---- The fused layer: kan_layer builds the padded weight straight from the layer's parameters
// and computes the silu residual itself, so a small KAN's training step is one call per layer
// forward and one backward, instead of a dozen small tensor operations and their graph nodes.
// Padded row k + m of input i holds (mask * scale_sp)[o, i] * coef[o, i, m] for output o, the
// last row (mask * scale_base)[o, i], the products in the order of the torch path's. Where the
// layer goes in coarse blocks on AVX2 the rows are kept in the tiled layout (tiled_layout), which
// the forward pass and the backward pass (given the forward's weight or building it again) both
// read; the padded weight a caller gets back is only for kan_layer_backward.

namespace {

// The fused layer's weight and its gradients are rearranged (coef's (out, in, n_basis) to the
// padded (in, rows, out) and back) in blocks of kSpan outputs by kInputs inputs, whose
// parameters lie together in coef and whose padded rows take kSpan values at a time; over
// threads from kLargeLayer coefficients on.
constexpr int64_t kSpan = 16, kInputs = 16;
constexpr int64_t kLargeLayer = 1 << 14;

// body(i0, inputs, o0, outputs, block) for each block, block a (kInputs, n_basis + 1, kSpan)
// scratch of the calling thread.
template <typename T, typename Body>
void for_each_transpose_block(const LocalShape& shape, Body body) {
  const int64_t n_blocks = (shape.n_in + kInputs - 1) / kInputs;
  const int64_t grain = std::max<int64_t>(1, kLargeLayer / std::max<int64_t>(1, kInputs * shape.n_out * shape.n_basis));
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> block(kInputs * (shape.n_basis + 1) * kSpan);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t i0 = index * kInputs, inputs = std::min(kInputs, shape.n_in - i0);
      for (int64_t o0 = 0; o0 < shape.n_out; o0 += kSpan) body(i0, inputs, o0, std::min(kSpan, shape.n_out - o0), block.data());
    }
  });
}
LocalShape layer_shape(const at::Tensor& x, const at::Tensor& knots, int64_t k, const at::Tensor& coef,
                       const at::Tensor& scale_sp, const std::optional<at::Tensor>& scale_base,
                       const at::Tensor& mask) {
  check(x, knots, k);
  TORCH_CHECK(k <= 5, "the local product takes degrees 1..5");
  const int64_t n_basis = knots.size(1) - k - 1;
  TORCH_CHECK(coef.dim() == 3 && coef.size(1) == x.size(1) && coef.size(2) == n_basis && coef.is_contiguous(),
              "coef must be a contiguous (out, in, n_basis) tensor");
  for (const at::Tensor* t : {&coef, &scale_sp, &mask, scale_base.has_value() ? &*scale_base : &mask}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "the layer's parameters must have x's dtype");
    if (t == &coef) continue;
    TORCH_CHECK(t->dim() == 2 && t->size(0) == coef.size(0) && t->size(1) == coef.size(1) && t->is_contiguous(),
                "scale_sp, scale_base and mask must be contiguous (out, in) tensors");
  }
  const LocalShape shape{x.size(0), x.size(1), n_basis, n_basis + (scale_base.has_value() ? 1 : 0), coef.size(0),
                         n_basis + 2 * k + 1};
  TORCH_CHECK(shape.n_in * shape.padded_rows * std::max<int64_t>(1, shape.n_out) < std::numeric_limits<int32_t>::max(),
              "weight too large for 32-bit offsets");
  return shape;
}

#if defined(KANLAB_TRANSPOSES)
// layer_padded_weight with AVX-512 or AVX2: kInputs inputs by a vector of outputs by a vector of
// bases at a time, the outputs' coefficients (each a row of coef) loaded, scaled and transposed
// in registers into pieces of the padded rows (with tiled, of the tiled layout's tiles: a vector
// of outputs lies in one tile); the same products as the blocks below, so the same values.
template <typename T>
void padded_weight_by_transposes(const T* C, const T* S, const T* B, const T* M, const LocalShape& shape, int64_t k,
                                 T* P, bool tiled) {
  using Masked = MaskedVector<T>;
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
  const int64_t n_blocks = (n_in + kInputs - 1) / kInputs;
  const int64_t grain = std::max<int64_t>(1, kLargeLayer / std::max<int64_t>(1, kInputs * n_out * n_basis));
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index)
      for (int64_t o0 = 0; o0 < n_out; o0 += kLanes)
        for (int64_t i = index * kInputs; i < std::min(n_in, (index + 1) * kInputs); ++i) {
          const int64_t outputs = std::min(kLanes, n_out - o0);
          T* residual_row = tiled ? P + (n_in * (rows - 1) + i) * n_out : P + (i * rows + rows - 1) * n_out;
          if (tiled) {
            int64_t t0, width;
            tile_containing<T>(o0, n_out, t0, width);
            T* piece = P + i * (rows - 1) * n_out + t0 * (rows - 1) + o0 - t0;  // the tile's rows, width apart
            scaled_spline_rows(C, S, M, shape, k, i, o0, outputs, piece, width);
          } else {
            scaled_spline_rows(C, S, M, shape, k, i, o0, outputs, P + i * rows * n_out + o0, n_out);
          }
          T residual[kLanes] = {};
          if (B != nullptr)
            for (int64_t l = 0; l < outputs; ++l) residual[l] = M[(o0 + l) * n_in + i] * B[(o0 + l) * n_in + i];
          const auto output_mask = Masked::first(outputs);
          Masked::store(residual_row + o0, Masked::load(residual, output_mask), output_mask);
        }
  });
}

// layer_gradients for a single part: input_edge_gradients for kInputs inputs by a vector of
// outputs at a time, so that each output's gradients are written in runs of kInputs rows and the
// vector's columns share cache lines; grad_scale_base = g * mask from the residual row.
template <typename T>
void gradients_from_one_part(const T* P, const T* C, const T* S, const T* M, const LocalShape& shape, int64_t k, T* GC,
                          T* GS, T* GB) {
  constexpr int64_t kLanes = kVectorBytes / sizeof(T);
  const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
  const int64_t n_blocks = (n_in + kInputs - 1) / kInputs;
  const int64_t grain = std::max<int64_t>(1, kLargeLayer / std::max<int64_t>(1, kInputs * n_out * n_basis));
  const EdgeTargets<T> edges{C, S, M, GC, GS};
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index)
      for (int64_t o0 = 0; o0 < n_out; o0 += kLanes)
        for (int64_t i = index * kInputs; i < std::min(n_in, (index + 1) * kInputs); ++i) {
          const T* slab = P + i * rows * n_out;
          const int64_t o1 = std::min(n_out, o0 + kLanes);
          if (GC != nullptr || GS != nullptr) input_edge_gradients(slab + o0, n_out, i, o0, o1, shape, k, edges);
          if (GB != nullptr)
            for (int64_t o = o0; o < o1; ++o) GB[o * n_in + i] = slab[(rows - 1) * n_out + o] * M[o * n_in + i];
        }
  });
}
#endif

// The fused layer's padded weight, row-major (n_in, padded_rows, n_out) or, with tiled, in the
// tiled layout (tiled_layout; AVX2 only).
at::Tensor layer_padded_weight(const at::Tensor& coef, const at::Tensor& scale_sp,
                               const std::optional<at::Tensor>& scale_base, const at::Tensor& mask,
                               const LocalShape& shape, int64_t k, bool tiled = false) {
  TORCH_CHECK(!tiled || kVectorBytes < 64, "the tiled layout is AVX2's");
  at::Tensor padded = at::empty({shape.n_in, shape.padded_rows, shape.n_out}, coef.options());
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "layer_padded_weight", [&] {
    using T = scalar_t;
    const T *C = coef.const_data_ptr<T>(), *S = scale_sp.const_data_ptr<T>(), *M = mask.const_data_ptr<T>();
    const T* B = scale_base.has_value() ? scale_base->const_data_ptr<T>() : nullptr;
    T* P = padded.data_ptr<T>();
#if defined(KANLAB_TRANSPOSES)
    padded_weight_by_transposes(C, S, B, M, shape, k, P, tiled);
    return;
#endif
    const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
    const int64_t width = n_basis + 1;  // a block's rows per input: the spline rows, the residual
    for_each_transpose_block<T>(shape, [&](int64_t i0, int64_t inputs, int64_t o0, int64_t outputs, T* block) {
      for (int64_t l = 0; l < outputs; ++l)
        for (int64_t a = 0; a < inputs; ++a) {
          const int64_t edge = (o0 + l) * n_in + i0 + a;
          const T spline_scale = M[edge] * S[edge];
          T* column = block + a * width * kSpan + l;
          for (int64_t m = 0; m < n_basis; ++m) column[m * kSpan] = spline_scale * C[edge * n_basis + m];
          if (B != nullptr) column[n_basis * kSpan] = M[edge] * B[edge];
        }
      // row r of input i, outputs [o0, o0 + outputs), from source (nullptr: zeros)
      const auto put = [&](int64_t i, int64_t r, const T* source) {
        const auto write = [&](const T* from, int64_t count, T* to) {
          if (from != nullptr) std::copy(from, from + count, to);
          else std::fill(to, to + count, T(0));
        };
        if (!tiled) return write(source, outputs, P + (i * rows + r) * n_out + o0);
        if (r == rows - 1) return write(source, outputs, P + n_in * (rows - 1) * n_out + i * n_out + o0);
        for (int64_t o = o0, t0, tile_width; o < o0 + outputs;) {  // piece by piece of the tiles
          tile_containing<T>(o, n_out, t0, tile_width);
          const int64_t end = std::min(o0 + outputs, t0 + tile_width);
          write(source != nullptr ? source + (o - o0) : nullptr, end - o,
                P + i * (rows - 1) * n_out + t0 * (rows - 1) + r * tile_width + (o - t0));
          o = end;
        }
      };
      for (int64_t a = 0; a < inputs; ++a) {
        const T* source = block + a * width * kSpan;
        for (int64_t m = 0; m < n_basis; ++m) put(i0 + a, k + m, source + m * kSpan);
        put(i0 + a, rows - 1, B != nullptr ? source + n_basis * kSpan : nullptr);
        for (int64_t r = 0; r < k; ++r) {  // the padding rows above and below the bases
          put(i0 + a, r, nullptr);
          put(i0 + a, k + n_basis + r, nullptr);
        }
      }
    });
  });
  return padded;
}

// What every fused-layer pass starts from: the shape, the padded weight (the forward pass's,
// given, or built here, in the tiled layout where tiled says so) and the silu residual (none
// without scale_base).
struct LayerInputs {
  LocalShape shape;
  at::Tensor padded;
  std::optional<at::Tensor> base;
};

LayerInputs layer_inputs(const at::Tensor& x, const at::Tensor& knots, int64_t k, const at::Tensor& coef,
                         const at::Tensor& scale_sp, const std::optional<at::Tensor>& scale_base,
                         const at::Tensor& mask, const std::optional<at::Tensor>& padded = std::nullopt,
                         bool tiled = false) {
  const LocalShape shape = layer_shape(x, knots, k, coef, scale_sp, scale_base, mask);
  const bool given = padded.has_value() && padded->numel() > 0;  // the fine forward pass keeps none
  if (given)
    TORCH_CHECK(padded->sizes() == at::IntArrayRef({shape.n_in, shape.padded_rows, shape.n_out}) &&
                    padded->is_contiguous() && padded->scalar_type() == x.scalar_type(),
                "padded must be the forward pass's padded weight of this layer");
  return {shape, given ? *padded : layer_padded_weight(coef, scale_sp, scale_base, mask, shape, k, tiled),
          scale_base.has_value() ? std::optional<at::Tensor>(at::silu(x)) : std::nullopt};
}

// The parameters' gradients from the padded weight gradient's parts (summed over its copies):
// grad_coef = g * (mask * scale_sp), grad_scale_sp = sum_m g * coef * mask, grad_scale_base = g * mask.
void layer_gradients(const at::Tensor& parts, const LocalShape& shape, int64_t k, const at::Tensor& coef,
                     const at::Tensor& scale_sp, const at::Tensor& mask, at::Tensor& grad_coef, at::Tensor& grad_sp,
                     at::Tensor& grad_base) {
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "layer_gradients", [&] {
    using T = scalar_t;
    const T *P = parts.const_data_ptr<T>(), *C = coef.const_data_ptr<T>(), *S = scale_sp.const_data_ptr<T>();
    const T* M = mask.const_data_ptr<T>();
    T* GC = grad_coef.defined() ? grad_coef.data_ptr<T>() : nullptr;
    T* GS = grad_sp.defined() ? grad_sp.data_ptr<T>() : nullptr;
    T* GB = grad_base.defined() ? grad_base.data_ptr<T>() : nullptr;
#if defined(KANLAB_TRANSPOSES)
    if (parts.size(0) == 1) {
      gradients_from_one_part(P, C, S, M, shape, k, GC, GS, GB);
      return;
    }
#endif
    const int64_t n_in = shape.n_in, n_out = shape.n_out, n_basis = shape.n_basis, rows = shape.padded_rows;
    const int64_t copies = parts.size(0), copy_size = n_in * rows * n_out, width = n_basis + 1;
    for_each_transpose_block<T>(shape, [&](int64_t i0, int64_t inputs, int64_t o0, int64_t outputs, T* block) {
      for (int64_t a = 0; a < inputs; ++a)
        for (int64_t m = 0; m < width; ++m) {  // the rows' sums over the copies
          const T* source = P + ((i0 + a) * rows + (m < n_basis ? k + m : rows - 1)) * n_out + o0;
          T* total = block + (a * width + m) * kSpan;
          std::copy(source, source + outputs, total);
          for (int64_t copy = 1; copy < copies; ++copy)
            for (int64_t l = 0; l < outputs; ++l) total[l] += source[copy * copy_size + l];
        }
      for (int64_t l = 0; l < outputs; ++l)
        for (int64_t a = 0; a < inputs; ++a) {
          const int64_t edge = (o0 + l) * n_in + i0 + a;
          const T spline_scale = M[edge] * S[edge];
          const T* column = block + a * width * kSpan + l;
          T slope = T(0);
          for (int64_t m = 0; m < n_basis; ++m) {
            const T g = column[m * kSpan];
            if (GC != nullptr) GC[edge * n_basis + m] = g * spline_scale;
            slope += g * C[edge * n_basis + m];
          }
          if (GS != nullptr) GS[edge] = slope * M[edge];
          if (GB != nullptr) GB[edge] = column[n_basis * kSpan] * M[edge];
        }
    });
  });
}

// Whether a fused layer goes by fine_layer_forward and blocks_layer_backward, with no padded weight:
// a wide layer on a fine grid; without a residual, a NaN input sends it entry by entry instead.
bool takes_fine_layer(const LocalShape& shape, const at::Tensor& x, bool with_base) {
  return takes_blocks(shape) && shape.padded_rows >= kFineRows && (with_base || !at::isnan(x).any().item<bool>());
}

// The fused layer on fine grids (takes_fine_layer), without a padded weight: the residual
// silu(x) @ (mask * scale_base)^T as a matrix product, the spline part by fine_product.
at::Tensor fine_layer_forward(const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table,
                              int64_t k, const std::optional<at::Tensor>& cardinal,
                              const std::optional<at::Tensor>& start, const std::optional<at::Tensor>& step,
                              const at::Tensor& coef, const at::Tensor& scale_sp,
                              const std::optional<at::Tensor>& scale_base, const at::Tensor& mask,
                              const LocalShape& shape) {
  at::Tensor result = scale_base.has_value() ? at::mm(at::silu(x), mask.mul(*scale_base).t())
                                             : at::zeros({shape.batch, shape.n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fine_layer_forward", [&] {
    using T = scalar_t;
    const Intervals<T> intervals_ = intervals<T>(knots, table, cardinal, start, step, k);
    const EdgeTargets<T> edges{coef.const_data_ptr<T>(), scale_sp.const_data_ptr<T>(), mask.const_data_ptr<T>(),
                               nullptr, nullptr};
    with_degree(k, [&](auto degree) {
      constexpr int K = decltype(degree)::value;
      if constexpr (K > 0)
        fine_product<T, K>(intervals_, knots, x.const_data_ptr<T>(), nullptr, &edges, shape, result.data_ptr<T>());
    });
  });
  return result;
}

// kan_layer_backward in blocks of samples: the blocks give x's gradient and the parameters'
// gradients (blocked_backward's edges); the residual's parts are two small matrix products.
// padded: the forward pass's padded weight on coarse grids (in the tiled layout where tiled says
// so), whose groups of inputs turn their weight gradient into the edges' while it is in cache
// (no padded weight gradient in memory); nullptr on fine grids, whose blocks read the parameters
// themselves. base: silu(x) where the caller has it.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> blocks_layer_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table,
    const std::optional<at::Tensor>& derivative_table, int64_t k, const std::optional<at::Tensor>& cardinal,
    const std::optional<at::Tensor>& cardinal_derivative, const std::optional<at::Tensor>& start,
    const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
    const std::optional<at::Tensor>& scale_base, const at::Tensor& mask, const LocalShape& shape,
    const at::Tensor* padded, const std::optional<at::Tensor>& base, bool tiled, bool need_x, bool need_coef,
    bool need_scale_sp, bool need_scale_base) {
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == shape.batch && grad.size(1) == shape.n_out, "grad must be (batch, out)");
  const at::Tensor g = grad.contiguous();
  const at::Tensor none = at::empty({0}, x.options());
  at::Tensor grad_x = need_x ? at::empty_like(x) : none;
  at::Tensor grad_coef = need_coef ? at::empty_like(coef) : none;
  at::Tensor grad_sp = need_scale_sp ? at::empty_like(scale_sp) : none;
  if (need_x || need_coef || need_scale_sp)  // else the residual's products below are all that is asked
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "blocks_layer_backward", [&] {
      using T = scalar_t;
      const Intervals<T> values = intervals<T>(knots, table, cardinal, start, step, k);
      const Intervals<T> slopes =
          need_x ? intervals<T>(knots, derivative_table, cardinal_derivative, start, step, k) : values;
      const EdgeTargets<T> edges{coef.const_data_ptr<T>(), scale_sp.const_data_ptr<T>(), mask.const_data_ptr<T>(),
                                 need_coef ? grad_coef.data_ptr<T>() : nullptr,
                                 need_scale_sp ? grad_sp.data_ptr<T>() : nullptr};
      with_degree(k, [&](auto degree) {
        constexpr int K = decltype(degree)::value;
        if constexpr (K > 0)
          blocked_backward<T, K>(values, slopes, knots, x.const_data_ptr<T>(), g.const_data_ptr<T>(),
                                 padded != nullptr ? padded->const_data_ptr<T>() : nullptr, shape,
                                 need_x ? grad_x.data_ptr<T>() : nullptr, nullptr, &edges, tiled);
      });
    });
  if (!scale_base.has_value()) return {grad_x, grad_coef, grad_sp, none};
  if (need_x) {  // the residual's rows (in, out) from the padded weight, or (out, in) from the parameters
    const at::Tensor residual = padded == nullptr ? mask.mul(*scale_base)
                                : tiled ? tiled_residual(*padded, shape).t()
                                        : padded->select(1, shape.padded_rows - 1).t();
    grad_x.add_(at::silu_backward(at::mm(g, residual), x));
  }
  const at::Tensor grad_base_scale =
      need_scale_base ? at::mm((base.has_value() ? *base : at::silu(x)).t(), g).t().mul(mask).contiguous() : none;
  return {grad_x, grad_coef, grad_sp, grad_base_scale};
}

// The fused layers' backward results: x's gradient with the silu residual's part added, and the
// parameters' gradients from the weight gradient's parts; an empty tensor for each one not asked.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_backward_result(
    const at::Tensor& x, at::Tensor grad_x, const at::Tensor& grad_base, const at::Tensor& parts,
    const LocalShape& shape, int64_t k, const at::Tensor& coef, const at::Tensor& scale_sp, const at::Tensor& mask,
    bool with_base, bool need_x, bool need_coef, bool need_scale_sp, bool need_scale_base) {
  if (need_x && with_base) grad_x.add_(at::silu_backward(grad_base, x));
  at::Tensor grad_coef = need_coef ? at::empty_like(coef) : at::Tensor();
  at::Tensor grad_sp = need_scale_sp ? at::empty_like(scale_sp) : at::Tensor();
  at::Tensor grad_base_scale = need_scale_base ? at::empty_like(scale_sp) : at::Tensor();
  if (need_coef || need_scale_sp || need_scale_base)
    layer_gradients(parts, shape, k, coef, scale_sp, mask, grad_coef, grad_sp, grad_base_scale);
  const at::Tensor none = at::empty({0}, x.options());
  return {need_x ? grad_x : none, need_coef ? grad_coef : none, need_scale_sp ? grad_sp : none,
          need_scale_base ? grad_base_scale : none};
}

}  // namespace

// A KAN layer's output (batch, n_out) from x (batch, in) and its parameters: coef (out, in,
// n_basis), scale_sp, scale_base (None: no residual; else the residual is silu(x)) and mask (out,
// in); degrees 1..5. The same as local_product with the layer's weight and base. Also returns
// the padded weight it built, for the backward pass to reuse.
std::tuple<at::Tensor, at::Tensor> kan_layer(const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table, int64_t k,
                     const std::optional<at::Tensor>& cardinal, const std::optional<at::Tensor>& start,
                     const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
                     const std::optional<at::Tensor>& scale_base, const at::Tensor& mask) {
  const LocalShape shape = layer_shape(x, knots, k, coef, scale_sp, scale_base, mask);
  if (takes_fine_layer(shape, x, scale_base.has_value()))  // no padded weight to keep
    return {fine_layer_forward(x, knots, table, k, cardinal, start, step, coef, scale_sp, scale_base, mask, shape),
            at::empty({0}, x.options())};
  const bool tiled = tiled_layout(shape, x, scale_base.has_value());
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask, std::nullopt, tiled);
  return {product_from_padded(x, layer.base, knots, table, k, cardinal, start, step, layer.padded, layer.shape, tiled),
          layer.padded};
}

// kan_layer's first-order gradients (grad_x, grad_coef, grad_scale_sp, grad_scale_base) from grad
// (batch, n_out), each computed only where asked (an empty tensor otherwise); padded: the forward
// pass's padded weight (None: built again).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kan_layer_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& knots, const std::optional<at::Tensor>& table,
    const std::optional<at::Tensor>& derivative_table, int64_t k, const std::optional<at::Tensor>& cardinal,
    const std::optional<at::Tensor>& cardinal_derivative, const std::optional<at::Tensor>& start,
    const std::optional<at::Tensor>& step, const at::Tensor& coef, const at::Tensor& scale_sp,
    const std::optional<at::Tensor>& scale_base, const at::Tensor& mask, bool need_x, bool need_coef,
    bool need_scale_sp, bool need_scale_base, const std::optional<at::Tensor>& padded) {
  const bool with_base = scale_base.has_value();
  need_scale_base = need_scale_base && with_base;
  const LocalShape shape = layer_shape(x, knots, k, coef, scale_sp, scale_base, mask);
  if (takes_fine_layer(shape, x, with_base))
    return blocks_layer_backward(grad, x, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step,
                                 coef, scale_sp, scale_base, mask, shape, nullptr, std::nullopt, false, need_x,
                                 need_coef, need_scale_sp, need_scale_base);
  const bool tiled = tiled_layout(shape, x, with_base);  // as the forward pass's
  const LayerInputs layer = layer_inputs(x, knots, k, coef, scale_sp, scale_base, mask, padded, tiled);
  if (tiled || (takes_blocks(shape) && (with_base || !at::isnan(x).any().item<bool>())))
    return blocks_layer_backward(grad, x, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step,
                                 coef, scale_sp, scale_base, mask, shape, &layer.padded, layer.base, tiled, need_x,
                                 need_coef, need_scale_sp, need_scale_base);
  const bool need_weight = need_coef || need_scale_sp || need_scale_base;
  auto [grad_x, grad_base, parts] = product_backward_from_padded(
      grad, x, layer.base, knots, table, derivative_table, k, cardinal, cardinal_derivative, start, step, layer.padded,
      layer.shape, need_x, need_x && with_base, need_weight, tiled);
  return layer_backward_result(x, grad_x, grad_base, parts, layer.shape, k, coef, scale_sp, mask, with_base, need_x,
                               need_coef, need_scale_sp, need_scale_base);
}
