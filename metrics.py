"""Image-set quality metrics: SWD, FID, KID, precision/recall, MS-SSIM diversity, the classifier
two-sample test (C2ST, with AUROC) and the noise share of a generated slice; and the quality of one
image against another (PSNR, SSIM).

Lives here: pure functions on NumPy arrays (SSIM's terms, `ssim_terms`, on TF tensors, so that
projection.py's MS-SSIM distance can take their gradient). Images are float [N, H, W, C] in [-1, 1]
(C = 1 for MRI; 3 works too); features are float [N, D]. Every random choice takes a `seed`, so a metric
of the same inputs always gives the same number. Not here: loading checkpoints or data,
generating images, writing reports (evaluation.py).

Which metric needs what:
- SWD needs nothing but the images: it is the default and cheap enough for the training loop.
- FID, KID, precision and recall compare InceptionV3 pool features (`inception_features`), whose
  ImageNet weights Keras downloads once. Without them `FeaturesUnavailable` says so in one line.
  FID is biased upwards for small sets (it needs N well above D = 2048 to be comparable with
  papers); KID is unbiased and the better number for a few hundred or thousand slices.
- Diversity (mean MS-SSIM of random pairs) needs nothing; compare generated with real sets.
"""

import functools
import math
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import pixels

# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _check_images(images, name):
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] < 2 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{name}: expected at least 2 square images [N, H, W, C], got shape {images.shape}")
    return images


def _check_pair(real, fake):
    real, fake = _check_images(real, "real images"), _check_images(fake, "generated images")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"generated images are {fake.shape[1:]} but the real ones are {real.shape[1:]}: "
                         f"compare sets of the same resolution and channels")
    return real, fake


def _check_features(real, fake, minimum=2):
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or real.shape[1:] != fake.shape[1:] or min(len(real), len(fake)) < minimum:
        raise ValueError(f"expected two feature sets [N, D] with the same D and N >= {minimum}, "
                         f"got {real.shape} and {fake.shape}")
    return real, fake


# ---------------------------------------------------------------------------------------------
# Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, ProGAN, sec. 5)
# ---------------------------------------------------------------------------------------------

BINOMIAL_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)  # 5x5 Gaussian = outer product / 256


def gaussian_blur(x):
    """Separable 5x5 binomial filter [1 4 6 4 1]^2 / 256 with mirrored borders (cv2/scipy 'reflect101').
    [N, H, W, C] -> [N, H, W, C]"""
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (2, 2), (0, 0), (0, 0)), mode="reflect")       # [N, H+4, W, C]
    x = sum(k * padded[:, i:i + h] for i, k in enumerate(BINOMIAL_5))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (0, 0)), mode="reflect")       # [N, H, W+4, C]
    return sum(k * padded[:, :, i:i + w] for i, k in enumerate(BINOMIAL_5))


def pyr_down(x):
    """Blur, then keep every second pixel, as cv2.pyrDown. [N, H, W, C] -> [N, H/2, W/2, C]"""
    return gaussian_blur(x)[:, ::2, ::2]


def pyr_up(x):
    """Insert zeros between pixels, then blur with 4x the filter, as cv2.pyrUp. [N, H, W, C] -> [N, 2H, 2W, C]"""
    n, h, w, c = x.shape
    up = np.zeros((n, 2 * h, 2 * w, c), x.dtype)
    up[:, ::2, ::2] = x
    return 4.0 * gaussian_blur(up)


def laplacian_pyramid(images, min_resolution=16):
    """Band-pass levels G_i - up(G_{i+1}) from full resolution down to `min_resolution`, whose level is
    the low-pass residual G_last itself (ProGAN's `generate_laplacian_pyramid`). Images smaller than
    `min_resolution` give one level. [N, R, R, C] -> [[N, R, R, C], [N, R/2, R/2, C], ...]"""
    pyramid = [np.asarray(images, np.float32)]
    while pyramid[-1].shape[1] >= 2 * min_resolution and pyramid[-1].shape[1] % 2 == 0:
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def patch_descriptors(level, patches_per_image, patch_size, seed):
    """`patches_per_image` random patch_size x patch_size neighbourhoods from every image, at positions
    drawn from `seed` alone, so two sets of the same shape are sampled at the same places.
    [N, h, w, C] -> [N * patches_per_image, patch_size, patch_size, C]"""
    n, h, w, _ = level.shape
    if min(h, w) < patch_size:
        raise ValueError(f"images of {h}x{w} are smaller than the {patch_size}x{patch_size} SWD patches")
    rng = np.random.default_rng(seed)
    image = np.repeat(np.arange(n), patches_per_image)[:, None, None]           # [M, 1, 1]
    top = rng.integers(0, h - patch_size + 1, size=n * patches_per_image)[:, None, None]
    left = rng.integers(0, w - patch_size + 1, size=n * patches_per_image)[:, None, None]
    offset = np.arange(patch_size)
    return level[image, top + offset[None, :, None], left + offset[None, None, :]]  # [M, p, p, C]


