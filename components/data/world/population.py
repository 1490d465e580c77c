"""Interests, pins and users of the synthetic world: their canonical tables and their latent state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from components.data.contracts import SEGMENTS
from components.data.world.config import DAY_MS, WorldConfig

# Names for the first interests, so a homefeed printed in the demo reads like one; more interests get numbers.
INTEREST_NAMES = (
    "home decor", "recipes", "womens fashion", "diy crafts", "travel", "hair", "wedding", "fitness",
    "art", "gardening", "quotes", "tattoos", "photography", "mens fashion", "kids", "cars",
    "architecture", "makeup", "animals", "design", "nails", "drinks", "humor", "science",
    "education", "technology", "film", "music", "sports", "history", "outdoors", "illustration",
)  # fmt: skip


@dataclass
class Pins:
    table: pa.Table
    latent: np.ndarray  # [P, d]
    interest: np.ndarray  # [P]
    quality: np.ndarray  # [P]
    created_ms: np.ndarray  # [P]
    popularity: np.ndarray  # [P] sampling weight of the "popular" logging source


@dataclass
class Users:
    table: pa.Table
    taste: np.ndarray  # [U, K]
    late_taste: np.ndarray  # [U, K]
    segment: np.ndarray  # [U] index into SEGMENTS
    active_from_ms: np.ndarray  # [U]
    declared: list[list[int]]
    intent_phase_ms: np.ndarray  # [U]


def make_interests(cfg: WorldConfig, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Returns (table, centroids [K, d], popularity [K]). Interest popularity is Zipf-like so a long tail exists."""
    k = cfg.n_interests
    names = [INTEREST_NAMES[i] if i < len(INTEREST_NAMES) else f"interest {i}" for i in range(k)]
    centroids = _unit(rng.standard_normal((k, cfg.embedding_dim)).astype(np.float32))
    popularity = 1.0 / np.arange(1, k + 1) ** 0.8
    popularity = popularity[rng.permutation(k)]
    popularity /= popularity.sum()
    table = pa.table({"interest_id": pa.array(np.arange(k), pa.int64()), "name": pa.array(names, pa.string())})
    return table, centroids, popularity


def make_pins(cfg: WorldConfig, rng: np.random.Generator, centroids: np.ndarray, interest_pop: np.ndarray) -> Pins:
    """Pins grouped into images: near-duplicates share a coarse signature; exact re-pins share a fine one too."""
    p, d = cfg.n_pins, cfg.embedding_dim
    coarse_of_pin, fine_of_pin = _duplicate_structure(p, cfg.duplicate_share, rng)
    n_coarse, n_fine = coarse_of_pin.max() + 1, fine_of_pin.max() + 1

    # One interest, base latent vector and quality per image (coarse group); near-duplicates differ slightly.
    coarse_interest = rng.choice(cfg.n_interests, size=n_coarse, p=interest_pop)
    noise = rng.standard_normal((n_coarse, d)).astype(np.float32) * (cfg.topic_noise / np.sqrt(d))
    coarse_base = _unit(centroids[coarse_interest] + noise)
    coarse_quality = rng.beta(2.0, 2.0, size=n_coarse).astype(np.float32)
    fine_coarse = np.zeros(n_fine, dtype=np.int64)
    fine_coarse[fine_of_pin] = coarse_of_pin
    fine_latent = _unit(
        coarse_base[fine_coarse] + 0.05 * rng.standard_normal((n_fine, d)).astype(np.float32) / np.sqrt(d)
    )
    fine_embedding = _unit(
        fine_latent + rng.standard_normal((n_fine, d)).astype(np.float32) * (cfg.embedding_noise / np.sqrt(d))
    )
    fine_sig = rng.integers(1, 2**62, size=n_fine, dtype=np.int64)
    coarse_sig = rng.integers(1, 2**62, size=n_coarse, dtype=np.int64)

    interest = coarse_interest[coarse_of_pin]
    quality = coarse_quality[coarse_of_pin]
    created = _created_ms(cfg, rng, p)
    popularity = (rng.pareto(cfg.pin_popularity_exponent, size=p) + 1.0) * (0.5 + quality)
    interest, created, popularity = _apply_new_pin_wave(cfg, rng, interest, created, popularity, interest_pop)

    table = pa.table(
        {
            "pin_id": pa.array(np.arange(p), pa.int64()),
            "interest_id": pa.array(interest, pa.int64()),
            "created_ts": pa.array(created, pa.int64()),
            "image_signature_fine": pa.array(fine_sig[fine_of_pin], pa.int64()),
            "image_signature_coarse": pa.array(coarse_sig[coarse_of_pin], pa.int64()),
            "quality": pa.array(quality.astype(np.float64), pa.float64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(fine_embedding[fine_of_pin].ravel()), d),
        }
    )
    latent = fine_latent[fine_of_pin]
    if cfg.new_pin_wave is not None:  # wave pins belong to their new interests: move their latent there
        wave = created >= cfg.start_ms + int(cfg.new_pin_wave.day * DAY_MS)
        latent[wave] = _unit(centroids[interest[wave]] + noise[coarse_of_pin[wave]])
    return Pins(table, latent, interest, quality, created, popularity)


