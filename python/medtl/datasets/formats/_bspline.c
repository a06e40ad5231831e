/* Cubic B-spline interpolation of a float32 volume: prefilter and plane sampling.
 *
 * medtl_prefilter reproduces scipy.ndimage.spline_filter(order=3, mode="mirror") in single
 * precision (the initialisations are scipy's, summed in double). medtl_sample_planes evaluates
 * the interpolating spline on regular 2D grids laid anywhere in the volume: the 2.5D views of
 * the lymph-node study. Boundaries are ITK's (BSplineInterpolateImageFunction, what SimpleITK's
 * sitkBSpline resampling does): mirror for the coefficients and for taps beyond them, and the
 * padding value outside the volume's voxels. Built at run time by
 * medtl/datasets/formats/bspline.py (cc -O3 -shared).
 */
#include <math.h>
#include <string.h>

#define POLE (-0.26794919243112270) /* sqrt(3) - 2, the pole of the cubic B-spline */

/* Filter `width` parallel lines of length n in place: sample i of line l is at
 * base[i * step + l]. The inner loops run over l, so they vectorise for width > 1. */
static void filter_lines(float *base, long n, long step, long width, double *acc) {
    const double z = POLE;
    const float zf = (float)POLE;
    const float gain = (float)((1.0 - z) * (1.0 - 1.0 / z));
    long i, l;
    if (n < 2) return;
    for (i = 0; i < n; ++i) {
        float *row = base + i * step;
        for (l = 0; l < width; ++l) row[l] *= gain;
    }
    /* causal initialisation, mirror boundary */
    {
        const double z_n_1 = pow(z, (double)(n - 1));
        double z_i = z;
        float *first = base, *last = base + (n - 1) * step;
        for (l = 0; l < width; ++l) acc[l] = (double)first[l] + z_n_1 * (double)last[l];
        for (i = 1; i < n - 1; ++i) {
            const float *a = base + i * step, *b = base + (n - 1 - i) * step;
            for (l = 0; l < width; ++l) acc[l] += z_i * ((double)a[l] + z_n_1 * (double)b[l]);
            z_i *= z;
            if (fabs(z_i) < 1e-300) break;
        }
        for (l = 0; l < width; ++l) first[l] = (float)(acc[l] / (1.0 - z_n_1 * z_n_1));
    }
    for (i = 1; i < n; ++i) {
        float *cur = base + i * step;
        const float *prev = cur - step;
        for (l = 0; l < width; ++l) cur[l] += zf * prev[l];
    }
    /* anti-causal initialisation, mirror boundary */
    {
        float *last = base + (n - 1) * step;
        const float *before = last - step;
        for (l = 0; l < width; ++l)
            last[l] = (float)((z * before[l] + last[l]) * z / (z * z - 1.0));
    }
    for (i = n - 2; i >= 0; --i) {
        float *cur = base + i * step;
        const float *next = cur + step;
        for (l = 0; l < width; ++l) cur[l] = zf * (next[l] - cur[l]);
    }
}

/* In place, along x, then y, then z; `scratch` holds ny * nx doubles. */
void medtl_prefilter(float *data, long nz, long ny, long nx, double *scratch) {
    long z, y;
    const long plane = ny * nx;
    for (z = 0; z < nz; ++z)
        for (y = 0; y < ny; ++y) filter_lines(data + z * plane + y * nx, nx, 1, 1, scratch);
    for (z = 0; z < nz; ++z) filter_lines(data + z * plane, ny, nx, nx, scratch);
    filter_lines(data, nz, plane, plane, scratch);
}

static inline void weights(double x, long *base, float w[4]) {
    const double f = floor(x);
    const float t = (float)(x - f), t2 = t * t, t3 = t2 * t, u = 1.0f - t;
    *base = (long)f - 1;
    w[0] = u * u * u / 6.0f;
    w[1] = (3.0f * t3 - 6.0f * t2 + 4.0f) / 6.0f;
    w[2] = (-3.0f * t3 + 3.0f * t2 + 3.0f * t + 1.0f) / 6.0f;
    w[3] = t3 / 6.0f;
}

/* Mirror boundary (whole-sample symmetric, ITK's and scipy's "mirror"): -1 -> 1, n -> n - 2. */
static inline long mirror(long v, long n) {
    const long period = 2 * (n - 1);
    if (n == 1) return 0;
    v = v < 0 ? -v : v;
    v %= period;
    return v >= n ? period - v : v;
}

/* The volume's voxels cover [lo, hi) in continuous index (z, y, x): inside[0..2] = lo,
 * inside[3..5] = hi. Outside it a sample is the padding value (as ITK's IsInsideBuffer). */