def wasserstein_1d(u, v):
    """Wasserstein-1 distance between the empirical distributions of the last axis of u and v:
    W1 = integral over t in (0, 1] of |F_u^-1(t) - F_v^-1(t)| dt, from sorted samples. For n = m this is
    mean |sort(u) - sort(v)|; otherwise the quantile functions are compared on the union of the
    breakpoints i/n and j/m (exact, integer arithmetic). u [..., n], v [..., m] -> [...]"""
    return _wasserstein_1d_sorted(np.sort(u, axis=-1), np.sort(v, axis=-1))


def _wasserstein_1d_sorted(u, v):
    n, m = u.shape[-1], v.shape[-1]
    if n == m:
        return np.mean(np.abs(u - v), axis=-1)
    ends = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)        # t * n * m, interval ends
    widths = np.diff(ends, prepend=0) / (n * m)
    iu, iv = (ends + m - 1) // m - 1, (ends + n - 1) // n - 1                   # ceil(t n) - 1, ceil(t m) - 1
    return np.sum(widths * np.abs(u[..., iu] - v[..., iv]), axis=-1)


def sliced_wasserstein(a, b, num_directions, seed, chunk=128):
    """Sliced Wasserstein distance (Rabin et al. 2011; ProGAN's `sliced_wasserstein`): the mean over
    random unit directions d of W1(a.d, b.d). a [n, D], b [m, D] -> float"""
    rng = np.random.default_rng(seed)
    total = 0.0
    for start in range(0, num_directions, chunk):  # chunks keep the projections at [chunk, n] floats
        dirs = rng.standard_normal((min(chunk, num_directions - start), a.shape[1]))   # [K, D]
        dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)
        proj_a, proj_b = dirs @ a.T, dirs @ b.T                                         # [K, n], [K, m]
        proj_a.sort(axis=-1)  # in place: these are large and our own
        proj_b.sort(axis=-1)
        total += float(np.sum(_wasserstein_1d_sorted(proj_a, proj_b)))
    return total / num_directions


def swd(real, fake, patches_per_image=128, patch_size=7, repeats=4, directions_per_repeat=128,
        min_resolution=16, normalization="real", seed=0):
    """Sliced Wasserstein distance between Laplacian-pyramid patch distributions, x 1e3 (Karras et al.
    2018, "Progressive growing of GANs", sec. 5 and their `metrics/sliced_wasserstein.py`).

    Per pyramid level (full resolution down to 16x16): `patches_per_image` random 7x7 neighbourhoods
    per image, each channel normalised to zero mean and unit variance, then the SWD over
    repeats x directions_per_repeat random unit projections. Both sets are sampled at the same patch
    positions (common random numbers), so differences are not drowned in sampling noise. Lower is
    better: a set against itself scores exactly 0, two samples of one distribution a small floor.

    normalization: "real" standardises both sets with the real patches' mean and std, so a global
    brightness or contrast change shows; "each" standardises each set by its own statistics, exactly
    as ProGAN does, which makes the metric blind to such changes (use it to compare with papers).

    real [N, R, R, C], fake [M, R, R, C] in [-1, 1] -> {"64": ..., "32": ..., "16": ..., "avg": ...}
    """
    real, fake = _check_pair(real, fake)
    if normalization not in ("real", "each"):
        raise ValueError(f"normalization must be 'real' or 'each', got {normalization!r}")
    result = {}
    for level, (real_level, fake_level) in enumerate(zip(laplacian_pyramid(real, min_resolution),
                                                         laplacian_pyramid(fake, min_resolution))):
        desc_real = patch_descriptors(real_level, patches_per_image, patch_size, (seed, level))
        desc_fake = patch_descriptors(fake_level, patches_per_image, patch_size, (seed, level))
        mean, std = _channel_stats(desc_real)
        fake_mean, fake_std = _channel_stats(desc_fake) if normalization == "each" else (mean, std)
        desc_real, desc_fake = (desc_real - mean) / std, (desc_fake - fake_mean) / fake_std
        a = desc_real.reshape(len(desc_real), -1).astype(np.float32)                # [M, p*p*C]
        b = desc_fake.reshape(len(desc_fake), -1).astype(np.float32)
        result[str(real_level.shape[1])] = 1e3 * sliced_wasserstein(
            a, b, repeats * directions_per_repeat, (seed, level, 1))
    result["avg"] = float(np.mean(list(result.values())))
    return result


