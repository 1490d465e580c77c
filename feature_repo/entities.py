"""The entities features are keyed by: a user and a pin, each by its integer id from the dataset contracts."""

from feast import Entity, ValueType

# The value type is declared so that `feast apply` never has to open a parquet file to infer the join key's type.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A Homefeed user")
pin = Entity(name="pin", join_keys=["pin_id"], value_type=ValueType.INT64, description="A pin (an image with a link)")
