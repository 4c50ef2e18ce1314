"""Model and training configurations, and the named size profiles ("tiny", "cpu", "gpu").

Everything is a frozen dataclass of plain values so a profile round-trips through JSON
(`Profile.to_dict` / `Profile.from_dict`) and can be stored beside a checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

COMPUTE_DTYPES = ("float32", "bfloat16")
# Bump when the parameter layout of the models changes: checkpoints of another architecture
# version are discarded instead of resumed (and refused for scoring with a clear message).
ARCHITECTURE_VERSION = 3


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of both models (they share embeddings, so they share one config)."""

    emb_dim: int = 64
    num_layers: int = 2
    num_q_heads: int = 4
    num_kv_heads: int = 2
    key_size: int = 16
    widening_factor: float = 2.0
    attn_logit_cap: float = 30.0
    rope_max_wavelength: float = 10_000.0
    # Hashed visitor ids as an input: off by default. Most Retail Rocket visitors are seen once (a
    # session each in the real sessions slice), so a hashed id row is shared by many strangers and
    # only adds noise; the user token is then a learned constant.
    use_customer_id: bool = False
    # Hashed item ids as an input of item / step tokens. The ranker turns them off: on a few tens
    # of thousands of validation cases it memorises item identity (its selection metric falls
    # after a few hundred steps) and learns nothing the candidate features do not already carry.
    use_item_ids: bool = True
    customer_hash_rows: int = 10_000
    item_hash_rows: int = 50_000
    category_hash_rows: int = 5_000
    num_hashes: int = 2
    history_len: int = 32  # H: ranking history length; also the position anchor of the newest step
    num_candidates: int = 16  # C: ranking candidates per example
    retrieval_dim: int = 64
    compute_dtype: str = "float32"  # matmul dtype; params, logits and losses stay float32

    def __post_init__(self) -> None:
        if self.num_kv_heads < 1 or self.num_q_heads % self.num_kv_heads:
            raise ValueError(f"num_q_heads={self.num_q_heads} must be a positive multiple of "
                             f"num_kv_heads={self.num_kv_heads} (grouped-query attention)")
        if self.key_size % 2:
            raise ValueError(f"key_size={self.key_size} must be even (rotary embeddings)")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype={self.compute_dtype!r} not in {COMPUTE_DTYPES}")
        if self.num_hashes < 1:
            raise ValueError("num_hashes must be >= 1")
        for rows in (self.customer_hash_rows, self.item_hash_rows, self.category_hash_rows):
            if rows < 2:
                raise ValueError("hash tables need >= 2 rows (row 0 is padding)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one model (retrieval or ranking) in one profile."""

    batch_size: int = 128
    steps: int = 400
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    eval_every: int = 100
    num_negatives: int = 512  # retrieval: popularity-sampled negatives per batch
    # retrieval: at most this many target positions per batch are trained (and serve as in-batch
    # negatives), the newest of every row first; None = all B*L positions. Targets sit on the last
    # <= M window positions, so batch_size * M keeps them all at a fraction of the B*L cost.
    max_targets: int | None = None
    # retrieval: rows are bucketed by length and each batch holds about this many steps
    # (batch_size rows of the bucket's width when None). Session data is mostly short rows:
    # fixed [B, H+M] batches would be >80% padding.
    tokens_per_batch: int | None = None
    temperature_init: float = 0.05  # retrieval: initial softmax temperature (learned)
    action_weights: tuple[float, float, float] = (10.0, 3.0, 1.0)  # ranking: transaction, addtocart, view
    # ranking: candidate slots per training case (the next event's item + a uniform sample of the
    # rest of the candidates serving generates; isolation makes the slot count irrelevant to a score)
    train_candidates: int = 64
    max_cases: int = 200_000  # ranking: at most this many validation-period cases train the ranker
    patience: int | None = None  # stop after this many evaluations without improvement (None: never)
    max_seconds: float | None = None  # stop at the first evaluation after this much training time
    seed: int = 0

    def __post_init__(self) -> None:
        # JSON gives lists back; keep the field hashable and typed.
        object.__setattr__(self, "action_weights", tuple(float(w) for w in self.action_weights))
        if len(self.action_weights) != 3:
            raise ValueError("action_weights needs 3 weights (transaction, addtocart, view)")


@dataclass(frozen=True)
class Profile:
    """A named size: the retrieval model's config (`model`), the ranker's (`ranking_model`,
    default the same), and the training settings of each model."""

    model: ModelConfig
    retrieval: TrainConfig
    ranking: TrainConfig
    ranking_model: ModelConfig | None = None

    @property
    def ranker(self) -> ModelConfig:
        """The ranking model's architecture."""
        return self.ranking_model or self.model

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in ("model", "retrieval", "ranking")}
        out["ranking_model"] = dataclasses.asdict(self.ranking_model) if self.ranking_model else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profile":
        """Inverse of `to_dict`; unknown keys raise (a checkpoint from another code version)."""
        ranking_model = data.get("ranking_model")
        return cls(model=ModelConfig(**data["model"]), retrieval=TrainConfig(**data["retrieval"]),
                   ranking=TrainConfig(**data["ranking"]),
                   ranking_model=ModelConfig(**ranking_model) if ranking_model else None)