def _channel_stats(desc):
    """Mean and std per channel over all patches and pixels. [M, p, p, C] -> [C], [C]"""
    mean = desc.mean(axis=(0, 1, 2), dtype=np.float64)
    std = desc.std(axis=(0, 1, 2), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Fréchet Inception distance (Heusel et al. 2017)
# ---------------------------------------------------------------------------------------------

def gaussian_stats(features):
    """Mean and (unbiased) covariance of features. [N, D] -> [D], [D, D]"""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def sqrtm_psd(s):
    """Symmetric square root of a symmetric positive semi-definite matrix: Q diag(sqrt(max(l, 0))) Q^T
    from s = Q diag(l) Q^T (eigh). Negative round-off eigenvalues are clipped. [D, D] -> [D, D]"""
    eigenvalues, q = np.linalg.eigh((s + s.T) / 2.0)
    return (q * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ q.T


def trace_sqrt_product(s1, s2):
    """tr sqrt(S1 S2) for covariances S1, S2. S1 S2 is similar to the symmetric PSD matrix
    M = sqrt(S1) S2 sqrt(S1) (conjugate by sqrt(S1)), so tr sqrt(S1 S2) = sum_i sqrt(eig_i(M)):
    NumPy's eigvalsh replaces scipy.linalg.sqrtm and never returns complex parts. -> float"""
    root = sqrtm_psd(s1)
    eigenvalues = np.linalg.eigvalsh(root @ s2 @ root)
    return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(mu1, s1, mu2, s2):
    """Fréchet (W2^2) distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; FID, Heusel
    et al. 2017): |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2). -> float"""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))


def fid(real_features, fake_features):
    """FID between Gaussians fitted to two feature sets. [N, D], [M, D] -> float (0 for identical sets)"""
    real_features, fake_features = _check_features(real_features, fake_features)
    return frechet_distance(*gaussian_stats(real_features), *gaussian_stats(fake_features))


# ---------------------------------------------------------------------------------------------
# Kernel Inception distance (Binkowski et al. 2018, "Demystifying MMD GANs")
# ---------------------------------------------------------------------------------------------

def polynomial_kernel(x, y):
    """k(x, y) = (x.y / D + 1)^3, the KID kernel. [n, D], [m, D] -> [n, m]"""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the cubic polynomial kernel, for equally many
    samples m: sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (m (m-1))
    - 2 sum_{i,j} k(x_i, y_j) / m^2. Can be slightly negative for equal distributions. [m, D], [m, D] -> float"""
    return mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def mmd2_from_kernels(k_xx, k_yy, k_xy):
    """`mmd2_unbiased` from the kernel matrices [m, m], [m, m], [m, m] -> float"""
    m = len(k_xx)
    same = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(same - 2.0 * k_xy.mean())


def kid(real_features, fake_features, num_subsets=100, subset_size=1000, seed=0, max_pool=4096):
    """KID: the mean of `mmd2_unbiased` over `num_subsets` random subsets of min(subset_size, N, M)
    samples from each set, as in Binkowski et al.'s reference code. The kernel matrices are computed
    once and indexed per subset; sets larger than `max_pool` are first subsampled to bound their
    memory (every subset stays uniformly random, so the mean stays unbiased). [N, D], [M, D] -> float"""
    x, y = _check_features(real_features, fake_features)
    rng = np.random.default_rng(seed)
    x = x[rng.choice(len(x), max_pool, replace=False)] if len(x) > max_pool else x
    y = y[rng.choice(len(y), max_pool, replace=False)] if len(y) > max_pool else y
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    size = min(subset_size, len(x), len(y))
    values = []
    for _ in range(num_subsets):
        i, j = rng.choice(len(x), size, replace=False), rng.choice(len(y), size, replace=False)
        values.append(mmd2_from_kernels(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)]))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------
# Improved precision and recall (Kynkäänniemi et al. 2019)
# ---------------------------------------------------------------------------------------------

def pairwise_distances(a, b):
    """Euclidean distances via |a|^2 + |b|^2 - 2 a.b, in float64. [n, D], [m, D] -> [n, m]"""
    squared = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(squared, 0.0))


def knn_radii(features, k=3, batch_size=1024):
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded).
    [N, D] -> [N]"""
    radii = []
    for start in range(0, len(features), batch_size):
        d = pairwise_distances(features[start:start + batch_size], features)   # [b, N]
        radii.append(np.partition(d, k, axis=1)[:, k])                           # column 0 is the point itself
    return np.concatenate(radii)


