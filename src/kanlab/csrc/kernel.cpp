// kanlab's compiled basis features: the B-spline layer's (batch, width * in) feature matrix
// and its first-order input gradient, and the layer weight matrix that multiplies it; and the
// local product, the layer's output from the same local bases without the feature matrix,
// alone, for a whole layer from its parameters (kan_layer) and with the regulariser's per-edge
// norms (kan_layer_norms). The local product goes by columns of samples on narrow layers (with
// few outputs, one output at a time vectorized over the samples, and the backward pass in one
// pass: column_backward), entry by entry on other layers of few outputs, and in blocks of
// samples sorted by interval on wide ones (blocked_product, blocked_backward).
//
// The same arithmetic as the pure-torch path in splines.py: on evenly spaced knots the closed
// form (f = (x - t_0) / h - s, the same polynomials in f on every interval); on other knots
// the interval s by counting knots <= x (torch.searchsorted(..., right=True)) and Horner's rule
// on that interval's power-form table (splines._interval_polynomials, in u = x - t_s), whose
// rows a column of samples looks up by register permutes where they fit (permuted_chunk). Bases
// are clamped at 0; bases that do not exist and inputs outside the knots give 0.
// Layout (slot-major, as the torch path): column m * in + i holds basis m of input i; with a
// residual, column n_basis * in + i holds base[b, i]. Second derivatives never come here: the
// Python side switches to its differentiable torch path when a backward pass builds a graph.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

// The kernel's parts, in the order they build on each other:
#include "intervals.h"      // knot search, Horner, interval tables
#include "chunks.h"         // chunked vectorized bases (the feature path)
#include "features.h"       // basis_features, basis_features_backward, feature_weight
#include "local_product.h"  // the local product by entries and columns
#include "blocks.h"         // wide layers: blocks of samples sorted by interval
#include "fine_blocks.h"    // fine grids: blocked kernels with in-cache weight rows
#include "product.h"        // local_product, local_product_backward
#include "layer.h"          // kan_layer, kan_layer_backward
#include "norms.h"          // kan_layer_norms, kan_layer_norms_backward

TORCH_LIBRARY(kanlab_native, m) {
  m.def("basis_features(Tensor x, Tensor? base, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, "
        "Tensor? step) -> Tensor");
  m.def("basis_features_backward(Tensor grad, Tensor x, Tensor knots, Tensor? derivative_table, int k, int width, "
        "Tensor? cardinal_derivative, Tensor? start, Tensor? step) -> Tensor");
  m.def("feature_weight(Tensor coef, Tensor spline_scale, Tensor? base_scale) -> Tensor");
  m.def("local_product(Tensor x, Tensor? base, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, "
        "Tensor? step, Tensor weight) -> Tensor");
  m.def("local_product_backward(Tensor grad, Tensor x, Tensor? base, Tensor knots, Tensor? table, "
        "Tensor? derivative_table, int k, Tensor? cardinal, Tensor? cardinal_derivative, Tensor? start, Tensor? step, "
        "Tensor weight, bool need_x, bool need_base, bool need_weight) -> (Tensor, Tensor, Tensor)");
  m.def("kan_layer(Tensor x, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, Tensor? step, "
        "Tensor coef, Tensor scale_sp, Tensor? scale_base, Tensor mask) -> (Tensor, Tensor)");
  m.def("kan_layer_backward(Tensor grad, Tensor x, Tensor knots, Tensor? table, Tensor? derivative_table, int k, "
        "Tensor? cardinal, Tensor? cardinal_derivative, Tensor? start, Tensor? step, Tensor coef, Tensor scale_sp, "
        "Tensor? scale_base, Tensor mask, bool need_x, bool need_coef, bool need_scale_sp, bool need_scale_base, "
        "Tensor? padded=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("kan_layer_norms(Tensor x, Tensor knots, Tensor? table, int k, Tensor? cardinal, Tensor? start, Tensor? step, "
        "Tensor coef, Tensor scale_sp, Tensor? scale_base, Tensor mask) -> (Tensor, Tensor, Tensor)");
  m.def("kan_layer_norms_backward(Tensor grad, Tensor grad_norms, Tensor x, Tensor knots, Tensor? table, "
        "Tensor? derivative_table, int k, Tensor? cardinal, Tensor? cardinal_derivative, Tensor? start, Tensor? step, "
        "Tensor coef, Tensor scale_sp, Tensor? scale_base, Tensor mask, bool need_x, bool need_coef, "
        "bool need_scale_sp, bool need_scale_base, Tensor? padded=None) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kanlab_native, CPU, m) {
  m.impl("basis_features", &basis_features);
  m.impl("basis_features_backward", &basis_features_backward);
  m.impl("feature_weight", &feature_weight);
  m.impl("local_product", &local_product);
  m.impl("local_product_backward", &local_product_backward);
  m.impl("kan_layer", &kan_layer);
  m.impl("kan_layer_backward", &kan_layer_backward);
  m.impl("kan_layer_norms", &kan_layer_norms);
  m.impl("kan_layer_norms_backward", &kan_layer_norms_backward);
}