static inline int outside(const double *inside, double z, double y, double x) {
    return z < inside[0] || y < inside[1] || x < inside[2] || z >= inside[3] || y >= inside[4]
        || x >= inside[5];
}

typedef float v4 __attribute__((vector_size(16)));

static float eval_point(const float *c, long nz, long ny, long nx, double pz, double py,
                        double px) {
    long bz, by, bx, k, j, i;
    float wz[4], wy[4], wx[4];
    weights(pz, &bz, wz);
    weights(py, &by, wy);
    weights(px, &bx, wx);
    if (bz >= 0 && by >= 0 && bx >= 0 && bz + 3 < nz && by + 3 < ny && bx + 3 < nx) {
        const long plane = ny * nx;
        const float *p = c + bz * plane + by * nx + bx;
        v4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
        for (k = 0; k < 4; ++k) {
            for (j = 0; j < 4; ++j) {
                v4 row, wv;
                const float s = wz[k] * wy[j];
                memcpy(&row, p + k * plane + j * nx, sizeof row);
                wv = (v4){s, s, s, s};
                acc += wv * row;
            }
        }
        return acc[0] * wx[0] + acc[1] * wx[1] + acc[2] * wx[2] + acc[3] * wx[3];
    }
    /* near the border: taps beyond the coefficients mirror back (ITK's rule) */
    {
        float sum = 0.0f;
        for (k = 0; k < 4; ++k)
            for (j = 0; j < 4; ++j)
                for (i = 0; i < 4; ++i)
                    sum += wz[k] * wy[j] * wx[i]
                           * c[(mirror(bz + k, nz) * ny + mirror(by + j, ny)) * nx
                               + mirror(bx + i, nx)];
        return sum;
    }
}

/* Evaluate P planes of H x W points. Plane p, row r, column q lies at the continuous index
 * origin[p] + r * dv[p] + q * du[p]; vectors are (z, y, x) triples in voxel units; points
 * outside `inside` are `fill`. */
void medtl_sample_planes(const float *coef, long nz, long ny, long nx, const double *origin,
                         const double *du, const double *dv, long P, long H, long W,
                         const double *inside, float fill, float *out) {
    long p, r, q;
    for (p = 0; p < P; ++p) {
        const double *o = origin + 3 * p, *u = du + 3 * p, *v = dv + 3 * p;
        for (r = 0; r < H; ++r) {
            double z = o[0] + r * v[0], y = o[1] + r * v[1], x = o[2] + r * v[2];
            float *dst = out + (p * H + r) * W;
            for (q = 0; q < W; ++q) {
                dst[q] = outside(inside, z, y, x) ? fill : eval_point(coef, nz, ny, nx, z, y, x);
                z += u[0];
                y += u[1];
                x += u[2];
            }
        }
    }
}

/* Arbitrary points (n x 3, z y x), for tests and non-planar use. */
void medtl_sample_points(const float *coef, long nz, long ny, long nx, const double *points,
                         long n, const double *inside, float fill, float *out) {
    long i;
    for (i = 0; i < n; ++i) {
        const double *pt = points + 3 * i;
        out[i] = outside(inside, pt[0], pt[1], pt[2])
                     ? fill : eval_point(coef, nz, ny, nx, pt[0], pt[1], pt[2]);
    }
}

/* As medtl_sample_planes, windowed to 8 bits on the fly: round((v - lo) * scale) clamped to
 * 0..255 (the same float32 arithmetic as medtl.datasets.views.window_to_uint8). */
void medtl_sample_planes_u8(const float *coef, long nz, long ny, long nx, const double *origin,
                            const double *du, const double *dv, long P, long H, long W,
                            const double *inside, float fill, float lo, float scale,
                            unsigned char *out) {
    long p, r, q;
    for (p = 0; p < P; ++p) {
        const double *o = origin + 3 * p, *u = du + 3 * p, *v = dv + 3 * p;
        for (r = 0; r < H; ++r) {
            double z = o[0] + r * v[0], y = o[1] + r * v[1], x = o[2] + r * v[2];
            unsigned char *dst = out + (p * H + r) * W;
            for (q = 0; q < W; ++q) {
                const float value =
                    outside(inside, z, y, x) ? fill : eval_point(coef, nz, ny, nx, z, y, x);
                const float s = rintf((value - lo) * scale);
                dst[q] = (unsigned char)(s < 0.0f ? 0.0f : (s > 255.0f ? 255.0f : s));
                z += u[0];
                y += u[1];
                x += u[2];
            }
        }
    }
}
