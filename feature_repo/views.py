"""Feature views: the user profile, the pin's features and the realtime user-action sequence.

ttl is 0 (never expires) on purpose: Feast's online read compares a row's event time with the wall clock, and the
rows here are stamped with the dataset's cut-off, which for a simulated or replayed world lies in the past. Freshness
is the pipeline's job (rebuild the profile, push new sequences), not the store's.
"""

from datetime import timedelta

from entities import pin, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String
from sources import pin_features_source, user_action_sequence_push, user_profile_source

NEVER_EXPIRES = timedelta(0)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name="segment", dtype=String, description="core, casual, new or resurrected"),
        Field(name="declared_interests", dtype=Array(Int64), description="interest ids chosen at sign-up"),
        Field(name="n_impressions", dtype=Int64, description="pins shown to the user before the cut-off"),
        Field(name="n_clicks", dtype=Int64),
        Field(name="n_repins", dtype=Int64),
        Field(name="n_hides", dtype=Int64),
        Field(name="repin_rate", dtype=Float32, description="n_repins / n_impressions, 0 without impressions"),
    ],
    source=user_profile_source,
    online=True,
)

pin_features = FeatureView(
    name="pin_features",
    entities=[pin],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name="interest_id", dtype=Int64),
        Field(name="image_signature_coarse", dtype=Int64, description="near-duplicate images share it"),
        Field(name="created_ts", dtype=Int64, description="UTC epoch ms"),
        Field(name="quality", dtype=Float32, description="in [0, 1]; empty when unknown"),
        Field(name="embedding", dtype=Array(Float32), description="content embedding; empty when unknown"),
        Field(name="n_impressions", dtype=Int64, description="times shown before the cut-off"),
        Field(name="n_repins", dtype=Int64),
        Field(
            name="engagement_score",
            dtype=Float32,
            description="clicks and repins before the cut-off, each weighted 0.5 ** (age / half-life)",
        ),
        Field(name="decayed_clicks", dtype=Float32, description="clicks, each weighted 0.5 ** (age / half-life)"),
        Field(name="decayed_repins", dtype=Float32, description="repins, weighted likewise"),
        Field(name="decayed_hides", dtype=Float32, description="hides, weighted likewise (negative feedback)"),
    ],
    source=pin_features_source,
    online=True,
)

user_action_sequence = FeatureView(
    name="user_action_sequence",
    entities=[user],
    ttl=NEVER_EXPIRES,
    schema=[
        Field(name="seq_pin_ids", dtype=Array(Int64), description="pins acted on, newest first"),
        Field(name="seq_actions", dtype=Array(Int64), description="index into contracts.ACTIONS"),
        Field(name="seq_ts", dtype=Array(Int64), description="UTC epoch ms of each action"),
        Field(name="seq_len", dtype=Int64),
    ],
    source=user_action_sequence_push,
    online=True,
)
