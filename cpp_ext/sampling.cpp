// infolens._sampling: the per-sample inner loops of the marginalization engine.
//
// Four kernels, each bit-identical to the numpy fallback in runtime/kernels.py:
//   sample_categorical       inverse-CDF draws from PatchSampler probabilities
//   sample_logistic_mixture  hypothesis, component and coupled R, G, B draws (logistic-mixture head)
//   composite                write one K x K in-fill per batch item through a per-channel LUT
//   restore                  copy the K x K region back from the preprocessed base image
// Shapes and dtypes are validated while the GIL is held; the loops (and the value checks that
// scan whole arrays) run with it released so the caller can keep ONNX Runtime busy from
// another thread.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

// Bit-exactness with numpy needs the float adds of the CDF in index order, and every a + b·c
// unfused: setup.py compiles with -ffp-contract=off, so no FMA changes a rounding.
#ifdef __FAST_MATH__
#error "sampling.cpp must not be compiled with -ffast-math: results must match numpy bit for bit"
#endif

namespace py = pybind11;

namespace {

constexpr int kLevels = 256;  // pixel values 0..255

[[noreturn]] void fail(const std::string &msg) { throw py::value_error(msg); }

std::string shape_str(const py::array &a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        if (d) s += ", ";
        s += std::to_string(a.shape(d));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

template <typename T>
bool has_dtype(const py::array &a) {
    return py::isinstance<py::array_t<T>>(a);
}

// Messages match runtime/kernels.py (_check_array) so both backends read the same.
void check_layout(const py::array &a, const char *name, int ndim, bool writeable = false) {
    if (a.ndim() != ndim)
        fail(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
             shape_str(a));
    if (!(a.flags() & py::array::c_style))
        fail(std::string(name) + " must be C-contiguous");
    if (writeable && !a.writeable()) fail(std::string(name) + " must be writeable");
}

template <typename T>
void check_array(const py::array &a, const char *name, const char *dtype_name, int ndim) {
    if (!has_dtype<T>(a))
        fail(std::string(name) + " must have dtype " + dtype_name + ", got " +
             py::str(a.dtype()).cast<std::string>());
    check_layout(a, name, ndim);
}

py::array as_array(const py::handle &obj, const char *name) {
    if (!py::isinstance<py::array>(obj))
        fail(std::string(name) + " must be a numpy array, got " +
             std::string(Py_TYPE(obj.ptr())->tp_name));
    return py::reinterpret_borrow<py::array>(obj);
}

// Rows of one CDF block are interleaved (cdf[j * R + r]) so R independent sequential sums
// advance together: the same adds per row as np.cumsum, but R chains hide the add latency.
// Returns false if a probability is negative/nan, a row sum is not finite, or a uniform is
// outside [0, 1); the caller then raises, so garbage draws for bad input never escape.
template <int R>
bool sample_rows(const float *probs, const float *uniforms, std::uint8_t *out, py::ssize_t N,
                 py::ssize_t M) {
    alignas(64) float cdf[kLevels * R];
    float s[R];
    bool ok = true;
    for (int r = 0; r < R; ++r) s[r] = 0.0f;
    for (int j = 0; j < kLevels; ++j)
        for (int r = 0; r < R; ++r) {
            const float p = probs[r * kLevels + j];
            ok &= p >= 0.0f;
            s[r] += p;
            cdf[j * R + r] = s[r];
        }
    for (int r = 0; r < R; ++r) ok &= std::isfinite(s[r]);
    for (py::ssize_t n = 0; n < N; ++n) {
        float t[R];
        int pos[R];
        for (int r = 0; r < R; ++r) {
            const float u = uniforms[n * M + r];
            ok &= u >= 0.0f && u < 1.0f;
            t[r] = u * s[r];
            pos[r] = 0;
        }
        // Branch-free upper bound, R searches interleaved: after the 8 halvings
        // pos = #{j : cdf[j] <= t} clipped to 255, because the steps sum to 255.
        for (int step = kLevels / 2; step > 0; step >>= 1)
            for (int r = 0; r < R; ++r)
                pos[r] += step & -static_cast<int>(cdf[(pos[r] + step - 1) * R + r] <= t[r]);
        for (int r = 0; r < R; ++r) out[n * M + r] = static_cast<std::uint8_t>(pos[r]);
    }
    return ok;
}

py::array_t<std::uint8_t> sample_categorical(const py::object &probs_obj,
                                             const py::object &uniforms_obj) {
    py::array probs = as_array(probs_obj, "probs");
    py::array uniforms = as_array(uniforms_obj, "uniforms");
    check_array<float>(probs, "probs", "float32", 3);
    check_array<float>(uniforms, "uniforms", "float32", 3);
    const py::ssize_t P = probs.shape(0), M = probs.shape(1);
    if (probs.shape(2) != kLevels)
        fail("probs must have shape [P, M, 256], got " + shape_str(probs));
    if (uniforms.shape(0) != P || uniforms.shape(2) != M)
        fail("uniforms must have shape [P, N, M] = [" + std::to_string(P) + ", N, " +
             std::to_string(M) + "] to match probs " + shape_str(probs) + ", got " +
             shape_str(uniforms));
    const py::ssize_t N = uniforms.shape(1);
    py::array_t<std::uint8_t> out({P, N, M});

    const float *pp = static_cast<const float *>(probs.data());
    const float *up = static_cast<const float *>(uniforms.data());
    std::uint8_t *op = out.mutable_data();
    bool ok = true;
    {
        py::gil_scoped_release release;
        for (py::ssize_t p = 0; p < P; ++p) {
            const float *prow = pp + p * M * kLevels;
            const float *urow = up + p * N * M;
            std::uint8_t *orow = op + p * N * M;
            py::ssize_t m = 0;
            for (; m + 8 <= M; m += 8)
                ok &= sample_rows<8>(prow + m * kLevels, urow + m, orow + m, N, M);
            for (; m < M; ++m) ok &= sample_rows<1>(prow + m * kLevels, urow + m, orow + m, N, M);
        }
    }
    if (!ok)
        fail("probs must be non-negative with finite row sums, and uniforms must lie in [0, 1)");
    return out;
}

// ---- logistic-mixture head (DESIGN §3) ------------------------------------------------------

// Matches kernels._check_shape: expected sizes, or a letter where any size is allowed.
void check_shape(const py::array &a, const char *name, const char *dims,
                 const std::vector<std::string> &expected) {
    bool ok = true;
    for (std::size_t d = 0; d < expected.size(); ++d)
        if (!expected[d].empty() && std::isdigit(static_cast<unsigned char>(expected[d][0])) &&
            std::to_string(a.shape(d)) != expected[d])
            ok = false;
    if (ok) return;
    std::string shown = "(";
    for (std::size_t d = 0; d < expected.size(); ++d) shown += (d ? ", " : "") + expected[d];
    fail(std::string(name) + " must have shape [" + dims + "] = " + shown + "), got " + shape_str(a));
}

std::string num(py::ssize_t v) { return std::to_string(v); }

const char *const kWeightsMsg = "hyp and comp must be non-negative with finite positive row sums";
const char *const kParamsMsg = "loc, scale and coeff must be finite, with scale > 0";
const char *const kUniformsMsg = "u_hyp and u_comp must lie in [0, 1), and z must be finite";
const char *const kNanMsg = "a drawn value is NaN: loc + coeff·x + scale·z overflowed";

// Rows of `len` weights: all non-negative, each row's running sum finite and positive.
bool weights_ok(const double *w, py::ssize_t rows, py::ssize_t len) {
    bool ok = true;
    for (py::ssize_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (py::ssize_t j = 0; j < len; ++j) {
            ok &= w[r * len + j] >= 0.0;
            s += w[r * len + j];
        }
        ok &= std::isfinite(s) && s > 0.0;
    }
    return ok;
}

bool all_finite(const double *a, py::ssize_t n) {
    bool ok = true;
    for (py::ssize_t i = 0; i < n; ++i) ok &= std::isfinite(a[i]);
    return ok;
}

bool all_unit(const double *a, py::ssize_t n) {
    bool ok = true;
    for (py::ssize_t i = 0; i < n; ++i) ok &= a[i] >= 0.0 && a[i] < 1.0;
    return ok;
}

// Inverse CDF over len weights: the first j whose running sum exceeds u·total, else len-1.
// The same as numpy's count of cdf <= t, clipped, because the running sum never decreases.
py::ssize_t choose(const double *w, py::ssize_t len, double u) {
    double total = 0.0;
    for (py::ssize_t j = 0; j < len; ++j) total += w[j];
    const double t = u * total;
    double s = 0.0;
    for (py::ssize_t j = 0; j < len - 1; ++j) {
        s += w[j];
        if (!(s <= t)) return j;
    }
    return len - 1;
}

// rint (half to even, the default rounding mode, as np.rint) then clip to 0..255; false for NaN.
bool to_level(double v, double &out) {
    if (std::isnan(v)) return false;
    const double r = std::nearbyint(v);
    out = r < 0.0 ? 0.0 : (r > 255.0 ? 255.0 : r);
    return true;
}

py::array_t<std::uint8_t> sample_logistic_mixture(
    const py::object &hyp_obj, const py::object &comp_obj, const py::object &loc_obj,
    const py::object &scale_obj, const py::object &coeff_obj, const py::object &u_hyp_obj,
    const py::object &u_comp_obj, const py::object &z_obj) {
    py::array hyp = as_array(hyp_obj, "hyp"), comp = as_array(comp_obj, "comp");
    py::array loc = as_array(loc_obj, "loc"), scale = as_array(scale_obj, "scale");
    py::array coeff = as_array(coeff_obj, "coeff"), u_hyp = as_array(u_hyp_obj, "u_hyp");
    py::array u_comp = as_array(u_comp_obj, "u_comp"), z = as_array(z_obj, "z");
    check_array<double>(hyp, "hyp", "float64", 2);
    check_array<double>(comp, "comp", "float64", 4);
    check_array<double>(loc, "loc", "float64", 5);
    check_array<double>(scale, "scale", "float64", 5);
    check_array<double>(coeff, "coeff", "float64", 5);
    check_array<double>(u_hyp, "u_hyp", "float64", 2);
    check_array<double>(u_comp, "u_comp", "float64", 3);
    check_array<double>(z, "z", "float64", 4);
    const py::ssize_t B = hyp.shape(0), S = hyp.shape(1), Q = comp.shape(2), M = comp.shape(3);
    const py::ssize_t N = u_hyp.shape(1);
    check_shape(comp, "comp", "B, S, Q, M", {num(B), num(S), "Q", "M"});
    check_shape(loc, "loc", "B, S, Q, 3, M", {num(B), num(S), num(Q), "3", num(M)});
    check_shape(scale, "scale", "B, S, Q, 3, M", {num(B), num(S), num(Q), "3", num(M)});
    check_shape(coeff, "coeff", "B, S, Q, 3, M", {num(B), num(S), num(Q), "3", num(M)});
    check_shape(u_hyp, "u_hyp", "B, N", {num(B), "N"});
    check_shape(u_comp, "u_comp", "B, N, Q", {num(B), num(N), num(Q)});
    check_shape(z, "z", "B, N, Q, 3", {num(B), num(N), num(Q), "3"});

    const auto *hp = static_cast<const double *>(hyp.data());
    const auto *cp = static_cast<const double *>(comp.data());
    const auto *lp = static_cast<const double *>(loc.data());
    const auto *sp = static_cast<const double *>(scale.data());
    const auto *kp = static_cast<const double *>(coeff.data());
    const auto *uh = static_cast<const double *>(u_hyp.data());
    const auto *uc = static_cast<const double *>(u_comp.data());
    const auto *zp = static_cast<const double *>(z.data());
    py::array_t<std::uint8_t> out({B, N, Q, py::ssize_t{3}});
    std::uint8_t *op = out.mutable_data();
    const py::ssize_t params = B * S * Q * 3 * M;
    const char *error = nullptr;
    {
        py::gil_scoped_release release;
        bool params_ok = all_finite(lp, params) && all_finite(kp, params);
        for (py::ssize_t i = 0; i < params; ++i) params_ok &= std::isfinite(sp[i]) && sp[i] > 0.0;
        if (!(weights_ok(hp, B, S) && weights_ok(cp, B * S * Q, M)))
            error = kWeightsMsg;
        else if (!params_ok)
            error = kParamsMsg;
        else if (!(all_unit(uh, B * N) && all_unit(uc, B * N * Q) && all_finite(zp, B * N * Q * 3)))
            error = kUniformsMsg;
        for (py::ssize_t b = 0; b < B && !error; ++b)
            for (py::ssize_t n = 0; n < N && !error; ++n) {
                const py::ssize_t s = choose(hp + b * S, S, uh[b * N + n]);
                const py::ssize_t bs = b * S + s;
                for (py::ssize_t q = 0; q < Q; ++q) {
                    const py::ssize_t bnq = (b * N + n) * Q + q;
                    const py::ssize_t m = choose(cp + (bs * Q + q) * M, M, uc[bnq]);
                    const py::ssize_t base = (bs * Q + q) * 3 * M + m;  // channel c at base + c·M
                    const double *zq = zp + bnq * 3;
                    double r = 0.0, g = 0.0, bl = 0.0;
                    bool ok = to_level(lp[base] + sp[base] * zq[0], r);
                    const double mg = lp[base + M] + kp[base] * r;
                    ok = ok && to_level(mg + sp[base + M] * zq[1], g);
                    double mb = lp[base + 2 * M] + kp[base + M] * r;
                    mb = mb + kp[base + 2 * M] * g;
                    ok = ok && to_level(mb + sp[base + 2 * M] * zq[2], bl);
                    if (!ok) {
                        error = kNanMsg;
                        break;
                    }
                    std::uint8_t *o = op + bnq * 3;
                    o[0] = static_cast<std::uint8_t>(r);
                    o[1] = static_cast<std::uint8_t>(g);
                    o[2] = static_cast<std::uint8_t>(bl);
                }
            }
    }
    if (error) fail(error);
    return out;
}

// Geometry shared by composite and restore, all in elements of the batch dtype.
struct Layout {
    py::ssize_t C, H, W;
    bool nchw;
    py::ssize_t item() const { return C * H * W; }
};

Layout layout_of(const py::array &batch, bool nchw) {
    if (nchw) return {batch.shape(1), batch.shape(2), batch.shape(3), true};
    return {batch.shape(3), batch.shape(1), batch.shape(2), false};
}

// Checks ys/xs (int64, 1-D, equal length, at most batch items); returns their length.
py::ssize_t check_corner_arrays(const py::array &ys, const py::array &xs, py::ssize_t items) {
    check_array<std::int64_t>(ys, "ys", "int64", 1);
    check_array<std::int64_t>(xs, "xs", "int64", 1);
    if (xs.shape(0) != ys.shape(0))
        fail("ys and xs must have the same length, got " + shape_str(ys) + " and " +
             shape_str(xs));
    if (ys.shape(0) > items)
        fail("ys has " + std::to_string(ys.shape(0)) + " items but batch only " +
             std::to_string(items));
    return ys.shape(0);
}

// Every write stays inside the image: 1 <= K <= min(H, W) and 0 <= y <= H-K, 0 <= x <= W-K.
void check_corner_bounds(const py::array &ys, const py::array &xs, py::ssize_t K,
                         const Layout &g) {
    if (K < 1 || K > g.H || K > g.W)
        fail("patch size K=" + std::to_string(K) + " must satisfy 1 <= K <= min(H, W) = " +
             std::to_string(std::min(g.H, g.W)));
    const auto *y = static_cast<const std::int64_t *>(ys.data());
    const auto *x = static_cast<const std::int64_t *>(xs.data());
    for (py::ssize_t b = 0; b < ys.shape(0); ++b)
        if (y[b] < 0 || y[b] > g.H - K || x[b] < 0 || x[b] > g.W - K)
            fail("patch corner (y, x) = (" + std::to_string(y[b]) + ", " +
                 std::to_string(x[b]) + ") of item " + std::to_string(b) +
                 " is outside 0 <= y <= H-K = " + std::to_string(g.H - K) +
                 ", 0 <= x <= W-K = " + std::to_string(g.W - K));
}

template <typename T>
void composite_loop(T *batch, const std::uint8_t *patches, const std::int64_t *ys,
                    const std::int64_t *xs, const T *lut, const std::int64_t *src,
                    py::ssize_t count, py::ssize_t K, const Layout &g) {
    const py::ssize_t C = g.C, H = g.H, W = g.W;
    for (py::ssize_t b = 0; b < count; ++b) {
        const std::uint8_t *patch = patches + b * K * K * 3;
        T *item = batch + b * g.item();
        for (py::ssize_t i = 0; i < K; ++i) {
            const std::uint8_t *prow = patch + i * K * 3;
            if (g.nchw) {
                for (py::ssize_t c = 0; c < C; ++c) {
                    const T *lc = lut + c * kLevels;
                    const std::int64_t s = src[c];
                    T *dst = item + (c * H + ys[b] + i) * W + xs[b];
                    for (py::ssize_t j = 0; j < K; ++j) dst[j] = lc[prow[j * 3 + s]];
                }
            } else {
                T *dst = item + ((ys[b] + i) * W + xs[b]) * C;
                for (py::ssize_t j = 0; j < K; ++j)
                    for (py::ssize_t c = 0; c < C; ++c)
                        dst[j * C + c] = lut[c * kLevels + prow[j * 3 + src[c]]];
            }
        }
    }
}

template <typename T>
void restore_loop(T *batch, const T *base, const std::int64_t *ys, const std::int64_t *xs,
                  py::ssize_t count, py::ssize_t K, const Layout &g) {
    for (py::ssize_t b = 0; b < count; ++b) {
        T *item = batch + b * g.item();
        if (g.nchw) {
            for (py::ssize_t c = 0; c < g.C; ++c)
                for (py::ssize_t i = 0; i < K; ++i) {
                    const py::ssize_t off = (c * g.H + ys[b] + i) * g.W + xs[b];
                    std::memcpy(item + off, base + off, K * sizeof(T));
                }
        } else {
            for (py::ssize_t i = 0; i < K; ++i) {
                const py::ssize_t off = ((ys[b] + i) * g.W + xs[b]) * g.C;
                std::memcpy(item + off, base + off, K * g.C * sizeof(T));
            }
        }
    }
}

// Validates the batch and returns whether it is float32 (else uint8).
bool check_batch(const py::array &batch) {
    const bool is_f32 = has_dtype<float>(batch);
    if (!is_f32 && !has_dtype<std::uint8_t>(batch))
        fail("batch must have dtype float32 or uint8, got " +
             py::str(batch.dtype()).cast<std::string>());
    check_layout(batch, "batch", 4, /*writeable=*/true);
    return is_f32;
}

// lut and base must share the batch dtype.
void check_like_batch(const py::array &a, const char *name, bool is_f32, int ndim) {
    if (is_f32)
        check_array<float>(a, name, "float32 (same as batch)", ndim);
    else
        check_array<std::uint8_t>(a, name, "uint8 (same as batch)", ndim);
}

void composite(const py::object &batch_obj, const py::object &patches_obj,
               const py::object &ys_obj, const py::object &xs_obj, const py::object &lut_obj,
               const py::object &src_obj, bool nchw) {
    py::array batch = as_array(batch_obj, "batch"), patches = as_array(patches_obj, "patches");
    py::array ys = as_array(ys_obj, "ys"), xs = as_array(xs_obj, "xs");
    py::array lut = as_array(lut_obj, "lut"), src = as_array(src_obj, "src");
    const bool is_f32 = check_batch(batch);
    const Layout g = layout_of(batch, nchw);
    check_array<std::uint8_t>(patches, "patches", "uint8", 4);
    const py::ssize_t K = patches.shape(1);
    if (patches.shape(2) != K || patches.shape(3) != 3)
        fail("patches must have shape [B, K, K, 3], got " + shape_str(patches));
    const py::ssize_t count = check_corner_arrays(ys, xs, batch.shape(0));
    if (patches.shape(0) != count)
        fail("patches has " + std::to_string(patches.shape(0)) + " items but ys has " +
             std::to_string(count));
    check_corner_bounds(ys, xs, K, g);
    check_like_batch(lut, "lut", is_f32, 2);
    if (lut.shape(0) != g.C || lut.shape(1) != kLevels)
        fail("lut must have shape [C, 256] = [" + std::to_string(g.C) + ", 256], got " +
             shape_str(lut));
    check_array<std::int64_t>(src, "src", "int64", 1);
    if (src.shape(0) != g.C)
        fail("src must have shape (" + std::to_string(g.C) + ",), got " + shape_str(src));
    const auto *sp = static_cast<const std::int64_t *>(src.data());
    for (py::ssize_t c = 0; c < g.C; ++c)
        if (sp[c] < 0 || sp[c] > 2)
            fail("src values must be patch channels 0, 1 or 2, got " + std::to_string(sp[c]));

    const auto *pp = static_cast<const std::uint8_t *>(patches.data());
    const auto *yp = static_cast<const std::int64_t *>(ys.data());
    const auto *xp = static_cast<const std::int64_t *>(xs.data());
    py::gil_scoped_release release;
    if (is_f32)
        composite_loop(static_cast<float *>(batch.mutable_data()), pp, yp, xp,
                       static_cast<const float *>(lut.data()), sp, count, K, g);
    else
        composite_loop(static_cast<std::uint8_t *>(batch.mutable_data()), pp, yp, xp,
                       static_cast<const std::uint8_t *>(lut.data()), sp, count, K, g);
}

void restore(const py::object &batch_obj, const py::object &base_obj, const py::object &ys_obj,
             const py::object &xs_obj, py::ssize_t K, bool nchw) {
    py::array batch = as_array(batch_obj, "batch"), base = as_array(base_obj, "base");
    py::array ys = as_array(ys_obj, "ys"), xs = as_array(xs_obj, "xs");
    const bool is_f32 = check_batch(batch);
    const Layout g = layout_of(batch, nchw);
    check_like_batch(base, "base", is_f32, 3);
    for (int d = 0; d < 3; ++d)
        if (base.shape(d) != batch.shape(d + 1))
            fail("base must have shape batch.shape[1:], got " + shape_str(base) +
                 " for batch " + shape_str(batch));
    const py::ssize_t count = check_corner_arrays(ys, xs, batch.shape(0));
    check_corner_bounds(ys, xs, K, g);

    const auto *yp = static_cast<const std::int64_t *>(ys.data());
    const auto *xp = static_cast<const std::int64_t *>(xs.data());
    py::gil_scoped_release release;
    if (is_f32)
        restore_loop(static_cast<float *>(batch.mutable_data()),
                     static_cast<const float *>(base.data()), yp, xp, count, K, g);
    else
        restore_loop(static_cast<std::uint8_t *>(batch.mutable_data()),
                     static_cast<const std::uint8_t *>(base.data()), yp, xp, count, K, g);
}

}  // namespace
PYBIND11_MODULE(_sampling, m) {
    m.doc() = "Sampling and compositing kernels of infolens (see runtime/kernels.py).";
    m.def("sample_categorical", &sample_categorical, py::arg("probs"), py::arg("uniforms"),
          "Inverse-CDF draws: probs float32 [P, M, 256], uniforms float32 [P, N, M] in [0, 1)"
          " -> uint8 [P, N, M].");
    m.def("sample_logistic_mixture", &sample_logistic_mixture, py::arg("hyp"), py::arg("comp"),
          py::arg("loc"), py::arg("scale"), py::arg("coeff"), py::arg("u_hyp"), py::arg("u_comp"),
          py::arg("z"),
          "Logistic-mixture draws (see runtime/kernels.py): float64 hyp [B, S], comp [B, S, Q, M],"
          " loc/scale/coeff [B, S, Q, 3, M], u_hyp [B, N], u_comp [B, N, Q], z [B, N, Q, 3]"
          " -> uint8 [B, N, Q, 3].");
    m.def("composite", &composite, py::arg("batch"), py::arg("patches"), py::arg("ys"),
          py::arg("xs"), py::arg("lut"), py::arg("src"), py::arg("nchw"),
          "In place: batch[b] patch region := lut[c, patches[b, ..., src[c]]] for b < len(patches).");
    m.def("restore", &restore, py::arg("batch"), py::arg("base"), py::arg("ys"), py::arg("xs"),
          py::arg("K"), py::arg("nchw"),
          "In place: batch[b] patch region := the same region of base for b < len(ys).");
}