PROFILES: dict[str, Profile] = {
    # Unit tests: compiles and runs in a second or two.
    "tiny": Profile(
        model=ModelConfig(emb_dim=16, num_layers=1, num_q_heads=2, num_kv_heads=1, key_size=8,
                          widening_factor=2.0, customer_hash_rows=1_000, item_hash_rows=2_000,
                          category_hash_rows=500, history_len=16, num_candidates=8, retrieval_dim=16),
        retrieval=TrainConfig(batch_size=16, steps=40, learning_rate=3e-3, warmup_steps=5, eval_every=20,
                              num_negatives=64, max_targets=256),
        ranking=TrainConfig(batch_size=16, steps=40, learning_rate=3e-3, warmup_steps=5, eval_every=20),
    ),
    # Default on this 2-core machine (measured on the real Retail Rocket sessions: see README).
    # One wide layer learns item transitions faster than two narrow ones; small length-bucketed
    # batches (512 steps) and many updates beat big batches at equal time.
    "cpu": Profile(
        model=ModelConfig(emb_dim=128, num_layers=1, num_q_heads=4, num_kv_heads=2, key_size=32,
                          widening_factor=2.0, history_len=32, num_candidates=16, retrieval_dim=128),
        # Retrieval is one candidate source of four: 2,500 steps reach 97% of 4,000 steps'
        # validation Recall@100 on the real sessions (0.565 vs 0.582) in 60% of the time, and the
        # serving refit trains as long again; the ranker is within 0.004 of its best at 250 steps.
        retrieval=TrainConfig(batch_size=128, steps=2_500, learning_rate=1e-2, warmup_steps=100,
                              eval_every=500, num_negatives=2_048, max_targets=1_024, tokens_per_batch=512,
                              temperature_init=0.1, patience=2, max_seconds=170),
        ranking=TrainConfig(batch_size=128, steps=500, learning_rate=3e-3, warmup_steps=50, eval_every=250,
                            patience=2, max_seconds=150, train_candidates=32, max_cases=100_000),
        # The ranker scores ~200 candidates per customer at serving: a narrow one (measured as good
        # as a 128-wide one with frozen retrieval tables on the real sessions, 3x cheaper).
        ranking_model=ModelConfig(emb_dim=64, num_layers=1, num_q_heads=4, num_kv_heads=2, key_size=16,
                                  widening_factor=2.0, history_len=32, num_candidates=16, retrieval_dim=64,
                                  use_item_ids=False),
    ),
    # The plan's sizes for an accelerator.
    "gpu": Profile(
        model=ModelConfig(emb_dim=128, num_layers=4, num_q_heads=4, num_kv_heads=2, key_size=32,
                          widening_factor=2.0, history_len=64, num_candidates=16, retrieval_dim=128,
                          compute_dtype="bfloat16"),
        retrieval=TrainConfig(batch_size=256, steps=20_000, learning_rate=1e-3, warmup_steps=1_000,
                              eval_every=1_000, num_negatives=4_096, max_targets=4_096),
        ranking=TrainConfig(batch_size=128, steps=10_000, learning_rate=5e-4, warmup_steps=500,
                            eval_every=1_000),
    ),
}
