"""Feature services: the features each model reads, so a model asks for its service rather than a feature list.

`ranking` joins user and pin views that both hold n_impressions and n_repins, so it must be read with
full_feature_names=True (names become `<view>__<feature>`); Feast refuses the ambiguous short names.
"""

from feast import FeatureService
from views import pin_features, user_action_sequence, user_profile

retrieval = FeatureService(
    name="retrieval",
    features=[user_profile, user_action_sequence],
    description="The user tower's inputs: profile and realtime action sequence",
)

ranking = FeatureService(
    name="ranking",
    features=[user_profile, user_action_sequence, pin_features],
    description="The ranking model's inputs: the user's profile and sequence, and the candidate pin's features",
)