def manifold_coverage(support, radii, queries, batch_size=1024):
    """Fraction of `queries` inside the manifold of `support`: the union of balls of radius radii_i
    around each support point. [N, D], [N], [M, D] -> float"""
    inside = [np.any(pairwise_distances(queries[start:start + batch_size], support) <= radii[None, :], axis=1)
              for start in range(0, len(queries), batch_size)]                   # [b] each
    return float(np.mean(np.concatenate(inside)))


def precision_recall(real_features, fake_features, k=3):
    """Improved precision and recall (Kynkäänniemi et al. 2019, sec. 2): precision is the fraction of
    generated samples inside the real manifold (k-NN balls around real samples), recall the fraction
    of real samples inside the generated manifold. Both in [0, 1]; 1 and 1 for identical sets.
    The paper uses VGG-16 features; here they are whatever `feature_fn` gives (InceptionV3 by default).
    [N, D], [M, D] -> (precision, recall)"""
    real_features, fake_features = _check_features(real_features, fake_features, minimum=k + 1)
    precision = manifold_coverage(real_features, knn_radii(real_features, k), fake_features)
    recall = manifold_coverage(fake_features, knn_radii(fake_features, k), real_features)
    return precision, recall


# ---------------------------------------------------------------------------------------------
# One image against another: PSNR, and SSIM (Wang et al. 2004)
# ---------------------------------------------------------------------------------------------

