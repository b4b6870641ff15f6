"""2-D layouts (UMAP) and clusters (HDBSCAN) for the feature map and the dataset map."""

from __future__ import annotations

import warnings

import numpy as np


def umap_2d(x, seed: int = 0, n_neighbors: int = 15, metric: str = "cosine", pca_dims: int = 64,
            fit_limit: int = 100_000) -> np.ndarray:
    """UMAP to 2-D, after PCA to `pca_dims` when the input is wide and dense; deterministic for a seed.

    Above `fit_limit` rows, UMAP is fitted on a seeded random subset and the other rows are
    placed with `transform`, so million-sample maps stay within time and memory.
    """
    import scipy.sparse as sp

    n = x.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    if not sp.issparse(x) and x.shape[1] > pca_dims and n > pca_dims:
        x = _pca(np.asarray(x, dtype=np.float32), pca_dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), metric=metric, random_state=seed,
                            init="spectral" if n > n_neighbors + 2 else "random", n_jobs=1)
        if n <= fit_limit:
            xy = reducer.fit_transform(x)
        else:
            fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=fit_limit, replace=False))
            xy = np.zeros((n, 2), dtype=np.float32)
            xy[fit_rows] = reducer.fit_transform(x[fit_rows])
            rest = np.setdiff1d(np.arange(n), fit_rows)
            for start in range(0, len(rest), fit_limit):
                rows = rest[start : start + fit_limit]
                xy[rows] = reducer.transform(x[rows])
    xy = np.nan_to_num(np.asarray(xy, dtype=np.float32))
    return xy


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred[: min(len(centred), 20000)], full_matrices=False)
    return centred @ vt[:dims].T


def hdbscan_labels(xy: np.ndarray, min_cluster_size: int = 0) -> np.ndarray:
    """Cluster ids per point (-1 for noise)."""
    n = len(xy)
    if n < 5:
        return np.full(n, -1, dtype=np.int32)
    import hdbscan

    size = min_cluster_size or max(5, n // 60)
    labels = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=min(size, 5)).fit_predict(xy.astype(np.float64))
    return labels.astype(np.int32)