def _duplicate_structure(p: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Assign every pin a coarse group and a fine group (fine groups nest inside coarse ones)."""
    order = rng.permutation(p)
    n_dup = int(p * share)
    # duplicate pins form coarse clusters of 2-6 pins; the rest are singletons
    sizes = []
    left = n_dup
    while left >= 2:
        s = int(min(left, rng.integers(2, 7)))
        sizes.append(s)
        left -= s
    sizes = np.array(sizes, dtype=np.int64)
    n_single = p - int(sizes.sum())
    coarse = np.empty(p, dtype=np.int64)
    fine = np.empty(p, dtype=np.int64)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    pos_in_cluster = np.arange(len(cluster)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    # inside a cluster of size m: 1..m distinct images (fine signatures), pins spread over them round-robin
    n_fine_in = 1 + rng.binomial(sizes - 1, 0.5)
    fine_offset = np.cumsum(n_fine_in) - n_fine_in
    fine_local = pos_in_cluster % n_fine_in[cluster]
    dup_pins = order[: len(cluster)]
    coarse[dup_pins] = cluster
    fine[dup_pins] = fine_offset[cluster] + fine_local
    single_pins = order[len(cluster) :]
    coarse[single_pins] = len(sizes) + np.arange(n_single)
    fine[single_pins] = int(n_fine_in.sum()) + np.arange(n_single)
    return coarse, fine


def _created_ms(cfg: WorldConfig, rng: np.random.Generator, p: int) -> np.ndarray:
    in_span = rng.random(p) < cfg.pins_created_in_span
    before = cfg.start_ms - (rng.exponential(cfg.pin_age_mean_days, size=p) * DAY_MS).astype(np.int64) - 1
    during = cfg.start_ms + (rng.random(p) * cfg.span_days * DAY_MS).astype(np.int64)
    return np.where(in_span, during, before)


def _apply_new_pin_wave(cfg, rng, interest, created, popularity, interest_pop):
    wave = cfg.new_pin_wave
    if wave is None:
        return interest, created, popularity
    n = min(wave.n_pins, len(interest) // 2)
    chosen = rng.choice(len(interest), size=n, replace=False)
    targets = rng.choice(cfg.n_interests, size=wave.n_interests, replace=False)
    interest = interest.copy()
    interest[chosen] = rng.choice(targets, size=n)
    created = created.copy()
    start = cfg.start_ms + int(wave.day * DAY_MS)
    created[chosen] = start + (rng.random(n) * wave.duration_days * DAY_MS).astype(np.int64)
    popularity = popularity.copy()
    popularity[chosen] *= wave.popularity_boost
    return interest, created, popularity


def make_users(cfg: WorldConfig, rng: np.random.Generator, interest_pop: np.ndarray) -> Users:
    u, k = cfg.n_users, cfg.n_interests
    shares = np.array([cfg.segment_shares[s] for s in SEGMENTS])
    segment = rng.choice(len(SEGMENTS), size=u, p=shares / shares.sum())
    alpha = cfg.interest_concentration * k * interest_pop
    taste = rng.dirichlet(alpha, size=u).astype(np.float32)
    late_taste = rng.dirichlet(alpha, size=u).astype(np.float32)

    seg_name = np.array(SEGMENTS)[segment]
    span_ms = cfg.span_days * DAY_MS
    signup = cfg.start_ms - (rng.uniform(30, 700, size=u) * DAY_MS).astype(np.int64)
    is_new = seg_name == "new"
    # new users sign up during the first 90% of the span so that each has some days to be active
    signup[is_new] = cfg.start_ms + (rng.random(is_new.sum()) * 0.9 * span_ms).astype(np.int64)
    active_from = np.full(u, cfg.start_ms, dtype=np.int64)
    active_from[is_new] = signup[is_new]
    is_res = seg_name == "resurrected"
    active_from[is_res] = cfg.start_ms + (rng.random(is_res.sum()) * 0.75 * span_ms).astype(np.int64)

    declared = _declared_interests(taste, rng)
    table = pa.table(
        {
            "user_id": pa.array(np.arange(u), pa.int64()),
            "segment": pa.array(seg_name.tolist(), pa.string()),
            "signup_ts": pa.array(signup, pa.int64()),
            "declared_interests": pa.array(declared, pa.list_(pa.int64())),
        }
    )
    phase = rng.integers(0, int(cfg.intent_minutes * 60_000), size=u, dtype=np.int64)
    return Users(table, taste, late_taste, segment, active_from, declared, phase)


def _declared_interests(taste: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """What users told us at signup: their 1-3 strongest interests, and now and then one they do not care for."""
    u, k = taste.shape
    top = np.argsort(-taste, axis=1)[:, :3]
    n_top = rng.integers(1, 4, size=u)
    noise = rng.random(u) < 0.2
    noisy_pick = rng.integers(0, k, size=u)
    out = []
    for i in range(u):
        chosen = top[i, : n_top[i]].tolist()
        if noise[i] and noisy_pick[i] not in chosen:
            chosen.append(int(noisy_pick[i]))
        out.append(sorted(int(c) for c in chosen))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