def gaussian_window(size, sigma=1.5):
    """Normalised 2D Gaussian window [size, size], as tf.image.ssim uses (sigma 1.5 pixels)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (x / sigma) ** 2)
    window = np.outer(g, g)
    return (window / window.sum()).astype(np.float32)


def ssim_terms(x, y, filter_size, k1=0.01, k2=0.03):
    """SSIM's luminance * contrast-structure and contrast-structure terms (Wang et al. 2004), averaged
    over the window positions inside the image, as tf.image.ssim. x, y [B, H, W, C] in [0, 1] ->
    (ssim [B, C], cs [B, C])"""
    channels = x.shape[-1]
    window = tf.constant(np.tile(gaussian_window(filter_size)[:, :, None, None], [1, 1, channels, 1]))
    mean = lambda v: tf.nn.depthwise_conv2d(v, window, [1, 1, 1, 1], "VALID")   # noqa: E731
    c1, c2 = k1 ** 2, k2 ** 2
    mu_x, mu_y = mean(x), mean(y)
    luminance = (2.0 * mu_x * mu_y + c1) / (tf.square(mu_x) + tf.square(mu_y) + c1)
    cs = (2.0 * (mean(x * y) - mu_x * mu_y) + c2) / (
        mean(tf.square(x) + tf.square(y)) - tf.square(mu_x) - tf.square(mu_y) + c2)
    return tf.reduce_mean(luminance * cs, axis=[1, 2]), tf.reduce_mean(cs, axis=[1, 2])


def psnr(images, targets):
    """Peak signal-to-noise ratio in dB on [0, 1] pixels: 10 log10(1 / MSE). [B, R, R, C] x2 in [-1, 1] -> [B]"""
    a = np.clip(np.asarray(images, np.float64), -1.0, 1.0)
    b = np.clip(np.asarray(targets, np.float64), -1.0, 1.0)
    mse = np.mean(((a - b) / 2.0) ** 2, axis=(1, 2, 3))
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def ssim(images, targets):
    """SSIM (Wang et al. 2004) on [0, 1] pixels, Gaussian window of 11 (smaller images: their size).
    [B, R, R, C] x2 in [-1, 1] -> [B]"""
    filter_size = min(11, int(np.shape(images)[1]))
    a, b = (pixels.to_zero_one(tf.constant(x, tf.float32)) for x in (images, targets))
    return tf.image.ssim(a, b, max_val=1.0, filter_size=filter_size).numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Diversity: mean pairwise MS-SSIM (Wang et al. 2003; used for GANs by Odena et al. 2017)
# ---------------------------------------------------------------------------------------------

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first


def ms_ssim_settings(size, filter_size=11):
    """Gaussian window and scale weights MS-SSIM can use on size x size images: every scale must be at
    least as large as the window, so 64 px allows 3 of the paper's 5 scales (64, 32, 16), whose
    weights are renormalised to sum to 1. Below 22 px this is plain SSIM (one scale), and below
    11 px the window shrinks to the image. -> (filter_size, power_factors)"""
    filter_size = min(filter_size, size)
    scales = max(1, min(len(MS_SSIM_WEIGHTS), 1 + int(math.floor(math.log2(size / filter_size)))))
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    return filter_size, tuple(float(w) for w in weights / weights.sum())


def mean_pairwise_ms_ssim(images, num_pairs=1000, seed=0, batch_size=250):
    """Mean MS-SSIM of `num_pairs` random pairs of different images of a set. 1 means every pair is
    identical (mode collapse); lower means more varied. Compare a generated set with a real one.
    [N, R, R, C] in [-1, 1] -> float"""
    images = _check_images(images, "images")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(images), num_pairs)
    second = (first + rng.integers(1, len(images), num_pairs)) % len(images)    # never the same index
    filter_size, weights = ms_ssim_settings(images.shape[1])
    unit = pixels.to_zero_one(images)                  # TF's SSIM expects non-negative pixels
    scores = [tf.image.ssim_multiscale(unit[first[i:i + batch_size]], unit[second[i:i + batch_size]],
                                       max_val=1.0, power_factors=weights, filter_size=filter_size).numpy()
              for i in range(0, num_pairs, batch_size)]
    return float(np.mean(np.concatenate(scores)))


# ---------------------------------------------------------------------------------------------
# Classifier two-sample test (Lopez-Paz & Oquab 2017): can a small CNN tell the sets apart?
# ---------------------------------------------------------------------------------------------

def auroc(scores, labels):
    """Area under the ROC curve = P(score of a positive > score of a negative) + P(tie) / 2
    (Mann-Whitney U with average ranks for ties). Any shapes; labels boolean -> float"""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs positives and negatives, got {positives} and {negatives}")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)                 # 1-based average ranks
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def c2st_classifier(resolution, channels, seed):
    """A small CNN from scratch: 3x3 convolutions of stride 2 (16, 32, 64, 64, ... channels, leaky
    ReLU) down to 8x8 (or the image, if smaller), flattened, then one logit. Flattening keeps where
    a feature is, so a slice with its anatomy in the wrong place is seen too. [N, R, R, C] -> [N, 1]"""
    layers = [keras.Input((resolution, resolution, channels))]
    size, width = resolution, 16
    while size > 8:
        layers += [keras.layers.Conv2D(width, 3, strides=2, padding="same",
                                       kernel_initializer=keras.initializers.HeNormal(seed + len(layers))),
                   keras.layers.LeakyReLU(0.2)]
        size, width = (size + 1) // 2, min(2 * width, 64)
    layers += [keras.layers.Flatten(),
               keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + len(layers)))]
    return keras.Sequential(layers)


C2ST_FOLDS = 4                  # cross-validation folds of C2ST (by subject where known)


def c2st_folds(count, folds, rng, groups=None):
    """Fold of each of `count` images: at random, evenly (stratified); with `groups` (one label per
    image, e.g. its subject), each group whole in one fold, the groups dealt out at random, so a
    classifier is always tested on groups it never saw. [count] -> int [count]"""
    if groups is None:
        return rng.permutation(count) % folds
    names = np.unique(groups)
    if len(names) < folds:
        raise ValueError(f"C2ST with {folds} folds by group needs at least {folds} groups, got {len(names)}")
    fold_of = {names[j]: i % folds for i, j in enumerate(rng.permutation(len(names)))}
    return np.array([fold_of[g] for g in groups])


def c2st(real, fake, folds=C2ST_FOLDS, epochs=20, batch_size=32, learning_rate=1e-3, seed=0, max_images=1000,
         real_groups=None, fake_groups=None):
    """Classifier two-sample test: the ROC AUC with which a small CNN (`c2st_classifier`), trained
    from scratch, tells `fake` from `real` on images it was not trained on, averaged over `folds`
    folds of cross-validation. 0.5: it cannot tell them apart; 1.0: it always can. Unlike SWD, which
    compares 7x7 patches, it sees whole slices, so right texture on wrong anatomy does not pass.

    Both sets are cut to the same size, at most `max_images` each (balanced classes, bounded cost:
    about folds * epochs * (folds - 1) / folds * 2 * n image passes). Every random choice (which
    images, fold membership, batch order, initial weights) follows `seed`, so the same inputs give
    the same AUC.

    `real_groups`, `fake_groups`: one label per image (its subject) to keep each group in one fold
    (`c2st_folds`). With few subjects the CNN learns their heads: real slices of subjects it saw in
    training are told from anything else, new subjects' real slices too. Grouped folds test it on
    subjects it never saw, so only what tells generated slices from real ones in general counts.
    [N, R, R, C], [M, R, R, C] in [-1, 1] -> float"""
    real, fake = _check_pair(real, fake)
    if folds < 2:
        raise ValueError(f"C2ST needs at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake), max_images)
    if n < folds:
        raise ValueError(f"C2ST with {folds} folds needs at least {folds} images per set, got {n}")
    chosen_real, chosen_fake = rng.permutation(len(real))[:n], rng.permutation(len(fake))[:n]
    x = np.concatenate([real[chosen_real], fake[chosen_fake]])
    y = np.r_[np.zeros(n), np.ones(n)].astype(np.float32)                       # 1: generated
    fold = np.concatenate([c2st_folds(n, folds, rng, _chosen(real_groups, chosen_real)),
                           c2st_folds(n, folds, rng, _chosen(fake_groups, chosen_fake))])
    # One model and one traced training step serve every fold: each starts from the same weights
    # and a reset optimizer. A loop of steps, not fit(): its per-epoch overhead was 60% of the cost.
    model = c2st_classifier(x.shape[1], x.shape[3], seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    start = model.get_weights()

    @tf.function
    def train_step(images, targets):                                             # [b, R, R, C], [b]
        with tf.GradientTape() as tape:
            logits = model(images, training=True)[:, 0]
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    scores = []
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model.set_weights(start)
        for v in optimizer.variables:                  # step count and moments; the learning rate is set again
            v.assign(np.zeros(v.shape, v.dtype))
        optimizer.learning_rate = learning_rate
        batch = min(batch_size, len(train))
        for _ in range(epochs):
            order = train[rng.permutation(len(train))]
            for i in range(0, len(order) - batch + 1, batch):                   # whole batches: one trace
                train_step(x[order[i:i + batch]], y[order[i:i + batch]])
        logits = np.concatenate([model(x[test[i:i + 256]])[:, 0] for i in range(0, len(test), 256)])
        scores.append(auroc(logits, y[test] > 0.5))
    return float(np.mean(scores))


def _chosen(groups, chosen):
    return None if groups is None else np.asarray(groups)[chosen]


def split_halves(images, seed=0):
    """Two disjoint random halves of a set, for a metric's real-against-real floor. [N, ...] -> 2x [N // 2, ...]"""
    order = np.random.default_rng(seed).permutation(len(images))
    half = len(images) // 2
    return images[order[:half]], images[order[half:2 * half]]


# ---------------------------------------------------------------------------------------------
# How much of a generated slice the per-layer noise makes (the rest comes from the latent)
# ---------------------------------------------------------------------------------------------

def noise_variance_share(images):
    """The share of a generated slice's pixel variance that changes when only its noise is redrawn:
    for each latent, renders x[k] under K noise draws, by the law of total variance
    Var_{pixel,k}(x) = Var_pixel(mean_k x) + mean_pixel(Var_k x), and the share is the second term
    over the whole, averaged over latents. 0: the latent alone fixes the slice; 1: the noise makes
    all of it. [N, K, H, W, C] (N latents, K >= 2 noise draws each) -> float in [0, 1]"""
    images = np.asarray(images, np.float64)
    if images.ndim != 5 or images.shape[1] < 2:
        raise ValueError(f"expected renders [N latents, K >= 2 noise draws, H, W, C], got shape {images.shape}")
    flat = images.reshape(images.shape[0], images.shape[1], -1)                   # [N, K, P]
    from_noise = flat.var(axis=1).mean(axis=1)                                   # [N]
    total = flat.reshape(len(flat), -1).var(axis=1)                              # [N]
    return float(np.mean(from_noise / np.maximum(total, 1e-12)))


def noise_variance_shares(images, min_resolution=16):
    """`noise_variance_share` of the whole slices ("all") and of each Laplacian-pyramid level (keyed by
    its resolution, finest first, as SWD's). The whole-slice share is dominated by the head against
    the background; the levels say at which scale the noise draws the detail: a generator whose
    anatomy comes from the latent keeps the share low at the middle levels.
    [N, K, R, R, C] -> {"all": float, R: float, R/2: float, ...}"""
    shares = {"all": noise_variance_share(images)}                              # checks the shape
    images = np.asarray(images, np.float32)
    n, k = images.shape[:2]
    for level in laplacian_pyramid(images.reshape(n * k, *images.shape[2:]), min_resolution):
        shares[level.shape[1]] = noise_variance_share(level.reshape(n, k, *level.shape[1:]))
    return shares


# ---------------------------------------------------------------------------------------------
# InceptionV3 features (Szegedy et al. 2016), as FID/KID use them
# ---------------------------------------------------------------------------------------------

INCEPTION_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                 + INCEPTION_WEIGHTS_FILE)
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


class FeaturesUnavailable(RuntimeError):
    """InceptionV3 weights could not be loaded; the feature metrics are skipped, the others still run."""


def inception_inputs(images):
    """Grayscale tiled to RGB, bilinearly resized to 299 x 299 and scaled as InceptionV3's
    `preprocess_input` expects (pixels 0..255 -> [-1, 1]). [N, R, R, C] in [-1, 1] -> [N, 299, 299, 3]"""
    images = np.clip(np.asarray(images, np.float32), -1.0, 1.0)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)                                    # [N, R, R, 3]
    resized = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear")
    return keras.applications.inception_v3.preprocess_input(pixels.to_byte_range(resized.numpy()))


@functools.lru_cache(maxsize=2)
def inception_model(weights="imagenet"):
    """InceptionV3 without its classifier, global average pooled: [N, 299, 299, 3] -> [N, 2048].
    `weights`: "imagenet" (Keras downloads them once to ~/.keras/models), the path of a local
    notop .h5 file, or None (random: only for testing the plumbing)."""
    hint = (f"FID, KID, precision and recall are skipped; to compute them offline, download {INCEPTION_URL} "
            f"and pass its path as inception_weights (or copy it into ~/.keras/models)")
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise FeaturesUnavailable(f"no InceptionV3 weights file at {weights}: {hint}")
    try:
        return keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights,
                                              input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    except Exception as e:  # noqa: BLE001  Keras reports a failed download as a bare Exception.
        cause = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise FeaturesUnavailable(f"InceptionV3 weights unavailable ({cause}): {hint}") from None


def inception_features(images, weights="imagenet", batch_size=50):
    """InceptionV3 pool features of images. [N, R, R, C] in [-1, 1] -> [N, 2048] float64.
    Raises FeaturesUnavailable when the weights cannot be had (no internet, bad path)."""
    images = _check_images(images, "images")
    model = inception_model(weights)
    features = []
    for start in range(0, len(images), batch_size):
        features.append(np.asarray(model(inception_inputs(images[start:start + batch_size]), training=False)))
        done = min(start + batch_size, len(images))
        if done == len(images) or (start // batch_size) % 10 == 9:
            logging.info("InceptionV3 features: %d/%d images", done, len(images))
    return np.concatenate(features).astype(np.float64)
